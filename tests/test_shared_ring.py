# SPDX-License-Identifier: GPL-2.0-only
"""pyfrag.SharedRing: fragments handed between processes through a ring inside a shared
arena, without copy or pickle; a C producer feeding a Python consumer; a peer killed in the
middle of a transfer; and every misuse (bad names and capacities, full and empty, timeouts,
fragments of another arena or freed or in use, a second producer process, use after
close)."""
from __future__ import annotations

import copy
import itertools
import multiprocessing
import os
import pickle
import queue
import signal
import subprocess
import time

import pytest

import pyfrag
from conftest import scons_build

SIZE = 4 << 20
_names = itertools.count()


@pytest.fixture
def name(lib):
    value = "ring%d-%d" % (os.getpid(), next(_names))
    yield value
    try:
        pyfrag.SharedArena.unlink(value)
    except FileNotFoundError:
        pass


@pytest.fixture
def arena(name):
    with pyfrag.SharedArena(name, create=True, size=SIZE, backing="4k") as created:
        yield created


def fork():
    return multiprocessing.get_context("fork")


def test_put_get_hands_the_fragment_itself(arena):
    ring = pyfrag.SharedRing(arena, "r", create=True, capacity=8)
    assert (ring.capacity, len(ring), ring.name) == (8, 0, "r")
    frag = arena.alloc(1500)
    frag[:5] = b"hello"
    offset = frag.offset
    ring.put(frag)
    assert frag.freed and "put in a ring" in repr(frag) and len(ring) == 1
    with pytest.raises(pyfrag.FragError, match="put in a ring"):
        frag[0]
    same = pyfrag.SharedRing(arena, "r")  # found by name
    got = same.get()
    assert (got.offset, got.size, bytes(got[:5])) == (offset, 1500, b"hello")
    got.free()
    assert len(ring) == 0
    stats = arena.stats()
    assert stats.allocs - stats.frees == 1  # the ring's own block


def test_full_empty_timeouts_and_bulk(arena):
    ring = pyfrag.SharedRing(arena, "r", create=True, capacity=4)
    frags = arena.alloc_many(6, 100)
    for i, frag in enumerate(frags):
        frag[0] = i
    with pytest.raises(queue.Empty):
        ring.get_nowait()
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        ring.get(timeout=0.05)
    assert time.monotonic() - start >= 0.04
    assert ring.get_many(8, block=False) == []
    assert ring.put_many(frags, block=False) == 4  # as many as fit; the rest stay ours
    assert [f.freed for f in frags] == [True] * 4 + [False] * 2
    with pytest.raises(queue.Full):
        ring.put_nowait(frags[4])
    with pytest.raises(queue.Full):
        ring.put(frags[4], timeout=0.05)
    assert not frags[4].freed and frags[4][0] == 4
    got = ring.get_many(3)
    assert [f[0] for f in got] == [0, 1, 2]
    assert ring.put_many(frags[4:], block=False) == 2  # wraps around
    got += ring.get_many(8)
    assert [f[0] for f in got] == list(range(6))
    arena.free_many(got)


def test_misuse(arena, name, lib):
    with pytest.raises(ValueError):
        pyfrag.SharedRing(arena, "r", create=True, capacity=3)
    with pytest.raises(ValueError):
        pyfrag.SharedRing(arena, "r", create=True, capacity=4096)
    with pytest.raises(ValueError):
        pyfrag.SharedRing(arena, "bad/name", create=True)
    with pytest.raises(TypeError):
        pyfrag.SharedRing("not an arena", "r")
    with pytest.raises(FileNotFoundError):
        pyfrag.SharedRing(arena, "missing")
    ring = pyfrag.SharedRing(arena, "r", create=True, capacity=4)
    with pytest.raises(FileExistsError):
        pyfrag.SharedRing(arena, "r", create=True)
    for i in range(1, 8):
        pyfrag.SharedRing(arena, "r%d" % i, create=True, capacity=2)
    with pytest.raises(pyfrag.FragError, match="8 rings"):
        pyfrag.SharedRing(arena, "one-too-many", create=True, capacity=2)
    with pytest.raises(TypeError):
        pickle.dumps(ring)
    with pytest.raises(TypeError):
        copy.copy(ring)
    # fragments of another arena, private fragments, freed ones, ones in use
    with pyfrag.SharedArena(name + "x", create=True, size=SIZE, backing="4k") as other:
        stranger = other.alloc(64)
        with pytest.raises(ValueError, match="another|takes SharedFragments"):
            ring.put(stranger)
        assert not stranger.freed
        stranger.free()
    with pyfrag.FragCache() as cache:
        private = cache.alloc(64)
        with pytest.raises(ValueError):
            ring.put(private)
        private.free()
    frag = arena.alloc(64)
    frag.free()
    with pytest.raises(pyfrag.FragError, match="freed"):
        ring.put(frag)
    busy = arena.alloc(64)
    view = busy.view()
    held = view[2:]
    with pytest.raises(pyfrag.FragError, match="still alive"):
        ring.put(busy)
    del held
    assert not busy.freed and len(ring) == 0
    ring.put(busy)
    with pytest.raises(ValueError, match="released"):
        view[0]
    ring.get().free()
    with pytest.raises(ValueError):
        ring.get_many(0)
    with pytest.raises(ValueError, match="timeout"):
        ring.put(arena.alloc(64), timeout=-1)  # checked before the put is tried
    left = arena.alloc(64)
    arena.close()
    with pytest.raises(pyfrag.FragError, match="closed"):
        ring.put_nowait(left)
    with pytest.raises(pyfrag.FragError, match="closed"):
        ring.get_nowait()
    with pytest.raises(pyfrag.FragError, match="closed"):
        ring.get()
    with pytest.raises(pyfrag.FragError, match="closed"):
        len(ring)


def _consume(name, count, results):
    with pyfrag.SharedArena(name) as arena:
        ring = pyfrag.SharedRing(arena, "r")
        seen = []
        while len(seen) < count:
            for frag in ring.get_many(16, timeout=30):
                seen.append(int.from_bytes(bytes(frag[:4]), "little"))
                frag.free()
        results.put(seen)


def test_python_producer_python_consumer_processes(arena, name):
    ring = pyfrag.SharedRing(arena, "r", create=True, capacity=64)
    ctx = fork()
    results = ctx.Queue()
    child = ctx.Process(target=_consume, args=(name, 2000, results))
    child.start()
    for start in range(0, 2000, 50):
        frags = arena.alloc_many(50, 256)
        for i, frag in enumerate(frags):
            frag[:4] = (start + i).to_bytes(4, "little")
        ring.put_many(frags, timeout=30)  # the ring is smaller: this waits for the consumer
    assert results.get(timeout=60) == list(range(2000))
    child.join(30)
    assert child.exitcode == 0
    arena.reap()
    stats = arena.stats()
    assert stats.allocs - stats.frees == 1 and stats.invalid_frees == 0


def test_c_producer_python_consumer(arena, name):
    program = os.path.join(scons_build("tests"), "tests", "test_ring")
    ring = pyfrag.SharedRing(arena, "from-c", create=True, capacity=128)
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)  # a sanitizer runtime preloaded for Python
    producer = subprocess.Popen([program, "produce", name, "from-c", "1000"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        while len(seen) < 1000:
            for frag in ring.get_many(32, timeout=30):
                assert frag.size == 64
                seen.append(int.from_bytes(bytes(frag[:4]), "little"))
                frag.free()
    finally:
        out, err = producer.communicate(timeout=60)
    assert producer.returncode == 0, err
    assert out.strip() == "produced 1000"
    assert seen == list(range(1000))


def _produce_then_hang(name, count, ready):
    with pyfrag.SharedArena(name) as arena:
        ring = pyfrag.SharedRing(arena, "r")
        for i in range(count):
            frag = arena.alloc(100)
            frag[0] = i
            ring.put(frag)
        ready.put("put")
        time.sleep(120)  # killed here, holding its role and its cache


def test_peer_killed_mid_transfer(arena, name):
    ring = pyfrag.SharedRing(arena, "r", create=True, capacity=16)
    ctx = fork()
    ready = ctx.Queue()
    child = ctx.Process(target=_produce_then_hang, args=(name, 5, ready))
    child.start()
    assert ready.get(timeout=60) == "put"
    # a second producer process is refused while the first lives
    refused = arena.alloc(10)
    with pytest.raises(pyfrag.FragError, match="another live process"):
        ring.put(refused)
    assert not refused.freed  # still ours
    refused.free()
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    got = ring.get_many(16, timeout=5)  # what the dead producer put is still there
    assert [f[0] for f in got] == list(range(5))
    arena.free_many(got)
    with pytest.raises(BrokenPipeError):
        ring.get(timeout=5)  # empty, and nobody left to fill it
    # the role goes to a live process: this one
    frag = arena.alloc(10)
    ring.put(frag)
    ring.get().free()
    assert arena.reap() == 1
    stats = arena.stats()
    # the dead producer held only its cache: everything it put was freed here
    assert stats.allocs - stats.frees == 1  # the ring's block


def test_close_from_another_thread_ends_a_blocked_get(arena):
    import threading
    ring = pyfrag.SharedRing(arena, "r", create=True, capacity=4)
    errors = []

    def blocked():
        try:
            ring.get()  # no timeout: only the close ends it
        except pyfrag.FragError as exc:
            errors.append(exc)
    waiter = threading.Thread(target=blocked)
    waiter.start()
    time.sleep(0.1)
    start = time.monotonic()
    arena.close()
    waiter.join(10)
    assert not waiter.is_alive() and errors and "closed" in str(errors[0])
    assert time.monotonic() - start < 5
