# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag bench`: pyfrag side by side with glibc, jemalloc, mimalloc and tcmalloc.

Contract: add_parser(subparsers) registers the command; run(args) runs the
benchmark programs (pyfrag.tools.bench) with the allocators interleaved, shows
progress on stderr, prints one table of medians and ratios to pyfrag on
stdout (stderr when --json - takes stdout), and returns 0 when every program
ran, 1 when the programs are missing or one failed, 2 for a usage error
(including --plot without matplotlib), 130 when interrupted. A peer that is
not installed is skipped with a message on stderr. The programs workload
(pyfrag.tools.bench_programs) runs after the others, with the allocators of
its own list, prints a table of its own and adds its results to the same
report; a program that fails its output check under an allocator is shown
in the table and makes the exit code 1. Missed targets are
reported in the table, not in the exit code: this is a measurement.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..tools import bench, bench_programs, bench_python
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
  programs real programs and mimalloc-bench workloads (not run by default: minutes)
           under pyfrag-frag, pyfrag-compact, pyfrag-adaptive (PYFRAG_ROUTE, THP),
           glibc and the peers: peak RSS and wall time, ratios to mimalloc, the
           tuning and held-out sets; mimalloc-bench's built programs are read
           from %s (skipped with a message without it)
  python   (not in the default set) what a Python packet loop pays: pyfrag's
           per-fragment and burst calls and SharedRing against bytearray, slices
           of a preallocated bytearray, multiprocessing.Queue with bytes and
           shared_memory offsets through a Queue (pyfrag.tools.bench_python)
  dpdk     (needs DPDK; only when asked for) mbufs with packet buffers four ways,
           in one EAL process (--no-huge --no-pci, lcores 0-1): mempool (2048
           room; 9216 for jumbo), pyfrag extbuf (pyfrag_dpdk.h), rte_malloc
           extbuf, glibc extbuf; imix 64/576/1500 at 7:4:1 and jumbo 9000;
           burst (one lcore) and pipeline (lcore -> rte_ring -> lcore); ns per
           packet and bytes per packet in flight, ratios to pyfrag
allocators: %s (peers: apt-get install %s)
exit: 0 ran, 1 programs missing or failed, 2 usage, 130 interrupted.""" % (
    bench_programs.ENV_MIMALLOC_BENCH, ",".join(bench.ALLOCATORS + bench_programs.VARIANTS[:3]),
    " ".join(pkg for _, pkg in bench.PEERS.values()))


WORKLOADS = tuple(bench.WORKLOADS) + (bench_programs.WORKLOAD, bench_python.WORKLOAD)
ALLOCATORS = tuple(dict.fromkeys(bench.ALLOCATORS + bench_programs.VARIANTS))


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
    add("--workload", type=_list(WORKLOADS), default=list(bench.DEFAULT_WORKLOADS),
        metavar="W[,W...]", help="workloads to run (default: %s): %s"
        % (",".join(bench.DEFAULT_WORKLOADS), ",".join(WORKLOADS)))
    add("--allocators", type=_list(ALLOCATORS), default=list(ALLOCATORS),
        metavar="A[,A...]", help="allocators (default: all installed)")
    add("--runs", type=_positive(int), default=5, help="runs of each allocator (default 5)")
    add("--scale", type=_positive(float), default=1.0,
        help="multiply every program's op count (default 1; tests use 0.01)")
    add("--programs", type=_list(tuple(p.name for p in bench_programs.PROGRAMS)),
        metavar="P[,P...]", help="the programs workload runs only these (default: all)")
    add("--json", metavar="PATH", help="also write the report as JSON to PATH (- for stdout)")
    add("--plot", metavar="PATH.png", help="bar chart of the medians (needs matplotlib)")
    parser.set_defaults(run=run)




def _setups(args):
    """(native setup or None, programs setup or None): each workload with the allocators it knows."""
    native_workloads = [w for w in args.workload if w in bench.WORKLOADS]
    native = programs = None
    if native_workloads:
        names = [n for n in args.allocators if n in bench.ALLOCATORS]
        if not names:
            raise bench.BenchError("no allocator for %s among %s (choose from %s)"
                                   % (",".join(native_workloads), ",".join(args.allocators),
                                      ",".join(bench.ALLOCATORS)))
        native = bench.setup(names, native_workloads)
    if bench_programs.WORKLOAD in args.workload:
        names = [n for n in args.allocators if n in bench_programs.VARIANTS]
        if not names:
            raise bench.BenchError("no allocator for programs among %s (choose from %s)"
                                   % (",".join(args.allocators), ",".join(bench_programs.VARIANTS)))
        programs = bench_programs.setup(names, args.programs)
    return native, programs


def run(args) -> int:
    plt = None
    if args.plot:
        plt = load_pyplot()
        if plt is None:
            print("pyfrag bench: error: --plot needs matplotlib (pip install matplotlib)",
                  file=sys.stderr)
            return 2
    out = sys.stderr if args.json == "-" else sys.stdout
    if not [w for w in args.workload if w != bench_python.WORKLOAD]:
        return _run_python(args, out, None)
    try:
        native, programs = _setups(args)
    except bench.BenchError as exc:
        print("pyfrag bench: error: %s" % exc, file=sys.stderr)
        return 1
    skipped = dict(native.skipped if native else {}, **(programs.skipped if programs else {}))
    for name, why in skipped.items():
        print("pyfrag bench: %s %s" % (name, why), file=sys.stderr)
    if programs:
        for note in programs.notes:
            print("pyfrag bench: %s" % note, file=sys.stderr)
    if (native and not native.allocators) or (programs and not programs.allocators):
        print("pyfrag bench: error: no allocator to run", file=sys.stderr)
        return 1
    tty = sys.stderr.isatty()

    def progress(done, total, workload, name):
        line = "[%d/%d] %s under %s" % (done + 1, total, workload, name)
        if tty:
            print("\r\033[K" + line, end="", file=sys.stderr, flush=True)

    report = programs_report = None
    if plt is not None and not native:
        print("pyfrag bench: error: --plot draws the ns-per-op workloads, not programs",
              file=sys.stderr)
        return 2
    try:
        if native:
            report = bench.run(native, [w for w in args.workload if w in bench.WORKLOADS],
                               args.runs, args.scale, progress)
        if programs:
            programs_report = bench_programs.run(programs, args.runs, args.scale, progress)
    except bench.BenchError as exc:
        print(("\n" if tty else "") + "pyfrag bench: error: %s" % exc, file=sys.stderr)
        return 1
    finally:
        if tty:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
    tables = []
    if report:
        tables.append(bench.table(report))
        if plt is not None:
            bench.plot(report, args.plot, plt)
    if programs_report:
        tables.append(bench_programs.table(programs_report))
        report = bench_programs.merge(report, programs_report) if report else programs_report
    print("\n\n".join(tables), file=out)
    failed = 1 if programs_report and programs_report[bench_programs.WORKLOAD]["failures"] else 0
    if bench_python.WORKLOAD in args.workload:
        return max(failed, _run_python(args, out, report))
    _write_json(args, report)
    return failed


def _write_json(args, report) -> None:
    if args.json == "-":
        json.dump(report, sys.stdout, indent=2)
        print()
    elif args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")


def _run_python(args, out, other_report) -> int:
    """The python workload (its own process and timing); its report joins the others'."""
    try:
        report = bench_python.run(args.runs, args.scale)
    except Exception as exc:  # noqa: BLE001 - a measurement that failed, said plainly
        print("pyfrag bench: error: python workload: %s" % exc, file=sys.stderr)
        return 1
    print(bench_python.table(report), file=out)
    if other_report is not None:
        other_report["python"] = report
        report = other_report
    _write_json(args, report)
    return 0
