# SPDX-License-Identifier: GPL-2.0-only
"""A FragCache's spares: free() keeps fragments for the next alloc() of their size.

What is checked: reuse (newest first, no native call: page_frag's counters do not
move), the bounds (SPARE_COUNT and SPARE_BYTES per size, SPARE_SIZES sizes, the
oldest evicted), that close(), drain() and a collected cache give every spare back,
that frees from other threads land in the owner's spares, that a spare is never
reachable through the Fragment that gave it up, recycle=False, the bulk calls, and
(hypothesis, threads) that no address is ever live twice.
"""
from __future__ import annotations

import gc
import socket
import threading

import pytest
from hypothesis import given, settings, strategies as st

import pyfrag
from pyfrag.cache import SPARE_BYTES, SPARE_COUNT, SPARE_SIZES


def outstanding() -> int:
    """Fragments allocated in page_frag and not freed (spares included)."""
    s = pyfrag.stats()
    return s.allocs - s.frees


def test_a_freed_fragment_is_the_next_alloc_of_its_size(cache):
    first = cache.alloc(1500)
    address = first.address
    first[:3] = b"abc"
    first.free()
    assert cache.spares == 1
    before = pyfrag.stats()
    again = cache.alloc(1500)
    after = pyfrag.stats()
    assert again is not first and again.address == address and len(again) == 1500
    assert (after.allocs, after.frees) == (before.allocs, before.frees)  # no native call
    assert cache.spares == 0
    again[:3] = b"xyz"
    assert bytes(again[:3]) == b"xyz"
    other = cache.alloc(100)  # another size: from page_frag
    assert pyfrag.stats().allocs == after.allocs + 1
    again.free()
    other.free()


def test_spares_are_handed_out_newest_first(cache):
    frags = [cache.alloc(256) for _ in range(4)]
    addresses = [f.address for f in frags]
    for frag in frags:
        frag.free()
    assert [cache.alloc(256).address for _ in range(4)] == addresses[::-1]


def test_the_fragment_that_gave_its_bytes_up_stays_freed(cache):
    old = cache.alloc(64)
    old.free()
    new = cache.alloc(64)
    assert new.address == old.address
    with pytest.raises(pyfrag.FragError, match="freed"):
        old.free()  # refused: it does not free `new`'s bytes
    with pytest.raises(pyfrag.FragError):
        old[0]
    with pytest.raises(pyfrag.FragError):
        old.view()
    new[0] = 7
    assert new[0] == 7 and not new.freed
    new.free()


@pytest.mark.parametrize("size", [64, 1500, 4096, 32768])
def test_each_size_keeps_at_most_its_bound(cache, size):
    bound = max(1, min(SPARE_COUNT, -(-SPARE_BYTES // size)))
    base = outstanding()
    frags = [cache.alloc(size) for _ in range(bound + 5)]
    before = pyfrag.stats().frees
    for frag in frags:
        frag.free()
    assert cache.spares == bound
    assert pyfrag.stats().frees - before == 5  # the rest reached page_frag
    assert outstanding() - base == bound
    cache.drain()
    assert cache.spares == 0 and outstanding() == base


def test_a_new_size_past_the_limit_evicts_the_oldest(cache):
    base = outstanding()
    sizes = [100 + i for i in range(SPARE_SIZES + 1)]
    for size in sizes:
        cache.alloc(size).free()
    assert cache.spares == SPARE_SIZES
    assert outstanding() - base == SPARE_SIZES  # the oldest went back to page_frag
    allocs = pyfrag.stats().allocs
    cache.alloc(sizes[0]).free()  # evicted: page_frag serves it
    assert pyfrag.stats().allocs == allocs + 1
    cache.alloc(sizes[-1]).free()  # kept
    assert pyfrag.stats().allocs == allocs + 1


def test_close_drain_and_collection_give_every_spare_back(lib):
    base = outstanding()
    cache = pyfrag.FragCache()
    for size in (64, 1500, 2048):
        for frag in [cache.alloc(size) for _ in range(3)]:
            frag.free()
    assert cache.spares == 9 and outstanding() == base + 9
    cache.drain()
    assert cache.spares == 0 and outstanding() == base
    cache.alloc(64).free()
    cache.close()
    assert outstanding() == base
    forgotten = pyfrag.FragCache()
    forgotten.alloc(64).free()
    assert outstanding() == base + 1
    del forgotten
    gc.collect()
    assert outstanding() == base


def test_frees_from_another_thread_feed_the_owner(cache):
    frags = [cache.alloc(512) for _ in range(8)]
    addresses = {f.address for f in frags}
    before = pyfrag.stats()
    worker = threading.Thread(target=lambda: [f.free() for f in frags])
    worker.start()
    worker.join()
    assert all(f.freed for f in frags) and cache.spares == 8
    assert pyfrag.stats().frees == before.frees
    assert {cache.alloc(512).address for _ in range(8)} == addresses


def test_a_closed_cache_frees_to_page_frag(lib):
    cache = pyfrag.FragCache()
    frag = cache.alloc(64)
    cache.close()
    frees = pyfrag.stats().frees
    frag.free()
    assert pyfrag.stats().frees == frees + 1 and cache.spares == 0


def test_recycle_false_keeps_nothing(lib):
    with pyfrag.FragCache(recycle=False) as cache:
        assert cache.recycle is False
        frees = pyfrag.stats().frees
        cache.alloc(64).free()
        assert cache.spares == 0 and pyfrag.stats().frees == frees + 1
    with pyfrag.FragCache() as cache:
        assert cache.recycle is True
    for bad in (0, 1, "yes", None):
        with pytest.raises(TypeError, match="recycle"):
            pyfrag.FragCache(recycle=bad)


def test_a_fragment_in_use_is_not_kept(cache):
    frag = cache.alloc(64)
    view = frag.view()
    held = view[0:4]  # something derived from the view: free() must refuse
    with pytest.raises(pyfrag.FragError, match="still alive"):
        frag.free()
    assert cache.spares == 0 and not frag.freed
    del held
    view.release()
    frag.free()
    assert cache.spares == 1


def test_alloc_many_takes_spares_and_free_many_reaches_page_frag(cache):
    frags = [cache.alloc(300) for _ in range(6)]
    for frag in frags:
        frag.free()
    allocs = pyfrag.stats().allocs
    many = cache.alloc_many(4, 300)  # from the spares: no native call
    assert pyfrag.stats().allocs == allocs and cache.spares == 2
    assert {f.address for f in many} <= {f.address for f in frags}
    more = cache.alloc_many(4, 300)  # not enough spares: all from page_frag
    assert pyfrag.stats().allocs == allocs + 4 and cache.spares == 2
    frees = pyfrag.stats().frees
    cache.free_many(many + more)
    assert pyfrag.stats().frees == frees + 8


def test_a_received_datagram_is_kept_by_its_room(cache):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        a.send(b"hello")
        (frag,) = cache.recv_burst(b, n=4, size=2048)
        assert len(frag) == 5
        address = frag.address
        frag.free()
        again = cache.alloc(2048)  # kept under the 2048 bytes it was allocated with
        assert again.address == address and len(again) == 2048
        again.free()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from([16, 100, 1500, 2048, 9000, 32768]),
                          st.integers(0, 40)), max_size=120))
def test_no_address_is_ever_live_twice(lib, ops):
    """Random allocs and frees: live fragments never overlap, the spares stay in their
    bounds, and close() leaves page_frag as it found it."""
    base = outstanding()
    cache = pyfrag.FragCache()
    live = []
    try:
        for is_alloc, size, pick in ops:
            if is_alloc or not live:
                frag = cache.alloc(size)
                frag[0] = size & 0xFF
                live.append(frag)
            else:
                live.pop(pick % len(live)).free()
            spans = sorted((f.address, f.address + f.size) for f in live)
            assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))
            assert all(f[0] == f.size & 0xFF for f in live)
            assert cache.spares <= SPARE_SIZES * SPARE_COUNT
    finally:
        for frag in live:
            frag.free()
        cache.close()
    assert outstanding() == base


def test_racing_frees_and_evictions_never_hand_an_address_out_twice(cache):
    """The owner allocates from its spares without the lock while another thread frees
    into them (and evicts sizes): every live address is distinct, and nothing leaks."""
    base = outstanding()
    handoff: list = []
    stop = threading.Event()
    sizes = [64 + 8 * i for i in range(SPARE_SIZES + 3)]

    def freer():
        while not stop.is_set() or handoff:
            try:
                frag = handoff.pop()
            except IndexError:
                continue
            frag.free()
    worker = threading.Thread(target=freer)
    worker.start()
    try:
        live: dict = {}
        for i in range(20000):
            frag = cache.alloc(sizes[i % len(sizes)])
            assert frag.address not in live
            live[frag.address] = frag
            if len(live) > 32:
                address, old = live.popitem()
                handoff.append(old)
            if i % 7 == 0:
                for address in list(live)[:4]:
                    handoff.append(live.pop(address))
        handoff.extend(live.values())
    finally:
        stop.set()
        worker.join()
    cache.drain()
    assert cache.spares == 0 and outstanding() == base
