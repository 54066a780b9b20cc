# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag bench`: pyfrag side by side with glibc, jemalloc, mimalloc and tcmalloc.

Contract: add_parser(subparsers) registers the command; run(args) runs the
benchmark programs (pyfrag.tools.bench) with the allocators interleaved, shows
progress on stderr, prints one table of medians and ratios to pyfrag on
stdout (stderr when --json - takes stdout), and returns 0 when every program
ran, 1 when the programs are missing or one failed, 2 for a usage error
(including --plot without matplotlib), 130 when interrupted. A peer that is
not installed is skipped with a message on stderr. Missed targets are
reported in the table, not in the exit code: this is a measurement.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..tools import bench
from ..tools.plot import load_pyplot

DESCRIPTION = """\
Run the benchmark programs of native/bench (built by `scons -Q` into
build/release/bench/) under each allocator, interleaved (A B C A B C ...),
RUNS times each, and print the median ns per op of every allocator with its
ratio to pyfrag. pyfrag and the peers run the plain malloc programs under
LD_PRELOAD; pyfrag-4k is pyfrag with PYFRAG_FRAG_ORDER=0 (4 KiB frag pages:
less memory pinned, more refills); pyfrag-api runs the same loops through
pyfrag's C API (the inline fast paths of pyfrag.h on the thread's default
cache, pf_free on other threads). The header line gives the machine's load
average before and after: the ring is sensitive to other processes."""

EPILOG = """\
workloads:
  ring     producer thread -> 512-slot SPSC ring -> consumer thread on the other
           core (the kernel's page_frag_test): sizes 12, 75, 2048 and imix,
           plain and 64-byte aligned, and the ring with no allocation (floor)
  burst    one thread: bursts of 32 imix buffers touched then freed; and
           single alloc+free pairs; the same loops with no allocator (-floor)
           and a bare bump allocator (pair-bump), for the bounds lines
  threads  1, 2 and 4 threads running bursts on their own (scaling)
  churn    a window of 32768 live buffers with random lifetimes; peak RSS over
           peak live bytes and over the 32 KiB blocks live buffers pin
  dpdk     (needs DPDK; only when asked for) mbufs with packet buffers four ways,
           in one EAL process (--no-huge --no-pci, lcores 0-1): mempool (2048
           room; 9216 for jumbo), pyfrag extbuf (pyfrag_dpdk.h), rte_malloc
           extbuf, glibc extbuf; imix 64/576/1500 at 7:4:1 and jumbo 9000;
           burst (one lcore) and pipeline (lcore -> rte_ring -> lcore); ns per
           packet and bytes per packet in flight, ratios to pyfrag
allocators: %s (peers: apt-get install %s)
exit: 0 ran, 1 programs missing or failed, 2 usage, 130 interrupted.""" % (
    ",".join(bench.ALLOCATORS), " ".join(pkg for _, pkg in bench.PEERS.values()))


def _list(choices):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError("%s: choose from %s"
                                             % (",".join(bad) or "empty", ",".join(choices)))
        return list(dict.fromkeys(items))
    return parse


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a number" % text) from None
        if value <= 0 or (kind is int and value > 1000):
            raise argparse.ArgumentTypeError("%s is out of range" % text)
        return value
    return parse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="benchmarks side by side with glibc, jemalloc, mimalloc, tcmalloc",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--workload", type=_list(tuple(bench.WORKLOADS)), default=list(bench.DEFAULT_WORKLOADS),
        metavar="W[,W...]", help="workloads to run (default: all but dpdk): %s" % ",".join(bench.WORKLOADS))
    add("--allocators", type=_list(bench.ALLOCATORS), default=list(bench.ALLOCATORS),
        metavar="A[,A...]", help="allocators (default: all installed)")
    add("--runs", type=_positive(int), default=5, help="runs of each allocator (default 5)")
    add("--scale", type=_positive(float), default=1.0,
        help="multiply every program's op count (default 1; tests use 0.01)")
    add("--json", metavar="PATH", help="also write the report as JSON to PATH (- for stdout)")
    add("--plot", metavar="PATH.png", help="bar chart of the medians (needs matplotlib)")
    parser.set_defaults(run=run)




def run(args) -> int:
    plt = None
    if args.plot:
        plt = load_pyplot()
        if plt is None:
            print("pyfrag bench: error: --plot needs matplotlib (pip install matplotlib)",
                  file=sys.stderr)
            return 2
    out = sys.stderr if args.json == "-" else sys.stdout
    try:
        setup = bench.setup(args.allocators, args.workload)
    except bench.BenchError as exc:
        print("pyfrag bench: error: %s" % exc, file=sys.stderr)
        return 1
    for name, why in setup.skipped.items():
        print("pyfrag bench: %s %s" % (name, why), file=sys.stderr)
    if not setup.allocators:
        print("pyfrag bench: error: no allocator to run", file=sys.stderr)
        return 1
    tty = sys.stderr.isatty()

    def progress(done, total, workload, name):
        line = "[%d/%d] %s under %s" % (done + 1, total, workload, name)
        if tty:
            print("\r\033[K" + line, end="", file=sys.stderr, flush=True)

    try:
        report = bench.run(setup, args.workload, args.runs, args.scale, progress)
    except bench.BenchError as exc:
        print(("\n" if tty else "") + "pyfrag bench: error: %s" % exc, file=sys.stderr)
        return 1
    finally:
        if tty:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
    print(bench.table(report), file=out)
    if args.json == "-":
        json.dump(report, sys.stdout, indent=2)
        print()
    elif args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    if plt is not None:
        bench.plot(report, args.plot, plt)
    return 0
