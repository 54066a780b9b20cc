# SPDX-License-Identifier: GPL-2.0-only
"""Fault injection from Python: the OS layer fails (pyfrag_debug.h, through
ctypes or PYFRAG_FAULT_* variables) or PYFRAG_LIMIT is reached. Every failure
is a MemoryError carrying ENOMEM; fragments handed out before keep their
bytes; allocation works again once memory comes back; nothing stays in use.
The C side of the same is native/tests/test_faults.c.

Fault injection is in the debug and sanitizer builds only (the release
library neither exports pf_debug_* nor reads PYFRAG_FAULT_*): each fault
test runs in a child interpreter on the `fault_library` fixture's library
(PYFRAG_LIBRARY), never in this process, which has another copy loaded."""
from __future__ import annotations

import errno
import json

import pytest

import pyfrag
from conftest import run_cli, run_python

# Declares the fault-injection calls (a test interface, not in pyfrag._native) in a child.
DEBUG_API = """
import ctypes, json, pyfrag
from pyfrag._native import loader
RESERVE, COMMIT, DECOMMIT, MADVISE, META, SHARED, SITES = range(7)  # enum pf_fault_site
lib = loader.lib()
lib.pf_debug_fault_set.argtypes = [ctypes.c_int, ctypes.c_uint64, ctypes.c_int64]
lib.pf_debug_fault_set.restype = ctypes.c_int
lib.pf_debug_fault_get.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_uint64),
                                   ctypes.POINTER(ctypes.c_uint64)]
lib.pf_debug_fault_get.restype = ctypes.c_int
lib.pf_debug_fail_commit.argtypes = [ctypes.c_uint64]


def failures(site):
    calls, failed = ctypes.c_uint64(), ctypes.c_uint64()
    assert lib.pf_debug_fault_get(site, ctypes.byref(calls), ctypes.byref(failed)) == 0
    return failed.value
"""


def run_faulty(fault_library: str, code: str, env: dict | None = None, **kwargs):
    """code (after DEBUG_API) in a child on the fault library; its JSON line, or fail."""
    proc = run_python(DEBUG_API + code, env=dict(env or {}, PYFRAG_LIBRARY=fault_library),
                      **kwargs)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


META_FAULT = """
lib.pf_init()  # armed before init, the fault would hit the arena's own set-up instead
made, out = [], {}
lib.pf_debug_fault_set(META, 1, -1)
try:
    for _ in range(10000):  # the pool's current block serves a few hundred first
        made.append(pyfrag.FragCache())
except MemoryError as exc:
    out["error"] = [exc.errno, str(exc)]
out["made"], out["failures"] = len(made), failures(META)
for cache in made[::50]:  # the caches made before still work
    cache.alloc(64).free()
lib.pf_debug_fault_set(META, 0, 0)
with pyfrag.FragCache() as cache:  # and new ones can be made again
    cache.alloc(64).free()
for cache in made:
    cache.close()
print(json.dumps(out))
"""


def test_cache_creation_fails_cleanly_when_metadata_cannot_be_mapped(fault_library):
    out = run_faulty(fault_library, META_FAULT)
    assert out["error"][0] == errno.ENOMEM and "ENOMEM" in out["error"][1], out
    assert out["failures"] >= 1 and out["made"] < 10000, out


COMMIT_FAULT = """
out = {}
cache = pyfrag.FragCache()
lib.pf_debug_fail_commit(1)              # no chunk can be committed from here on
held = []
try:
    cache.alloc(32768)                   # an order-3 page needs a new chunk
except MemoryError as exc:
    out["big"] = [exc.errno, str(exc)]
try:
    for i in range(100):                 # order-0 refills take the 16 reserve pages
        frag = cache.alloc(4096)
        frag[:] = bytes([i]) * 4096
        held.append(frag)
        assert cache.info().pfmemalloc
except MemoryError as exc:
    out["small"] = [exc.errno, str(exc)]
out["held"] = len(held)
out["intact"] = all(bytes(f) == bytes([i]) * 4096 for i, f in enumerate(held))
lib.pf_debug_fail_commit(0)              # memory comes back
again = cache.alloc(32768)
out["again"] = again.page().size
again.free()
for frag in held:
    frag.free()
cache.close()
pyfrag.thread_flush()
s = pyfrag.stats()
out["in_use"], out["reserve_free"], out["returns"] = s.pages_in_use, s.reserve_free_pages, s.reserve_returns
print(json.dumps(out))
"""


def test_commit_faults_raise_memory_error_then_recover(fault_library):
    out = run_faulty(fault_library, COMMIT_FAULT, env={"PYFRAG_RESERVE": "64K"})
    assert out["big"][0] == errno.ENOMEM and "ENOMEM" in out["big"][1]
    assert out["small"][0] == errno.ENOMEM
    assert out["held"] == 16 and out["intact"]
    assert out["again"] == 32768
    assert (out["in_use"], out["reserve_free"], out["returns"]) == (0, 16, 16)


def test_reserve_fault_from_the_environment(fault_library):
    """The arena cannot be reserved: every call says so, and nothing crashes."""
    code = """
    import pyfrag
    for make in (pyfrag.FragCache, pyfrag.FragCache):
        try:
            make()
        except MemoryError as exc:
            print("MemoryError", exc.errno, exc)
    print(pyfrag.stats().allocs, pyfrag.trim())
    """
    faulty = {"PYFRAG_LIBRARY": fault_library, "PYFRAG_FAULT_RESERVE": "1"}
    proc = run_python(code, env=faulty)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("MemoryError 12") and "PYFRAG_ARENA" in lines[0]
    assert lines[1].startswith("MemoryError 12")
    assert lines[2] == "0 0"
    info = run_cli("info", env=faulty)
    assert info.returncode == 1
    assert "pyfrag info: error:" in info.stderr and "Traceback" not in info.stderr


STORM = """
import random, threading, pyfrag
rng = random.Random(7)
errors, enomem, allocs = [], [0], [0]
lock = threading.Lock()
box = []
def work(seed):
    rng = random.Random(seed)
    live = []
    with pyfrag.FragCache() as cache:
        for step in range(3000):
            if live and (len(live) > 160 or rng.random() < 0.35):
                frag, fill = live.pop(rng.randrange(len(live)))
                if bytes(frag) != fill:
                    errors.append("corrupt")
                if rng.random() < 0.3:
                    with lock:
                        box.append(frag)     # freed by the other thread
                else:
                    frag.free()
                continue
            with lock:
                mine, box[:] = list(box), []
            for frag in mine:
                frag.free()
            size = rng.choice([rng.randint(1, 2048), rng.randint(1, 32768)])
            align = rng.choice([None, 8, 64, 4096, 16384])
            try:
                frag = cache.alloc(size, align)
            except MemoryError as exc:
                if exc.errno != 12:
                    errors.append(repr(exc))
                enomem[0] += 1
                continue
            except Exception as exc:
                errors.append(repr(exc))
                continue
            if align and frag.address % align:
                errors.append("misaligned")
            fill = bytes([step & 0xFF]) * size
            frag[:] = fill
            live.append((frag, fill))
            allocs[0] += 1
        for frag, fill in live:
            if bytes(frag) != fill:
                errors.append("corrupt")
            frag.free()
threads = [threading.Thread(target=work, args=(seed,)) for seed in (1, 2)]
for t in threads: t.start()
for t in threads: t.join()
for frag in box:
    frag.free()
pyfrag.thread_flush()
pyfrag.trim()
s = pyfrag.stats()
import json
print(json.dumps(dict(errors=errors[:5], enomem=enomem[0], allocs=allocs[0], in_use=s.pages_in_use,
                      committed=s.committed_bytes, reserve_free=s.reserve_free_pages,
                      commit_failures=s.commit_failures)))
"""


def test_fault_storm_under_a_limit_with_threads(fault_library):
    """Every 3rd commit, every 2nd madvise and decommit fail, under a 4 MiB cap."""
    proc = run_python(STORM, env={"PYFRAG_LIBRARY": fault_library,
                                  "PYFRAG_FAULT_COMMIT": "3", "PYFRAG_FAULT_MADVISE": "2",
                                  "PYFRAG_FAULT_DECOMMIT": "2", "PYFRAG_LIMIT": "4M",
                                  "PYFRAG_RETAIN": "0", "PYFRAG_RESERVE": "64K"}, timeout=240)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["errors"] == [], out
    assert out["enomem"] > 0 and out["allocs"] > 1000 and out["commit_failures"] > 0, out
    assert out["in_use"] == 0 and out["reserve_free"] == 16, out
    # decommits fail every other time: chunks whose release was refused may stay, within the cap
    assert out["committed"] <= 4 << 20, out


def test_memory_error_keeps_fragments_and_memory_comes_back(lib):
    """PYFRAG_LIMIT reached in-process: MemoryError, nothing corrupted, then a higher cap works."""
    before = pyfrag.stats()
    held = []
    with pyfrag.FragCache() as cache:
        first = cache.alloc(32768)
        held.append((first, b"\x01" * 32768))
        first[:] = held[0][1]
        pyfrag.set_option("PYFRAG_LIMIT", max(pyfrag.stats().committed_bytes, 2 << 20))
        try:
            with pytest.raises(MemoryError) as caught:
                for i in range(2000):
                    frag = cache.alloc(32768)
                    fill = bytes([i & 0xFF]) * 32768
                    frag[:] = fill
                    held.append((frag, fill))
            assert caught.value.errno == errno.ENOMEM
            assert all(bytes(frag) == fill for frag, fill in held)
            assert all(frag.page().in_use for frag, _ in held)
        finally:
            pyfrag.set_option("PYFRAG_LIMIT", 0)
        cache.alloc(32768).free()
        for frag, _ in held:
            frag.free()
    pyfrag.thread_flush()
    after = pyfrag.stats()
    assert after.alloc_failures > before.alloc_failures
    assert after.pages_in_use <= before.pages_in_use


def test_bad_fault_settings_are_ignored_or_refused(fault_library):
    out = run_faulty(fault_library, """
print(json.dumps([lib.pf_debug_fault_set(SITES, 1, 1), lib.pf_debug_fault_set(-1, 1, 1)]))
""")
    assert out == [-1, -1]
    proc = run_python("import pyfrag; c = pyfrag.FragCache(); c.alloc(64).free(); print('ok')",
                      env={"PYFRAG_LIBRARY": fault_library, "PYFRAG_FAULT_COMMIT": "x",
                           "PYFRAG_FAULT_META": "1:x", "PYFRAG_FAULT_RESERVE": "-1"})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
