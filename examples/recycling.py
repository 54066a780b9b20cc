#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Recycling in place: when a used-up frag page is reused, and when it is abandoned.

1000 bursts of 16 fragments of 2048 bytes (one 32 KiB frag page per burst),
freed three ways, with the library's counters after each:
- by the owner thread, newest first: every free goes back to the cache's bias
  and moves the offset back, so the same 32 KiB serve every burst;
- by another thread, before the next burst: when the page runs out, every
  fragment is back, and the page is recycled in place;
- by another thread, one burst late (a pipeline): when the page runs out, the
  previous burst is still out, so the page is abandoned and refilled;
- by the owner again, with the cache's spares on (FragCache's default): the
  first burst's 16 fragments are kept and handed out again, so page_frag sees
  16 allocations and no free for the 16000 of Python.

The first three use FragCache(recycle=False), so that every free reaches page_frag.

Contract: prints one "name: counter value, ..." line per way and exits 0.

    PYTHONPATH=. python3 examples/recycling.py
"""
import threading

import pyfrag

BURSTS = 1000
PER_PAGE = 16
SIZE = 2048
COUNTERS = ("allocs", "frees", "bias_frees", "refills", "recycles", "abandons")


def free_elsewhere(frags) -> None:
    thread = threading.Thread(target=lambda: [f.free() for f in frags])
    thread.start()
    thread.join()


def owner_newest_first(cache) -> None:
    for _ in range(BURSTS):
        frags = [cache.alloc(SIZE) for _ in range(PER_PAGE)]
        for frag in reversed(frags):
            frag.free()


def other_thread(cache) -> None:
    for _ in range(BURSTS):
        free_elsewhere([cache.alloc(SIZE) for _ in range(PER_PAGE)])


def other_thread_one_burst_late(cache) -> None:
    previous = []
    for _ in range(BURSTS):
        burst = [cache.alloc(SIZE) for _ in range(PER_PAGE)]
        free_elsewhere(previous)
        previous = burst
    free_elsewhere(previous)


def measure(name, workload, recycle=False) -> None:
    # recycle=False: every free() reaches page_frag; the default keeps freed fragments as
    # the cache's spares for the next alloc() of their size, which hides the algorithm
    with pyfrag.FragCache(recycle=recycle) as cache:
        cache.alloc(1).free()  # the first refill: not part of the picture
        before = pyfrag.stats()
        workload(cache)
        after = pyfrag.stats()
    print("%s: %s" % (name, ", ".join("%s %d" % (c, getattr(after, c) - getattr(before, c))
                                      for c in COUNTERS)))


def main() -> int:
    measure("owner, newest first", owner_newest_first)
    measure("other thread", other_thread)
    measure("other thread, one burst late", other_thread_one_burst_late)
    measure("owner, with the cache's spares (the default)", owner_newest_first, recycle=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
