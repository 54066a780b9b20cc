#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Run udp_pipeline with --alloc pyfrag and --alloc malloc, interleaved, and print medians.

Round after round the two allocators take turns (a slow moment of the machine
hits both alike); the table gives each metric's median over the rounds and the
ratio malloc / pyfrag (> 1: malloc costs more). Arguments after `--` go to every
run of udp_pipeline.

Contract: exit 0 when every run exited 0, 1 otherwise (the failing run's output
is shown), 2 for usage errors; the table goes to stdout, progress to stderr.

    scons && python3 examples/compare_pipeline.py --rounds 7 -- --rate 50000 --duration 2
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOCATORS = ("pyfrag", "malloc")
METRICS = ("sent", "delivered", "drops", "avg_rx_burst", "alloc_ns", "free_ns", "rx_ns",
           "worker_ns", "ns_per_pkt", "cpu_ns_per_pkt")
LINE = re.compile(r"^(\w+)\s+(-?[0-9.]+)\s")


def parse(output: str) -> dict:
    return {m.group(1): float(m.group(2)) for m in map(LINE.match, output.splitlines()) if m}


def run_once(program: str, alloc: str, extra: list) -> dict:
    run = subprocess.run([program, "--alloc", alloc] + extra, capture_output=True, text=True,
                         timeout=120)
    if run.returncode != 0:
        sys.stderr.write(run.stdout + run.stderr)
        raise SystemExit(1)
    return parse(run.stdout)


def table(results: dict) -> None:
    print("%-16s %12s %12s %8s" % ("median of %d" % len(results["pyfrag"]), *ALLOCATORS,
                                   "ratio"))
    for metric in METRICS:
        pyfrag, malloc = (statistics.median(r[metric] for r in results[a]) for a in ALLOCATORS)
        ratio = "%8.2f" % (malloc / pyfrag) if pyfrag else "%8s" % "-"
        print("%-16s %12.1f %12.1f %s" % (metric, pyfrag, malloc, ratio))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="runs per allocator (7)")
    parser.add_argument("--mode", default="release", help="SCons build mode to run (release)")
    parser.add_argument("args", nargs="*", help="udp_pipeline arguments, after --")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    program = os.path.join(ROOT, "build", args.mode, "examples", "udp_pipeline")
    if not os.access(program, os.X_OK):
        parser.error("%s is missing: build it with `scons mode=%s examples`" % (program, args.mode))
    results = {a: [] for a in ALLOCATORS}
    for round_ in range(args.rounds):
        for alloc in ALLOCATORS:
            print("round %d/%d: %s" % (round_ + 1, args.rounds, alloc), file=sys.stderr)
            results[alloc].append(run_once(program, alloc, args.args))
    table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
