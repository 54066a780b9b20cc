# SPDX-License-Identifier: GPL-2.0-only
"""pyfrag.SharedArena: fragments allocated in one process and freed in another, a process
killed while it holds fragments, attaching to another layout version, file permissions,
and every refusal (bad names and arguments, a missing or existing name, use after close).
Arenas are 4 MiB and removed by each test; the hugetlb test skips without a hugetlbfs
mount with free pages (CI mounts one)."""
from __future__ import annotations

import copy
import errno
import itertools
import mmap
import multiprocessing
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys

import pytest

import pyfrag
from conftest import REPO_ROOT
from pyfrag import shared
from pyfrag._native import loader

SIZE = 4 * 1024 * 1024
_names = itertools.count()


@pytest.fixture
def name(lib):
    """A fresh arena name; whatever a test leaves under it is removed afterwards."""
    value = "t%d-%d" % (os.getpid(), next(_names))
    yield value
    try:
        pyfrag.SharedArena.unlink(value)
    except FileNotFoundError:
        pass


@pytest.fixture
def arena(name):
    with pyfrag.SharedArena(name, create=True, size=SIZE) as created:
        yield created


def pattern(offset: int, length: int) -> bytes:
    return bytes((offset + i * 7) & 0xFF for i in range(length))


def spawn():
    return multiprocessing.get_context("spawn")


def hugetlbfs_mount():
    """A 2 MiB hugetlbfs mount with a few free pool pages, or None."""
    free = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("HugePages_Free:"):
                free = int(line.split()[1])
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _, where, kind, options = line.split()[:4]
            if kind == "hugetlbfs" and "pagesize=2M" in options and free >= 4:
                return where
    return None


# ---- in one process -----------------------------------------------------------------------

def test_create_alloc_free(arena, name):
    assert arena.name == name and not arena.closed and arena.remove_on_close
    assert os.path.basename(arena.path) == "pyfrag." + name and os.path.exists(arena.path)
    assert arena.backing in ("hugetlb", "thp", "4k") and arena.size == SIZE
    frag = arena.alloc(1500)
    assert isinstance(frag, pyfrag.Fragment) and len(frag) == 1500
    assert frag.offset == frag.address - arena.base and arena.offset_of(frag.address) == frag.offset
    frag[:4] = b"abcd"
    view = frag.view()
    assert bytes(view[:4]) == b"abcd" and frag[0] == ord("a")
    info = frag.page()
    assert info.in_use and info.order == 3
    stats = arena.stats()
    assert isinstance(stats, pyfrag.SharedStats)
    assert stats.layout_version == shared.LAYOUT_VERSION and stats.processes == 1
    assert (stats.allocs, stats.frees, stats.backing_name) == (1, 0, arena.backing)
    frag.free()
    with pytest.raises(ValueError):
        view[0]  # released by free()
    with pytest.raises(pyfrag.FragError, match="was freed"):
        frag.free()
    with arena.alloc(64, align=64) as aligned:
        assert aligned.address % 64 == 0
    arena.flush()
    stats = arena.stats()
    assert (stats.allocs, stats.frees, stats.pages_in_use, stats.caches) == (2, 2, 0, 0)


def test_alloc_many_and_free_many(arena, name):
    frags = arena.alloc_many(300, 100)  # past the arena's scratch arrays (256)
    assert len(frags) == 300 and all(type(f) is pyfrag.SharedFragment for f in frags)
    offsets = sorted(f.offset for f in frags)
    assert all(b - a >= 100 for a, b in zip(offsets, offsets[1:]))  # no overlap
    for i, frag in enumerate(frags):
        frag[99] = i % 256
    assert [f[99] for f in frags] == [i % 256 for i in range(300)]
    assert arena.stats().allocs == 300
    for bad in ((-1, 10), (2, 0), (2, 40000), (2.0, 10), (True, 10), (2, "10")):
        with pytest.raises((TypeError, ValueError)):
            arena.alloc_many(*bad)
    with pyfrag.SharedArena(name + "x", create=True, size=SIZE, backing="4k") as other:
        stranger = other.alloc(64)
        with pytest.raises(ValueError, match="this arena"):
            arena.free_many(frags[:3] + [stranger])
        stranger.free()
    with pyfrag.FragCache() as cache:
        private = cache.alloc(64)
        with pytest.raises(ValueError, match="this arena"):
            arena.free_many([private])
        private.free()
    assert not any(f.freed for f in frags) and arena.stats().frees == 0
    arena.free_many(frags)
    assert all(f.freed for f in frags) and arena.stats().frees == 300
    with pytest.raises(pyfrag.FragError, match="freed"):
        arena.free_many(frags[:1])
    assert arena.alloc_many(0, 10) == []


def test_with_block_frees_once(arena):
    with arena.alloc(64) as frag:
        frag[0] = 7
    assert frag.freed and arena.stats().frees == 1
    frag.__exit__(None, None, None)  # leaving again frees nothing
    with arena.alloc(64) as early:
        early.free()  # freed inside the block: leaving it is fine
    assert arena.stats().frees == 2
    with pytest.raises(pyfrag.FragError, match="was freed"):
        early.free()
    with pytest.raises(KeyError):
        with arena.alloc(64) as failing:
            raise KeyError("the block's own exception goes on")
    assert failing.freed and arena.stats().frees == 3
    for bad in (0, 32769, True, 1.5, "64"):
        with pytest.raises((TypeError, ValueError)):
            arena.alloc(bad)
    assert arena.stats().allocs == 3


def test_stats_fields_match_the_library(arena):
    cdll = loader.lib()
    names = [cdll.pf_shared_stats_field_name(i).decode()
             for i in range(cdll.pf_shared_stats_field_count())]
    assert tuple(names) == shared.FIELDS
    assert set(shared.field_docs()) == set(shared.FIELDS)


def test_send_then_receive(arena):
    frag = arena.alloc(300)
    frag[:] = pattern(frag.offset, 300)
    view = frag.view()
    offset, length = frag.send()
    assert (offset, length) == (frag.offset, 300)
    with pytest.raises(ValueError):
        view[0]  # send() ends this object's access too
    for use in (frag.free, frag.send, frag.view, lambda: bytes(frag)):
        with pytest.raises(pyfrag.FragError, match="was sent"):
            use()
    again = arena.receive(offset, length)
    assert bytes(again) == pattern(offset, 300)
    again.free()
    assert arena.stats().frees == 1
    kept = arena.alloc(10)
    arena.free_offset(kept.send()[0])
    assert arena.stats().frees == 2


def test_alloc_in_a_thread_free_in_another(arena):
    import threading
    made = []

    def work():
        made.extend(arena.alloc(700) for _ in range(5))
        assert arena.stats().caches == 1  # this thread's, made on its first allocation
        arena.flush()  # thread exit does it too, but Python's join() may return before that

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert len(made) == 5 and arena.stats().caches == 0
    for frag in made:
        frag[:] = b"\x07" * 700
        frag.free()
    stats = arena.stats()
    assert (stats.allocs, stats.frees, stats.pages_in_use) == (5, 5, 0)


def test_not_copyable(arena):
    frag = arena.alloc(10)
    for attempt in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError):
            attempt(arena)
        with pytest.raises(TypeError):
            attempt(frag)
    frag.free()


# ---- across processes -----------------------------------------------------------------------

def _child_allocates(name, conn, count):
    """Attach, allocate count fragments with a pattern, send them, then free what comes back."""
    with pyfrag.SharedArena(name) as arena:
        sent = []
        for _ in range(count):
            frag = arena.alloc(1000)
            frag[:] = pattern(frag.offset, 1000)
            sent.append(frag.send())
        conn.send(sent)
        for offset, length in conn.recv():  # the parent's fragments: verify and free here
            frag = arena.receive(offset, length)
            ok = bytes(frag) == pattern(offset, length)
            frag.free()
            if not ok:
                conn.send("corrupt at %d" % offset)
                return
        conn.send(arena.stats().frees)
        conn.recv()  # stay attached until the parent has looked


def test_cross_process_alloc_and_free(arena, name):
    ctx = spawn()
    mine, theirs = ctx.Pipe()
    child = ctx.Process(target=_child_allocates, args=(name, theirs, 20))
    child.start()
    try:
        received = mine.recv()
        assert len(received) == 20
        pages = {}
        for offset, length in received:  # allocated there, verified and freed here
            frag = arena.receive(offset, length)
            assert bytes(frag) == pattern(offset, length)
            pages.setdefault(frag.page().head, frag.page().refcount)
            frag.free()
        (head,) = pages  # 20 x 1000 bytes: one frag page of the child's cache
        assert pyfrag.page_info(head).refcount == pages[head] - 20  # our frees, atomic
        assert arena.stats().processes == 2
        ours = [arena.alloc(2000) for _ in range(10)]
        for frag in ours:
            frag[:] = pattern(frag.offset, 2000)
        mine.send([frag.send() for frag in ours])
        assert mine.recv() == 30  # the child freed our 10, after we freed its 20
        mine.send("bye")
        child.join(30)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
    arena.flush()
    stats = arena.stats()
    assert (stats.processes, stats.caches, stats.reaped_processes) == (1, 0, 0)
    assert stats.allocs == stats.frees == 30
    assert (stats.pages_in_use, stats.invalid_frees) == (0, 0)


HELD = 1  # fragments the consumer keeps when it is killed


def _consumer(name, conn):
    """Free what the producer sends except HELD fragments; send back acks from our own cache."""
    with pyfrag.SharedArena(name) as arena:
        held = []
        for offset, length in conn.recv():
            frag = arena.receive(offset, length)
            assert bytes(frag) == pattern(offset, length)
            if len(held) < HELD:
                held.append(frag)  # still ours when we die
            else:
                frag.free()
        acks = []
        for _ in range(8):
            frag = arena.alloc(500)
            frag[:] = pattern(frag.offset, 500)
            acks.append(frag.send())
        conn.send(acks)
        conn.recv()  # killed while waiting here


def test_consumer_killed_holding_fragments(arena, name):
    start = arena.stats()
    ctx = spawn()
    mine, theirs = ctx.Pipe()
    child = ctx.Process(target=_consumer, args=(name, theirs))
    child.start()
    try:
        frags = [arena.alloc(1000) for _ in range(16)]
        for frag in frags:
            frag[:] = pattern(frag.offset, 1000)
        mine.send([frag.send() for frag in frags])
        acks = mine.recv()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
    assert child.exitcode == -signal.SIGKILL
    # the producer is not wedged: it allocates and frees while the dead one is still attached
    assert arena.stats().processes == 2
    with arena.alloc(1000) as extra:
        extra[0] = 1
    assert arena.reap() == 1 and arena.reap() == 0
    after_reap = arena.stats()
    assert (after_reap.processes, after_reap.caches) == (2 - 1, 1)  # ours remains
    assert after_reap.reaped_processes == 1 and after_reap.reaped_caches == 1
    for offset, length in acks:  # the dead consumer's fragments, freed by the producer
        frag = arena.receive(offset, length)
        assert bytes(frag) == pattern(offset, length)
        frag.free()
    arena.flush()
    end = arena.stats()
    # what is lost: the HELD fragments and the one frag page (8 x 4 KiB) they pin; the dead
    # cache's page came back once its acks were freed (else 8 more pages, or 1 for 4 KiB)
    assert end.allocs - end.frees == HELD
    assert 0 < end.pages_in_use - start.pages_in_use <= 8 * HELD
    assert end.caches == 0 and end.invalid_frees == 0


NAMESPACED_CHILD = r"""
import sys
import pyfrag
with pyfrag.SharedArena(sys.argv[1]) as arena:
    frag = arena.alloc(1000)
    frag[:] = b"\xc5" * 1000
    print(arena.stats().processes, flush=True)
    sys.stdin.readline()  # alive until the other process has tried to reap it
    print("intact" if bytes(frag) == b"\xc5" * 1000 else "overwritten", flush=True)
    frag.free()
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="a new pid namespace needs root and util-linux's unshare")
def test_process_in_another_pid_namespace_is_not_reaped_while_alive(arena, name):
    # its pid means nothing here: liveness must not come from /proc/<pid>
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    child = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c",
                              NAMESPACED_CHILD, name], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "2"  # it did not reap us either
        assert arena.reap() == 0
        frags = [arena.alloc(1000) for _ in range(64)]  # would land on its page if it were reaped
        for frag in frags:
            frag[:] = b"\x11" * 1000
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "intact"
        for frag in frags:
            frag.free()
    finally:
        child.stdin.close()
        assert child.wait(30) == 0
    stats = arena.stats()
    assert stats.reaped_processes == 0 and stats.processes == 1


# ---- another version, permissions -------------------------------------------------------------

def _set_layout_version(path: str, version: int) -> None:
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 4096) as header:
        header[8:12] = struct.pack("=I", version)


def test_attach_to_another_version_is_refused(name):
    with pyfrag.SharedArena(name, create=True, size=SIZE, backing="4k",
                            remove_on_close=False) as arena:
        path = arena.path
    _set_layout_version(path, 99)
    with pytest.raises(pyfrag.IncompatibleArenaError) as caught:
        pyfrag.SharedArena(name)
    assert isinstance(caught.value, pyfrag.FragError)
    assert caught.value.errno == errno.EPROTO
    message = str(caught.value)
    assert "layout version 99" in message and "version %d" % shared.LAYOUT_VERSION in message
    _set_layout_version(path, shared.LAYOUT_VERSION)  # the version was all that was wrong
    with pyfrag.SharedArena(name, remove_on_close=True) as again:
        assert again.stats().layout_version == shared.LAYOUT_VERSION
    assert not os.path.exists(path)


def test_file_mode_0600_by_default_and_as_asked(name):
    with pyfrag.SharedArena(name, create=True, size=SIZE) as arena:
        assert os.stat(arena.path).st_mode & 0o7777 == 0o600
    previous = os.umask(0o077)  # would strip the group bits of an ordinary open()
    try:
        with pyfrag.SharedArena(name, create=True, size=SIZE, mode=0o640) as arena:
            assert os.stat(arena.path).st_mode & 0o7777 == 0o640
    finally:
        os.umask(previous)


def test_another_user_is_refused(arena):
    if os.geteuid() != 0:
        pytest.skip("needs root, to run a child as uid 65534 (nobody)")
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("needs /usr/bin/python3 (the venv's interpreter may be unreadable to nobody)")
    code = ("import sys; sys.path.insert(0, %r); import pyfrag\n"
            "try:\n    pyfrag.SharedArena(%r)\n"
            "except PermissionError as exc:\n    print('refused', exc.errno); sys.exit(0)\n"
            "sys.exit('attached')\n" % (REPO_ROOT, arena.name))
    env = {"PATH": "/usr/bin:/bin", "PYFRAG_LIBRARY": pyfrag.library_path()}
    env.update((k, os.environ[k]) for k in ("LD_PRELOAD", "ASAN_OPTIONS") if k in os.environ)
    done = subprocess.run(["/usr/bin/python3", "-c", code], user=65534, group=65534, env=env,
                          capture_output=True, text=True, timeout=60)
    if "ModuleNotFoundError" in done.stderr or "cannot load" in done.stderr:
        pytest.skip("uid 65534 cannot read this checkout: %s" % done.stderr.strip()[-200:])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["refused", str(errno.EACCES)]


# ---- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["", ".hidden", "a/b", "x" * 49, "with space", "ü", "a\0b"])
def test_bad_names(bad, lib):
    with pytest.raises(ValueError, match="arena name"):
        pyfrag.SharedArena(bad, create=True)
    with pytest.raises(ValueError, match="arena name"):
        pyfrag.SharedArena.unlink(bad)


@pytest.mark.parametrize("kwargs, error", [
    (dict(create=True, size=0), ValueError),
    (dict(create=True, size=-1), ValueError),
    (dict(create=True, size="4M"), TypeError),
    (dict(create=True, size=4.0 * SIZE), TypeError),
    (dict(create=True, size=True), TypeError),
    (dict(create=True, mode=0o600 * 1.0), TypeError),
    (dict(size=SIZE), ValueError),            # size is for create
    (dict(create=True, mode=0), ValueError),
    (dict(create=True, mode=0o1777), ValueError),
    (dict(create=True, mode="600"), TypeError),
    (dict(create=True, backing="huge"), ValueError),
    (dict(create=True, backing=1), TypeError),
    (dict(backing="4k"), ValueError),         # backing is for create
    (dict(create=True, directory=3), TypeError),
])
def test_bad_arguments_before_c(name, kwargs, error):
    with pytest.raises(error):
        pyfrag.SharedArena(name, **kwargs)
    with pytest.raises(TypeError):
        pyfrag.SharedArena(123)
    assert not os.path.exists("/dev/shm/pyfrag." + name)


def test_attach_missing_name(name):
    with pytest.raises(FileNotFoundError) as caught:
        pyfrag.SharedArena(name)
    assert caught.value.errno == errno.ENOENT and name in str(caught.value)
    with pytest.raises(FileNotFoundError):
        pyfrag.SharedArena.unlink(name)


def test_create_existing_name(arena, name):
    with pytest.raises(FileExistsError) as caught:
        pyfrag.SharedArena(name, create=True, size=SIZE)
    assert caught.value.errno == errno.EEXIST


def test_bad_fragment_arguments(arena):
    for size in (0, 32769, -1):
        with pytest.raises(ValueError):
            arena.alloc(size)
    with pytest.raises(ValueError):
        arena.alloc(10, align=3)
    with pytest.raises(ValueError):
        arena.receive(-1, 10)
    with pytest.raises(ValueError):
        arena.receive(arena.map_bytes + 4096, 10)  # outside the arena: the library says so
    with pytest.raises(ValueError):
        arena.free_offset(arena.map_bytes * 2)
    with pytest.raises(TypeError):
        arena.receive("0", 10)
    # a wrong type is a TypeError at every entry point (issue 13 item 9); bool is refused
    for call in (lambda: arena.alloc("x"), lambda: arena.alloc(1.5), lambda: arena.alloc(True),
                 lambda: arena.alloc(None), lambda: arena.alloc(10, align="8"),
                 lambda: arena.alloc(10, align=8.0), lambda: arena.receive(0, "10"),
                 lambda: arena.receive(None, 10), lambda: arena.free_offset(1.0),
                 lambda: arena.free_offset(False), lambda: arena.offset_of("x"),
                 lambda: arena.offset_of(None)):
        with pytest.raises(TypeError, match="must be an int"):
            call()
    assert arena.stats().invalid_frees == 0


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_failed_init_removes_only_the_file_it_created(name, monkeypatch, failure):
    """Issue 13 item 9: a step after pf_shared_create that raises must not leave the new
    file behind (nor an attach); an attach that fails must not remove the creator's file."""
    def broken(*args):
        raise failure("injected after the create")

    monkeypatch.setattr(shared.SharedArena, "_stats_now", staticmethod(broken))
    with pytest.raises(failure, match="injected"):
        pyfrag.SharedArena(name, create=True, size=SIZE, backing="4k")
    assert not os.path.exists("/dev/shm/pyfrag." + name)
    monkeypatch.undo()
    with pyfrag.SharedArena(name, create=True, size=SIZE, backing="4k") as creator:
        monkeypatch.setattr(shared.SharedArena, "_stats_now", staticmethod(broken))
        with pytest.raises(failure, match="injected"):
            pyfrag.SharedArena(name)  # an attach: the file is the creator's
        monkeypatch.undo()
        assert os.path.exists(creator.path)
        assert creator.stats().processes == 1  # the failed attach was detached
    assert not os.path.exists("/dev/shm/pyfrag." + name)


def test_double_close_and_use_after_close(name):
    arena = pyfrag.SharedArena(name, create=True, size=SIZE)
    path = arena.path
    frag = arena.alloc(100)
    view = frag.view()
    untouched = arena.alloc(100)  # no access yet: close() does not know it
    arena.close()
    arena.close()  # twice is fine
    assert arena.closed and not os.path.exists(path)  # the creator removed the name
    for use in (lambda: arena.alloc(10), lambda: arena.alloc(10, align=64),
                lambda: arena.alloc_many(2, 10), lambda: arena.free_many([untouched]),
                untouched.free, arena.stats, arena.reap, arena.flush,
                lambda: arena.receive(0, 10), lambda: arena.free_offset(0),
                lambda: arena.offset_of(0)):
        with pytest.raises(pyfrag.FragError, match="closed"):
            use()
    with pytest.raises(ValueError):
        view[0]  # released at close: the memory is unmapped
    with pytest.raises(pyfrag.FragError, match="arena was closed"):
        frag.free()
    with pytest.raises(pyfrag.FragError, match="closed"):
        with untouched:  # its __exit__ is free()
            pass
    with pytest.raises(pyfrag.FragError):
        with arena:
            pass


def test_close_refuses_while_a_view_is_exported(name):
    with pyfrag.SharedArena(name, create=True, size=SIZE) as arena:
        frag = arena.alloc(100)
        view = frag.view()
        held = memoryview(view)  # an export of the view: its memory cannot be released
        with pytest.raises(pyfrag.FragError, match="still (held|alive)"):
            arena.close()
        assert not arena.closed
        held.release()
        frag.free()


def test_attached_arena_keeps_the_name(arena, name):
    """An attach in another process does not remove the name at close; the creator does."""
    code = ("import pyfrag\nwith pyfrag.SharedArena(%r) as a:\n"
            "    f = a.alloc(64); f.free(); print(a.remove_on_close, a.stats().processes)\n" % name)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "2"]
    assert os.path.exists(arena.path)
    stats = arena.stats()
    assert (stats.processes, stats.allocs, stats.frees, stats.pages_in_use) == (1, 1, 1, 0)


# ---- backings ----------------------------------------------------------------------------------

def test_hugetlb_backing(name):
    where = hugetlbfs_mount()
    if where is None:
        pytest.skip("no 2 MiB hugetlbfs mount with free pool pages (as root: mount -t hugetlbfs "
                    "-o pagesize=2M nodev /dev/hugepages; echo 64 > /proc/sys/vm/nr_hugepages)")
    with pyfrag.SharedArena(name, create=True, size=SIZE, backing="hugetlb") as arena:
        assert arena.backing == "hugetlb"
        assert os.path.dirname(arena.path) == where
        frags = [arena.alloc(32768) for _ in range(4)]
        for frag in frags:
            frag[:] = b"\x5a" * 32768
        cov = arena.hugepage_coverage()
        assert cov.hugetlb >= 2 * 1024 * 1024 and cov.huge_fraction == 1.0
        for frag in frags:
            frag.free()


def test_4k_backing_in_a_directory(name, tmp_path):
    with pyfrag.SharedArena(name, create=True, size=SIZE, backing="4k",
                            directory=str(tmp_path)) as arena:
        assert arena.path == str(tmp_path / ("pyfrag." + name)) and arena.backing == "4k"
        with pyfrag.SharedArena(name, directory=tmp_path) as second:
            assert second.base == arena.base  # attached twice in one process: one mapping
        with arena.alloc(4000) as frag:
            frag[:] = b"\x01" * 4000
        assert arena.hugepage_coverage().huge_fraction == 0.0
    assert not os.path.exists(tmp_path / ("pyfrag." + name))
