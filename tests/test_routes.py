# SPDX-License-Identifier: GPL-2.0-only
"""The malloc front's routes (PYFRAG_ROUTE) under LD_PRELOAD.

- compact: small blocks come from slab pages (no header); long-lived blocks
  among temporaries take a fraction of the memory page_frag pins;
- adaptive: learns the call sites whose blocks pin frag pages and moves them
  (site moves, sites on compact), yet a producer -> ring -> consumer program
  stays on page_frag; the pinning cap sends everything to compact;
- every route: medium requests cost at most 1/8 (slab classes) or 4 KiB
  (exact page runs) more than asked; blocks handed to another thread by
  threads that exit are freed later without loss; C++'s operator new and
  delete (every form) keep the standard's failure behaviour;
- misuse of a compact block (double free, interior pointer, a block nobody
  was handed) aborts with pyfrag's message.

Programs: native/tests/preload/routes.c and cxx_new.cc, never instrumented.
"""
from __future__ import annotations

import re
import signal

import pytest

from pyfrag.preload import parse_stats_summaries
from conftest import MODE
from test_preload import plain_env, programs, pyfrag_env, run  # noqa: F401 (fixture)

ROUTES = ("adaptive", "frag", "compact")


def routed(programs, case, route, **options):
    """Run routes.c's case under pyfrag on a route; (completed process, its summary counters)."""
    done = run([str(programs / "routes"), case], pyfrag_env(stats=True, route=route, **options))
    assert done.returncode == 0, done.stdout + done.stderr
    summaries = [s for s in parse_stats_summaries(done.stderr) if s["program"] == "routes"]
    assert len(summaries) == 1, done.stderr
    return done, summaries[0]["counters"]


def peak_kib(done) -> int:
    found = re.search(r"peak_rss_kib (\d+)", done.stdout)
    assert found, done.stdout
    return int(found.group(1))


def test_compact_route_serves_small_blocks_from_slab_pages(programs):
    done, counters = routed(programs, "longlived", "compact", hugepages="off")
    assert counters["allocations compact (slab)"] >= 2_200_000
    assert counters["allocations small (page_frag)"] == 0
    assert counters["routes slab pages"] > 0  # kept at exit: the program never freed its calloc


def test_long_lived_blocks_pin_far_less_off_page_frag(programs):
    # 4 KiB backing: hugetlb pages are not part of RSS, and the point is what RSS does
    base = peak_kib(run([str(programs / "routes"), "longlived"], plain_env()))
    frag = peak_kib(routed(programs, "longlived", "frag", hugepages="off")[0])
    compact = peak_kib(routed(programs, "longlived", "compact", hugepages="off")[0])
    adaptive, counters = routed(programs, "longlived", "adaptive", hugepages="off")
    # 100,000 live 64-byte blocks are 6.4 MB: frag pages hold them at one straggler per page
    assert compact < frag * 0.6, (base, frag, compact)
    assert compact < base * 1.5 + 4096, (base, compact)
    assert peak_kib(adaptive) < frag * 0.8, (frag, peak_kib(adaptive))
    assert counters["routes site moves to compact"] >= 1 or counters["routes pin cap engaged"] >= 1


def test_adaptive_learns_the_pinning_site_and_keeps_the_temporaries_on_page_frag(programs):
    # a cap this high never engages: only the learning moves anything
    _, counters = routed(programs, "longlived", "adaptive", pin_max="64G")
    assert counters["routes pin cap engaged"] == 0
    assert counters["routes site moves to compact"] >= 1
    assert counters["routes sites on compact"] >= 1
    assert counters["allocations compact (slab)"] > 0
    # the temporaries (ten per kept block) are not what pinned: most stay on page_frag
    assert counters["allocations small (page_frag)"] > counters["allocations compact (slab)"]


def test_pin_cap_sends_small_requests_to_compact(programs):
    _, counters = routed(programs, "longlived", "adaptive", pin_max="256K", pin_age="100000")
    assert counters["routes pin cap engaged"] >= 1
    assert counters["allocations compact (slab)"] > 1_000_000


def test_ring_stays_on_page_frag_under_adaptive(programs):
    done, counters = routed(programs, "ring", "adaptive")
    frag_done, _ = routed(programs, "ring", "frag")
    assert done.stdout == frag_done.stdout and done.stdout.startswith("checksum ")
    assert counters["allocations small (page_frag)"] >= 1_000_000
    assert counters["routes site moves to compact"] == 0
    assert counters["routes pin cap engaged"] == 0
    assert counters["allocations compact (slab)"] < 10_000


@pytest.mark.parametrize("route", ROUTES)
def test_medium_requests_cost_little_more_than_asked(programs, route):
    done, _ = routed(programs, "medium", route)
    assert done.stdout == "ok\n"


@pytest.mark.parametrize("route", ROUTES)
def test_blocks_of_exited_threads_are_freed_later(programs, route):
    done, counters = routed(programs, "handoff", route)
    assert done.stdout == "ok\n"
    assert counters["routes abandoned slab pages"] == 0  # the last free of each gave it back
    assert counters["memory threads"] == 1


@pytest.mark.parametrize("route", ROUTES)
def test_cxx_new_and_delete(programs, route):
    # Under CI's ASan pass the operator new after pyfrag's is the runtime's, which aborts on
    # no memory instead of throwing: the failure half (bad_alloc, new-handler, nothrow) is
    # the plain runs' to show.
    argv = [str(programs / "cxx_new")] + (["no-oom"] if MODE == "asan" else [])
    done = run(argv, pyfrag_env(stats=True, route=route))
    base = run(argv, plain_env())
    assert base.returncode == 0 and base.stdout.startswith("ok "), base.stdout
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == base.stdout
    counters = [s for s in parse_stats_summaries(done.stderr) if s["program"] == "cxx_new"][0]["counters"]
    served = counters["allocations small (page_frag)"] + counters["allocations compact (slab)"]
    assert served > 1_000_000  # new reached pyfrag
    if route == "adaptive":
        # map nodes and temporary strings share a size class: told apart only by new's caller
        assert counters["allocations small (page_frag)"] > 0
        assert counters["allocations compact (slab)"] > 0


@pytest.mark.parametrize("kind, message", [
    ("double", "double free detected"),
    ("interior", "invalid pointer"),
    ("uncarved", "invalid pointer"),
])
def test_compact_misuse_aborts_with_a_message(programs, kind, message):
    done = run([str(programs / "routes"), "misuse-" + kind], pyfrag_env(route="compact"))
    assert done.returncode == -signal.SIGABRT, done.stdout + done.stderr
    assert "pyfrag: free(): " + message in done.stderr
    assert "survived" not in done.stdout
