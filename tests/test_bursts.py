# SPDX-License-Identifier: GPL-2.0-only
"""Bursts: FragCache.alloc_many/free_many (one native call each), recv_burst (one recvmmsg
into fresh fragments, lengths and sender addresses) and send_burst (one sendmmsg), and
every misuse: a wrong socket type, a closed socket, an empty non-blocking socket, a
timeout, fragments of another cache or arena, freed fragments; nothing leaks."""
from __future__ import annotations

import errno
import os
import socket
import threading
import time

import pytest

import pyfrag
from pyfrag import burst
from pyfrag import cache as cache_module


def outstanding() -> int:
    s = pyfrag.stats()
    return s.allocs - s.frees


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    yield a, b
    a.close()
    b.close()


# ---- alloc_many / free_many ----------------------------------------------------------

def test_alloc_many_and_free_many(cache):
    before = outstanding()
    frags = cache.alloc_many(40, 1500)
    assert len(frags) == 40 and all(f.size == 1500 for f in frags)
    addresses = sorted(f.address for f in frags)
    assert all(b - a >= 1500 for a, b in zip(addresses, addresses[1:]))  # no overlap
    for i, frag in enumerate(frags):
        frag[0], frag[1499] = i, 255 - i
    assert [(f[0], f[1499]) for f in frags] == [(i, 255 - i) for i in range(40)]
    assert outstanding() == before + 40
    cache.free_many(frags)
    assert outstanding() == before and all(f.freed for f in frags)
    assert cache.alloc_many(0, 10) == []
    cache.free_many([])


def test_free_many_refuses_before_freeing_any(cache):
    frags = cache.alloc_many(3, 64)
    with pyfrag.FragCache() as other:
        stranger = other.alloc(64)
        with pytest.raises(ValueError, match="this cache"):
            cache.free_many(frags + [stranger])
        stranger.free()
    with pytest.raises(ValueError, match="this cache"):
        cache.free_many([b"not a fragment"])
    frags[1].free()
    with pytest.raises(pyfrag.FragError, match="freed"):
        cache.free_many(frags)
    assert not frags[0].freed and not frags[2].freed
    with pytest.raises(pyfrag.FragError):
        cache.free_many([frags[0], frags[0]])  # the same fragment twice
    assert not frags[0].freed
    view = frags[0].view()
    held = view[1:]  # holds the bytes: free refuses, nothing is freed
    with pytest.raises(pyfrag.FragError, match="still alive"):
        cache.free_many([frags[2], frags[0]])
    assert not frags[2].freed
    del held
    cache.free_many([frags[0], frags[2]])
    with pytest.raises(ValueError, match="released"):
        view[0]


def test_free_many_past_its_scratch_and_reentered(cache):
    before = outstanding()
    frags = cache.alloc_many(cache_module.SCRATCH + 50, 64)  # more than the scratch holds
    cache.free_many(frags[:cache_module.SCRATCH + 10])
    in_use = cache_module.take_scratch(cache, 1)  # what a call re-entered under the lock sees
    cache.free_many(frags[cache_module.SCRATCH + 10:])  # makes its own arrays
    cache_module.give_scratch(cache, in_use)
    assert outstanding() == before and all(f.freed for f in frags)
    assert cache._scratch is in_use  # kept for the next call


def test_alloc_many_bad_arguments(cache):
    with pytest.raises(ValueError):
        cache.alloc_many(-1, 10)
    with pytest.raises(ValueError):
        cache.alloc_many(2, 0)
    with pytest.raises(ValueError):
        cache.alloc_many(2, 40000)
    with pytest.raises(TypeError):
        cache.alloc_many(2.0, 10)


def test_free_many_from_another_thread_and_after_close(lib):
    cache = pyfrag.FragCache()
    frags = cache.alloc_many(8, 100)
    before = outstanding()
    worker = threading.Thread(target=cache.free_many, args=(frags[:4],))
    worker.start()
    worker.join()
    cache.close()
    cache.free_many(frags[4:])  # the cache is gone: pf_free, as Fragment.free does
    assert outstanding() == before - 8
    with pytest.raises(pyfrag.FragError, match="closed"):
        cache.alloc_many(1, 10)


# ---- recv_burst ------------------------------------------------------------------------

def test_recv_burst_lengths_contents_and_order(cache, pair):
    a, b = pair
    before = outstanding()
    for i in range(5):
        a.send(bytes([i]) * (100 + i))
    frags = cache.recv_burst(b, n=32, size=2048)
    assert [len(f) for f in frags] == [100 + i for i in range(5)]
    assert [bytes(f) for f in frags] == [bytes([i]) * (100 + i) for i in range(5)]
    assert outstanding() == before + 5  # the 27 fragments nothing filled were freed
    cache.free_many(frags)
    assert outstanding() == before


def test_recv_burst_takes_at_most_n_and_truncates(cache, pair):
    a, b = pair
    for i in range(6):
        a.send(bytes([i]) * 300)
    first = cache.recv_burst(b, n=4, size=200)
    assert [bytes(f) for f in first] == [bytes([i]) * 200 for i in range(4)]
    rest = cache.recv_burst(b, n=32, size=2048)
    assert [bytes(f) for f in rest] == [bytes([i]) * 300 for i in (4, 5)]
    cache.free_many(first + rest)


def test_recv_burst_addresses_udp(cache):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        tx.bind(("127.0.0.1", 0))
        tx.sendto(b"hello", rx.getsockname())
        tx.sendto(b"world!", rx.getsockname())
        rx.settimeout(5)
        got = []
        while len(got) < 2:
            got += cache.recv_burst(rx, n=8, size=64, addresses=True)
        assert [(bytes(f), addr) for f, addr in got] == [(b"hello", tx.getsockname()),
                                                           (b"world!", tx.getsockname())]
        cache.free_many([f for f, _ in got])
    finally:
        rx.close()
        tx.close()


def test_recv_burst_empty_nonblocking_timeout_and_blocking(cache, pair):
    a, b = pair
    before = outstanding()
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        cache.recv_burst(b)
    b.settimeout(0.05)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        cache.recv_burst(b)
    assert time.monotonic() - start >= 0.04
    b.settimeout(None)  # blocking: waits outside the lock until a datagram comes
    sender = threading.Timer(0.05, a.send, args=(b"late",))
    sender.start()
    frags = cache.recv_burst(b)
    sender.join()
    assert [bytes(f) for f in frags] == [b"late"]
    cache.free_many(frags)
    assert outstanding() == before  # no failed attempt left a fragment behind


def test_recv_burst_misuse(cache, pair):
    a, b = pair
    before = outstanding()
    stream_a, stream_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with stream_a, stream_b:
        with pytest.raises(ValueError, match="datagram"):
            cache.recv_burst(stream_b)
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.close()
    with pytest.raises(OSError) as info:
        cache.recv_burst(closed)
    assert info.value.errno == errno.EBADF
    with pytest.raises(TypeError):
        cache.recv_burst("not a socket")
    with open("/dev/null", "rb") as f:  # fileno() of something that is not a socket
        with pytest.raises(OSError) as info:
            cache.recv_burst(f)
        assert info.value.errno == errno.ENOTSOCK
    for bad in (0, 257):
        with pytest.raises(ValueError):
            cache.recv_burst(b, n=bad)
    with pytest.raises(ValueError):
        cache.recv_burst(b, size=0)
    assert outstanding() == before


def test_recv_burst_on_another_thread_or_closed_cache(lib, pair):
    a, b = pair
    cache = pyfrag.FragCache()
    a.send(b"x")
    errors = []

    def other():
        try:
            cache.recv_burst(b)
        except pyfrag.FragError as exc:
            errors.append(exc)
    worker = threading.Thread(target=other)
    worker.start()
    worker.join()
    assert errors and "belongs to thread" in str(errors[0])
    cache.close()
    with pytest.raises(pyfrag.FragError, match="closed"):
        cache.recv_burst(b)


# ---- send_burst -----------------------------------------------------------------------

def test_send_burst_connected_and_to_an_address(cache, pair):
    a, b = pair
    frags = cache.alloc_many(3, 10)
    for i, frag in enumerate(frags):
        frag[:] = bytes([65 + i]) * 10
    assert cache.send_burst(a, frags) == 3
    assert [b.recv(100) for _ in range(3)] == [b"A" * 10, b"B" * 10, b"C" * 10]
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind(("127.0.0.1", 0))
        assert pyfrag.burst.send_burst(tx, frags[:2], rx.getsockname()) == 2
        rx.settimeout(5)
        assert [rx.recv(100) for _ in range(2)] == [b"A" * 10, b"B" * 10]
    cache.free_many(frags)


def test_send_burst_many_and_mixed_owners(cache, pair, tmp_path):
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    frags = cache.alloc_many(300, 8)  # more than one sendmmsg
    for i, frag in enumerate(frags):
        frag[:] = i.to_bytes(8, "little")
    name = "burst-%d" % id(frags)
    with pyfrag.SharedArena(name, create=True, size=4 << 20) as arena:
        shared = arena.alloc(8)
        shared[:] = b"shared!!"
        got = []
        receiver = threading.Thread(target=lambda: got.extend(b.recv(64) for _ in range(301)))
        receiver.start()
        assert burst.send_burst(a, frags + [shared]) == 301
        receiver.join(30)
        assert got[:300] == [i.to_bytes(8, "little") for i in range(300)]
        assert got[300] == b"shared!!"
        shared.free()
    cache.free_many(frags)


def test_send_burst_misuse(cache, pair):
    a, b = pair
    frag = cache.alloc(10)
    with pytest.raises(TypeError):
        burst.send_burst(a, [frag, b"bytes"])
    frag.free()
    with pytest.raises(pyfrag.FragError, match="freed"):
        burst.send_burst(a, [frag])
    live = cache.alloc(10)
    a.close()
    with pytest.raises(OSError) as info:
        burst.send_burst(a, [live])
    assert info.value.errno == errno.EBADF
    stream_a, stream_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with stream_a, stream_b:
        with pytest.raises(ValueError, match="datagram"):
            burst.send_burst(stream_a, [live])
    live.free()


def test_send_burst_nonblocking_full(cache):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        a.setblocking(False)
        frag = cache.alloc(1000)
        sent = 0
        with pytest.raises(BlockingIOError):
            for _ in range(10000):  # until the peer's queue is full
                sent += burst.send_burst(a, [frag] * 16)
        assert sent > 0
        frag.free()


def test_shared_arena_recv_burst_gives_shared_fragments(pair):
    a, b = pair
    name = "burst-shared-%d" % id(pair)
    with pyfrag.SharedArena(name, create=True, size=4 << 20) as arena:
        start = arena.stats()
        for i in range(3):
            a.send(bytes([i]) * 50)
        frags = arena.recv_burst(b, n=8, size=100)
        assert [type(f) for f in frags] == [pyfrag.SharedFragment] * 3
        assert [bytes(f) for f in frags] == [bytes([i]) * 50 for i in range(3)]
        assert arena.stats().allocs - start.allocs == 8  # one bulk allocation...
        assert arena.stats().frees - start.frees == 5  # ...the unfilled freed at once
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            arena.recv_burst(b)
        assert arena.send_burst(a, frags) == 3
        assert [b.recv(100) for _ in range(3)] == [bytes([i]) * 50 for i in range(3)]
        arena.free_many(frags)
        end = arena.stats()
        assert end.allocs - start.allocs == end.frees - start.frees


def test_an_interrupt_while_wrapping_a_burst_leaks_nothing(cache, pair, monkeypatch):
    """An exception (a KeyboardInterrupt from a signal handler) after the native call but
    before the list reaches the caller frees what the call received."""
    a, b = pair
    before = outstanding()
    real = pyfrag.cache.make_fragments

    def interrupting(kind, owner, addresses, sizes, room=0):
        """Makes two fragments, then is interrupted: the two are dropped with the rest."""
        addresses = list(addresses)[:2]
        real(kind, owner, addresses, sizes if type(sizes) is int else list(sizes)[:2], room)
        raise KeyboardInterrupt
    for i in range(4):
        a.send(b"x")
    monkeypatch.setattr("pyfrag.burst.make_fragments", interrupting)
    with pytest.raises(KeyboardInterrupt):
        cache.recv_burst(b, n=8)
    monkeypatch.setattr("pyfrag.cache.make_fragments", interrupting)
    with pytest.raises(KeyboardInterrupt):
        cache.alloc_many(5, 100)
    assert outstanding() == before
    # from the spares: an interrupt puts the ones taken back
    frags = [cache.alloc(100) for _ in range(5)]
    for frag in frags:
        frag.free()
    spares = cache.spares
    with pytest.raises(KeyboardInterrupt):
        cache.alloc_many(5, 100)
    assert cache.spares == spares


def test_an_interrupt_while_wrapping_a_shared_burst_leaks_nothing(monkeypatch):
    """The same for an arena's alloc_many and a ring's get_many: what C handed over is freed."""
    real = pyfrag.cache.make_fragments

    def interrupting(kind, owner, addresses, sizes, room=0):
        real(kind, owner, list(addresses)[:1], sizes if type(sizes) is int else list(sizes)[:1])
        raise KeyboardInterrupt
    with pyfrag.SharedArena("interrupt-%d" % os.getpid(), create=True, size=4 << 20,
                            backing="4k") as arena:
        ring = pyfrag.SharedRing(arena, "r", create=True, capacity=8)
        ring.put_many(arena.alloc_many(3, 100))
        start = arena.stats()
        monkeypatch.setattr("pyfrag.cache.make_fragments", interrupting)
        with pytest.raises(KeyboardInterrupt):
            arena.alloc_many(4, 100)
        with pytest.raises(KeyboardInterrupt):
            ring.get_many(8)
        monkeypatch.undo()
        end = arena.stats()
        assert (end.allocs - start.allocs, end.frees - start.frees) == (4, 7)
        assert len(ring) == 0
