#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Statistics and hugepage coverage: what pyfrag counted, and what the kernel says.

Allocates 16 MiB as 2048-byte fragments (NIC-sized RX buffers) and writes every
byte, then prints the library's counters (pyfrag.stats()) next to what
/proc/self/smaps reports for the arena (pyfrag.hugepage_coverage()): on a machine
with reserved hugepages the arena is on hugetlb pages; without, on transparent
hugepages or 4 KiB pages. Then it frees everything and trims, and shows the
memory going back.

Contract: prints "name: value" lines and exits 0; run it as a fresh process
(the options are read at start), e.g. PYFRAG_HUGEPAGES=off to see 4 KiB pages:

    PYTHONPATH=. python3 examples/stats_and_hugepages.py
"""
import ctypes

import pyfrag

FRAG_SIZE = 2048
TOTAL = 16 << 20
MiB = float(1 << 20)


def machine() -> None:
    meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    try:
        thp = open("/sys/kernel/mm/transparent_hugepage/enabled").read().split()
        thp_mode = next(w.strip("[]") for w in thp if w.startswith("["))
    except OSError:
        thp_mode = "unknown"
    mode = next(o.text for o in pyfrag.options() if o.name == "PYFRAG_HUGEPAGES")  # as text
    print("hugetlb pool: %s total, %s free; THP: %s; PYFRAG_HUGEPAGES=%s"
          % (meminfo["HugePages_Total"].strip(), meminfo["HugePages_Free"].strip(), thp_mode, mode))


def fill(cache):
    frags = [cache.alloc(FRAG_SIZE) for _ in range(TOTAL // FRAG_SIZE)]
    for frag in frags:
        ctypes.memset(frag.address, 0xA5, frag.size)  # touch every byte: now it is resident
    return frags


def counters(title: str, s: pyfrag.Stats, base: pyfrag.Stats) -> None:
    print("%s: allocs %d, frees %d, refills %d, recycles %d, abandons %d, order0_fallbacks %d"
          % (title, s.allocs - base.allocs, s.frees - base.frees, s.refills - base.refills,
             s.recycles - base.recycles, s.abandons - base.abandons,
             s.order0_fallbacks - base.order0_fallbacks))
    print("%s: committed %.1f MiB (peak %.1f), chunks hugetlb %d / thp %d / 4k %d, pages_in_use %d"
          % (title, s.committed_bytes / MiB, s.peak_committed_bytes / MiB, s.chunks_hugetlb,
             s.chunks_thp, s.chunks_4k, s.pages_in_use))


def coverage(title: str) -> None:
    c = pyfrag.hugepage_coverage()
    print("%s: arena resident %.1f MiB: hugetlb %.0f%%, THP %.0f%%, 4 KiB %.0f%%"
          % (title, c.resident / MiB, 100 * c.hugetlb_fraction, 100 * c.thp_fraction,
             100 * (1 - c.huge_fraction) if c.resident else 0))


def main() -> int:
    machine()
    base = pyfrag.stats()
    with pyfrag.FragCache() as cache:
        frags = fill(cache)
        counters("filled", pyfrag.stats(), base)
        coverage("filled")
        for frag in frags:
            frag.free()
    by_frees = pyfrag.stats().chunk_releases - base.chunk_releases
    pyfrag.trim()  # flush this thread's page lists (freed pages wait there), release empty chunks
    by_trim = pyfrag.stats().chunk_releases - base.chunk_releases - by_frees
    counters("freed", pyfrag.stats(), base)
    coverage("freed")
    print("chunks back to the OS: %d as their last page was freed, %d by trim(), "
          "PYFRAG_RETAIN=%d stay committed" % (by_frees, by_trim, _option("PYFRAG_RETAIN")))
    return 0


def _option(name: str) -> int:
    return next(o.value for o in pyfrag.options() if o.name == name)


if __name__ == "__main__":
    raise SystemExit(main())
