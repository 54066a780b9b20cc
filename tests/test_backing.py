# SPDX-License-Identifier: GPL-2.0-only
"""Chunk backing as the kernel reports it in /proc/self/smaps, not as pyfrag
counts it: hugetlb when 2 MiB pages are reserved, THP and 4 KiB when forced by
PYFRAG_HUGEPAGES, a small process on 4 KiB pages until it passes
PYFRAG_HUGEPAGES_AFTER (4 MiB), and a hugetlb pool running dry failing cleanly.

Each case runs in a fresh process, since backing is chosen per chunk from the
options read at start."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

import pyfrag

MiB = 1 << 20
PACKAGE_PARENT = str(pathlib.Path(pyfrag.__file__).resolve().parent.parent)

# Past the small start (4 MiB, touched), allocate 8 MiB in 32 KiB fragments, touch every
# byte, report the smaps growth of those 8 MiB.
GROWTH = r"""
import ctypes, dataclasses, json, pyfrag
cache = pyfrag.FragCache()
first = [cache.alloc(32768) for _ in range(128)]
for f in first:
    ctypes.memset(f.address, 0x5a, f.size)
before = pyfrag.smaps_totals()
frags = [cache.alloc(32768) for _ in range(256)]
for f in frags:
    ctypes.memset(f.address, 0x5a, f.size)
delta = pyfrag.smaps_totals() - before
print(json.dumps({"delta": dataclasses.asdict(delta), "stats": dataclasses.asdict(pyfrag.stats()),
                  "coverage": dataclasses.asdict(pyfrag.hugepage_coverage())}))
"""

# Fill until the hugetlb pool is dry; then check the arena is still one unbroken reservation.
POOL_DRY = r"""
import json, pyfrag
from pyfrag.stats import arena_range
cache = pyfrag.FragCache()
frags, error = [], None
try:
    while True:
        frags.append(cache.alloc(32768))
except MemoryError as exc:
    error = str(exc)
base, size = arena_range()
covered, cursor = True, base
for line in open("/proc/self/maps"):
    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
    if hi <= base or lo >= base + size:
        continue
    if lo > cursor:
        covered = False
    cursor = max(cursor, hi)
covered = covered and cursor >= base + size
for f in frags:
    f.free()
cache.close()
cache_ok = False
with pyfrag.FragCache() as c2:
    pyfrag.set_option("PYFRAG_HUGEPAGES", "off")
    c2.alloc(32768).free()
    cache_ok = True
print(json.dumps({"frags": len(frags), "error": error, "covered": covered, "after": cache_ok,
                  "stats": __import__("dataclasses").asdict(pyfrag.stats())}))
"""


def meminfo(field):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def thp_enabled():
    try:
        mode = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False
    return "[never]" not in mode


def run(script, **options):
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT, **options)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


needs_hugepages = pytest.mark.skipif(
    meminfo("HugePages_Free") < 8,
    reason="needs at least 8 free 2 MiB hugepages: echo 64 > /proc/sys/vm/nr_hugepages (as root)")


@needs_hugepages
@pytest.mark.parametrize("mode", ["auto", "hugetlb"])
def test_hugetlb_backing_in_smaps(mode):
    result = run(GROWTH, PYFRAG_HUGEPAGES=mode)
    assert result["delta"]["private_hugetlb"] >= 8 * MiB
    # auto: the two small-start chunks are THP once grown (an untouched part faults in huge)
    assert result["delta"]["anon_huge_pages"] <= (4 * MiB if mode == "auto" else 0)
    assert result["stats"]["chunks_hugetlb"] >= 4
    assert result["stats"]["chunks_4k"] == 0
    # auto's small start: the first two chunks began on 4 KiB pages, advised for THP once grown
    assert result["stats"]["chunks_thp"] == (2 if mode == "auto" else 0)
    assert result["coverage"]["private_hugetlb"] >= 8 * MiB


@pytest.mark.skipif(not thp_enabled(), reason="transparent hugepages are disabled ([never])")
def test_thp_backing_in_smaps():
    result = run(GROWTH, PYFRAG_HUGEPAGES="thp")
    assert result["delta"]["anon_huge_pages"] >= 8 * MiB
    assert result["delta"]["private_hugetlb"] == 0
    assert result["stats"]["chunks_thp"] >= 4
    assert result["stats"]["chunks_hugetlb"] == result["stats"]["chunks_4k"] == 0


def test_4k_backing_in_smaps():
    result = run(GROWTH, PYFRAG_HUGEPAGES="off")
    assert result["delta"]["rss"] >= 8 * MiB
    assert result["delta"]["anon_huge_pages"] == 0
    assert result["delta"]["private_hugetlb"] == 0
    assert result["coverage"]["anon_huge_pages"] == 0
    assert result["stats"]["chunks_4k"] >= 4
    assert result["stats"]["chunks_hugetlb"] == result["stats"]["chunks_thp"] == 0


# A small process: 1 MiB touched.
SMALL = r"""
import ctypes, dataclasses, json, pyfrag
before = pyfrag.smaps_totals()
cache = pyfrag.FragCache()
frags = [cache.alloc(32768) for _ in range(32)]
for f in frags:
    ctypes.memset(f.address, 0x5a, f.size)
delta = pyfrag.smaps_totals() - before
print(json.dumps({"delta": dataclasses.asdict(delta), "stats": dataclasses.asdict(pyfrag.stats()),
                  "coverage": dataclasses.asdict(pyfrag.hugepage_coverage())}))
"""


@pytest.mark.parametrize("mode", ["auto", "thp"])
def test_a_small_process_pays_no_hugepage(mode):
    result = run(SMALL, PYFRAG_HUGEPAGES=mode)
    assert result["stats"]["chunks_4k"] >= 1
    assert result["stats"]["chunks_hugetlb"] == result["stats"]["chunks_thp"] == 0
    assert result["delta"]["private_hugetlb"] == 0 and result["delta"]["anon_huge_pages"] == 0
    # the arena's own mappings (the process's delta counts a sanitizer's shadow too):
    # the megabyte it touched, not a 2 MiB page
    assert result["coverage"]["rss"] < 2 * MiB
    assert result["coverage"]["anon_huge_pages"] == result["coverage"]["private_hugetlb"] == 0


@needs_hugepages
def test_hugepages_from_the_first_chunk_when_asked():
    result = run(SMALL, PYFRAG_HUGEPAGES="auto", PYFRAG_HUGEPAGES_AFTER="0")
    assert result["stats"]["chunks_hugetlb"] >= 1 and result["stats"]["chunks_4k"] == 0
    assert result["delta"]["private_hugetlb"] >= 2 * MiB


@pytest.mark.skipif(meminfo("HugePages_Free") > 256,
                    reason="hugetlb pool too large to drain in a test")
def test_hugetlb_pool_running_dry_fails_cleanly():
    free_pages = meminfo("HugePages_Free")
    result = run(POOL_DRY, PYFRAG_HUGEPAGES="hugetlb", PYFRAG_RESERVE="0")
    assert result["error"], "a dry pool must end in MemoryError"
    assert result["covered"], "a failed hugetlb commit must leave the arena reserved"
    assert result["after"], "allocation works again once another backing is allowed"
    assert result["stats"]["chunks_hugetlb"] <= free_pages
    assert result["stats"]["commit_failures"] >= 1


# Parent fills hugetlb chunks until the pool is dry, forks, and the child writes
# every byte: without the fork handler's unsharing the child's copy-on-write
# would need hugepages the pool does not have, and the kernel answers SIGBUS.
FORK_ON_DRY_POOL = r"""
import ctypes, os, pyfrag
cache = pyfrag.FragCache()
frags = []
try:
    while True:
        frags.append(cache.alloc(32768))
except MemoryError:
    pass
for f in frags:
    ctypes.memset(f.address, 0x11, f.size)
pid = os.fork()
if pid == 0:
    for f in frags:
        ctypes.memset(f.address, 0x22, f.size)
    os._exit(0 if all(ctypes.string_at(f.address, 1) == b"\x22" for f in frags) else 3)
_, status = os.waitpid(pid, 0)
parent_intact = all(ctypes.string_at(f.address, 1) == b"\x11" for f in frags)
print(len(frags), os.waitstatus_to_exitcode(status), parent_intact)
"""


@needs_hugepages
@pytest.mark.skipif(meminfo("HugePages_Free") > 256,
                    reason="hugetlb pool too large to drain in a test")
def test_fork_child_writes_hugetlb_memory_with_the_pool_dry():
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT, PYFRAG_HUGEPAGES="hugetlb",
               PYFRAG_RESERVE="0")
    proc = subprocess.run([sys.executable, "-c", FORK_ON_DRY_POOL], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    count, child_exit, parent_intact = proc.stdout.split()
    assert int(count) >= 64 * 8, "the parent should hold several hugetlb chunks"
    assert child_exit == "0", "the child died writing its copy (SIGBUS is -7)"
    assert parent_intact == "True", "the child's writes must not reach the parent"
