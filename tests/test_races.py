# SPDX-License-Identifier: GPL-2.0-only
"""Threads racing on the Python API: a close against calls into C, a free against reads
and writes of the bytes. Misuse is an exception, never a crash.

Contract:
- Each race runs in a fresh interpreter (run_python) so that a segfault fails the test
  instead of killing pytest; the child prints one summary line and exits 0.
- Loops are bounded in count and in time (RACE_SECONDS each), and made likely to hit the
  window: a tiny GIL switch interval, several threads, and PYFRAG_RETAIN=0
  PYFRAG_PCP_HIGH=0 PYFRAG_HUGEPAGES=off so that freed memory is unmapped at once.
"""
from __future__ import annotations

import glob
import os

import pytest

import pyfrag
from conftest import run_python

RACE_SECONDS = 6.0
UNMAP_FREED = {"PYFRAG_RETAIN": "0", "PYFRAG_PCP_HIGH": "0", "PYFRAG_HUGEPAGES": "off"}


def run_race(code: str, env: dict | None = None):
    proc = run_python(code, env=dict(UNMAP_FREED, **(env or {})), args=("-X", "faulthandler"),
                      timeout=120)
    print(proc.stdout + proc.stderr[-3000:])
    assert proc.returncode == 0, "rc %d\n%s\n%s" % (proc.returncode, proc.stdout,
                                                     proc.stderr[-3000:])
    return proc.stdout


# ---- close() against calls in flight (issue 13 item 3) ---------------------------------

CLOSE_RACE = """
import os, sys, threading, time
import pyfrag
sys.setswitchinterval(1e-6)
deadline = time.monotonic() + %(seconds)r
rounds = refused = used = 0
while rounds < 400 and time.monotonic() < deadline:
    name = "%(prefix)s%%d" %% rounds
    arena = pyfrag.SharedArena(name, create=True, size=2 << 20, backing="4k")
    go = threading.Barrier(3)
    stop = threading.Event()  # set if close() fails, so that the workers end anyway
    counts = [0, 0]

    def worker():
        go.wait()
        while not stop.is_set():
            try:
                frag = arena.alloc(64)
            except pyfrag.FragError:
                counts[0] += 1  # the arena is closed: a later call raises
                return
            try:
                frag[0:4] = b"abcd"
                frag[5] = 7
                assert bytes(frag)[:4] == b"abcd"
                frag.free()
                counts[1] += 1
            except pyfrag.FragError:
                pass  # the close ended Python's access to this fragment first
        try:
            arena.alloc(64)  # stopped by the main thread after its close: this must raise
        except pyfrag.FragError:
            counts[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    go.wait()
    time.sleep((rounds %% 7) * 1e-4)
    try:
        arena.close()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    refused += counts[0]
    used += counts[1]
    rounds += 1
print("rounds", rounds, "refused", refused, "used", used)
"""


def remove_arenas(prefix: str) -> None:
    """Arena files a crashed child left behind."""
    for path in glob.glob("/dev/shm/pyfrag." + prefix + "*"):
        pyfrag.SharedArena.unlink(os.path.basename(path)[len("pyfrag."):])


def test_close_waits_for_calls_in_flight_and_later_calls_raise(lib):
    prefix = "race-close-%d-" % os.getpid()
    try:
        out = run_race(CLOSE_RACE % {"seconds": RACE_SECONDS, "prefix": prefix})
    finally:
        remove_arenas(prefix)
    rounds, refused = int(out.split()[1]), int(out.split()[3])
    assert rounds > 0 and refused == 2 * rounds  # every worker met a closed arena


# ---- free() against reads and writes of the bytes (issue 13 item 4) --------------------

FREE_RACE = """
import os, sys, threading, time
import pyfrag
sys.setswitchinterval(1e-6)
SHARED = %(shared)r
SIZE = 32768  # a whole frag page: its free gives the page back, and the chunk is unmapped
deadline = time.monotonic() + %(seconds)r
if SHARED:
    owner = pyfrag.SharedArena(%(prefix)r, create=True, size=4 << 20, backing="4k")
else:
    owner = pyfrag.FragCache()
current = [None]
stop = threading.Event()
reads = [0] * 6


def use(frag, how):
    if how == 0:
        assert len(bytes(frag)) == SIZE
    elif how == 1:
        assert len(frag[0:SIZE]) == SIZE
    elif how == 2:
        frag[SIZE - 1]
    elif how == 3:
        frag[0:SIZE] = bytes(SIZE)
    elif how == 4:
        frag[SIZE - 1] = 1
    else:
        view = frag.view()
        view[SIZE - 1] = 2
        assert len(view.tobytes()) == SIZE
        if sys.version_info >= (3, 12):
            with memoryview(frag) as mv:
                mv[0] = 3


ORDER = (0, 1, 0, 2, 0, 3, 0, 4, 0, 5)  # every path, and bytes() (the old hole) every other time


def reader(index):
    step = index
    while not stop.is_set():
        frag = current[0]
        if frag is None:
            continue
        step += 1
        how = ORDER[step %% len(ORDER)]
        try:
            use(frag, how)
            reads[how] += 1
        except (pyfrag.FragError, ValueError):
            pass  # freed first (FragError), or a view released by the free (ValueError)


threads = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
for thread in threads:
    thread.start()
rounds = refused = 0
try:
    while rounds < 3000 and time.monotonic() < deadline:
        frag = owner.alloc(SIZE)
        if not SHARED:
            owner.drain()  # the fragment alone holds its page
        current[0] = frag
        time.sleep(0)
        while True:
            try:
                frag.free()
                break
            except pyfrag.FragError as exc:
                assert "in use" in str(exc) or "still" in str(exc), exc
                refused += 1  # a reader holds the bytes: free() refused, try again
        current[0] = None
        rounds += 1
finally:
    stop.set()
    for thread in threads:
        thread.join()
owner.close()
print("rounds", rounds, "refused", refused, "reads", " ".join(map(str, reads)))
"""


@pytest.mark.parametrize("shared", [False, True], ids=["private", "shared"])
def test_free_respects_reads_and_writes_in_progress(lib, shared):
    prefix = "race-free-%d" % os.getpid()
    try:
        out = run_race(FREE_RACE % {"shared": shared, "seconds": RACE_SECONDS, "prefix": prefix})
    finally:
        remove_arenas(prefix)
    words = out.split()
    assert int(words[1]) > 0 and int(words[5]) > 0


# ---- the same thread re-entering: a signal handler, a __del__ run by the gc ------------

REENTRY = """
import faulthandler, gc, signal, sys, time
import pyfrag
faulthandler.dump_traceback_later(60, exit=True)  # a deadlock fails in a minute, with where
SHARED = %(shared)r
PREFIX = %(prefix)r


def make(index):
    if SHARED:
        return pyfrag.SharedArena(PREFIX + str(index), create=True, size=2 << 20, backing="4k")
    return pyfrag.FragCache()


owner = make(0)
pending = []  # fragments the handler and the __del__ free
state = {"in": False, "freed": 0, "refused": 0, "closed": 0, "close_now": False}


def free_pending():
    while pending:
        try:
            pending.pop().free()
            state["freed"] += 1
        except (pyfrag.FragError, IndexError):
            pass


def handler(sig, frame):
    if state["in"]:
        return
    state["in"] = True
    try:
        free_pending()
        if state["close_now"]:
            try:
                owner.close()  # refused if the main thread is inside a call on the owner
                state["closed"] += 1
            except pyfrag.FragError as exc:
                assert "re-entered" in str(exc), exc
                state["refused"] += 1
    finally:
        state["in"] = False


class Dropper:  # garbage in a cycle: the gc runs its __del__ wherever it collects
    def __init__(self, frag):
        self.frag, self.me = frag, self

    def __del__(self):
        try:
            self.frag.free()
            state["freed"] += 1
        except pyfrag.FragError:
            pass


signal.signal(signal.SIGALRM, handler)
signal.setitimer(signal.ITIMER_REAL, 1e-4, 1e-4)
gc.set_threshold(1)
rounds = 0
deadline = time.monotonic() + %(seconds)r
index = 0
while rounds < 20000 and time.monotonic() < deadline:
    state["close_now"] = rounds %% 50 == 49
    try:
        frag = owner.alloc(64)
        pending.append(owner.alloc(64))
        Dropper(owner.alloc(64))
        frag.view()
        bytes(frag)
        frag[0:3] = b"abc"
        frag[1:5]
        frag[2] = 1
        frag.free()
    except pyfrag.FragError:
        assert owner.closed  # the handler closed it between two calls
    if owner.closed:
        index += 1
        owner = make(index)
    rounds += 1
signal.setitimer(signal.ITIMER_REAL, 0)
gc.set_threshold(700)
free_pending()
owner.close()
print("rounds", rounds, "freed", state["freed"], "refused", state["refused"],
      "closed", state["closed"])
"""


@pytest.mark.parametrize("shared", [False, True], ids=["private", "shared"])
def test_reentry_from_signal_handler_and_gc_never_deadlocks(lib, shared):
    """Code run on the thread while it holds the owner's lock (a signal handler, a __del__
    the gc runs) may free fragments; a close() there is refused, not a deadlock."""
    prefix = "race-reentry-%d-" % os.getpid()
    try:
        out = run_race(REENTRY % {"shared": shared, "seconds": RACE_SECONDS / 2,
                                  "prefix": prefix})
    finally:
        remove_arenas(prefix)
    words = out.split()
    assert int(words[1]) > 0 and int(words[3]) > 0


# ---- interpreter exit while daemon threads still use an arena or a cache -----------------

# the end of each exit race: two daemon threads run work() while the main thread exits
DAEMONS_THEN_EXIT = """
for _ in range(2):
    threading.Thread(target=work, daemon=True).start()
started.wait()
time.sleep(0.05)
print("exiting")
"""


def run_exit_race(code: str) -> list:
    """code three times (exits vary); the stdout of each run, which must exit 0."""
    outputs = []
    for _ in range(3):
        proc = run_python(code, env=UNMAP_FREED, args=("-X", "faulthandler"), timeout=60)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.append(proc.stdout)
    return outputs


EXIT_RACE = """
import atexit, sys, threading, time
atexit.register(time.sleep, 0.3)  # runs after pyfrag's exit hooks: the daemons go on meanwhile
import pyfrag
sys.setswitchinterval(1e-6)
arena = pyfrag.SharedArena(%(name)r, create=True, size=4 << 20, backing="4k")
started = threading.Barrier(3)


def work():
    started.wait()
    while True:
        try:
            frag = arena.alloc(32768)
            bytes(frag)
            frag[0:100] = bytes(100)
            frag.free()
        except pyfrag.FragError:
            pass  # closed at exit: every later call and access raises

""" + DAEMONS_THEN_EXIT


def test_exit_with_daemon_threads_using_an_arena(lib):
    """At exit the arena is closed like close() (calls in flight first, later ones raise),
    not detached under the daemon threads' calls by its finalizer; its file is removed."""
    name = "race-exit-%d" % os.getpid()
    try:
        run_exit_race(EXIT_RACE % {"name": name})
        assert not os.path.exists("/dev/shm/pyfrag." + name)
    finally:
        remove_arenas(name)


CACHE_EXIT = """
import atexit, sys, threading, time
caches = []
# registered before pyfrag's own exit hook, so it runs after it: the caches are closed by then
atexit.register(lambda: print("closed", all(c.closed for c in caches), flush=True))
import pyfrag
sys.setswitchinterval(1e-6)
started = threading.Barrier(3)


def work():
    cache = pyfrag.FragCache()
    caches.append(cache)
    started.wait()
    while True:
        try:
            frag = cache.alloc(32768)
            frag[0:100] = bytes(100)
            frag.free()
        except pyfrag.FragError:
            pass  # closed at exit, from the main thread: every later call raises

""" + DAEMONS_THEN_EXIT


def test_exit_with_daemon_threads_using_caches(lib):
    """At exit a FragCache still open is closed like an arena (the same base class): after its
    owner thread's call in flight, from the main thread, and later calls raise."""
    for out in run_exit_race(CACHE_EXIT):
        assert out.split() == ["exiting", "closed", "True"], out
