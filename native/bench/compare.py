#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Compare allocators under the malloc benchmarks in this folder.

Runs each benchmark program (built by SCons into build/<mode>/bench/) with
LD_PRELOAD set to each allocator in turn, round after round so that the
allocators are interleaved in time (a slow moment of the machine hits all of
them alike), and prints per benchmark the median ns per op of each allocator
and its ratio to pyfrag (> 1: slower than pyfrag).

    python3 native/bench/compare.py [--rounds 7] [--mode release] [--json FILE]

Allocators: glibc (no preload), pyfrag (build/<mode>/libpyfrag.so), and
jemalloc / mimalloc when their Debian packages are installed
(libjemalloc2, libmimalloc2.0); missing ones are skipped with a note.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIBDIR = "/usr/lib/x86_64-linux-gnu"
CANDIDATES = {
    "jemalloc": [LIBDIR + "/libjemalloc.so.2"],
    "mimalloc": [LIBDIR + "/libmimalloc.so.2", LIBDIR + "/libmimalloc.so.2.0"],
}
BENCHES = {"burst": ["bench_burst"], "ring": ["bench_ring"]}
RESULT = re.compile(r"ns_per_op ([0-9.]+)")


def allocators(mode):
    found = {"glibc": "", "pyfrag": os.path.join(ROOT, "build", mode, "libpyfrag.so")}
    for name, paths in CANDIDATES.items():
        path = next((p for p in paths if os.path.exists(p)), None)
        if path:
            found[name] = path
        else:
            print("note: %s not installed (apt-get install %s), skipped"
                  % (name, "libjemalloc2" if name == "jemalloc" else "libmimalloc2.0"), file=sys.stderr)
    return found


def run_once(program, preload):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYFRAG_")}
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    out = subprocess.run(program, env=env, capture_output=True, text=True, check=True).stdout
    return float(RESULT.search(out).group(1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--mode", default="release")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    allocs = allocators(args.mode)
    bench_dir = os.path.join(ROOT, "build", args.mode, "bench")
    samples = {b: {a: [] for a in allocs} for b in BENCHES}
    for _ in range(args.rounds):
        for bench, program in BENCHES.items():
            for name, path in allocs.items():
                samples[bench][name].append(run_once([os.path.join(bench_dir, program[0])] + program[1:], path))
    report = {}
    for bench in BENCHES:
        med = {a: statistics.median(v) for a, v in samples[bench].items()}
        report[bench] = {"median_ns_per_op": med, "samples": samples[bench],
                         "ratio_to_pyfrag": {a: med[a] / med["pyfrag"] for a in med}}
        print("%-6s %s" % (bench, "  ".join("%s %.1f ns (x%.2f)" % (a, med[a], med[a] / med["pyfrag"])
                                            for a in med)))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
