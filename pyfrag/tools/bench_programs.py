# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag bench --workload programs`: real programs and mimalloc-bench
workloads under pyfrag's routes and the peers; peak RSS and wall time.

Contract:
- setup(names, only) picks the allocators of VARIANTS among `names` (a peer
  that is not installed is skipped with a message), the programs of
  program_set.PROGRAMS (all, or the `only` names; BenchError for an unknown
  one) and which of them cannot run here and why (a command not on PATH,
  our own program not built, mimalloc-bench not given through
  PYFRAG_MIMALLOC_BENCH). BenchError when the launcher or libpyfrag.so is
  missing.
- run(setup, runs, scale, progress) runs every program under every allocator,
  allocators interleaved per program (each program starting with the next
  allocator in turn), `runs` times, each through
  native/bench/programs/launch (peak RSS from wait4's ru_maxrss of the
  program and what it waited for; wall time), and checks each output. A run
  that fails (exit status, timeout, wrong output) is recorded for that
  allocator and program, never raised. Returns the report: the keys of
  pyfrag.tools.bench's report, results["programs"][program][allocator], the
  issue's targets for each pyfrag variant against mimalloc, and "programs"
  (sets, skipped programs, failures, geometric means, notes).
- merge(native, programs) puts a programs report into a report of the other
  workloads; table(report) prints the programs part.
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from . import bench
from .program_set import MIMALLOC_BENCH, OWN, PROGRAMS, SYSTEM, TUNING, HELD_OUT, Context, Program

WORKLOAD = "programs"
ENV_MIMALLOC_BENCH = "PYFRAG_MIMALLOC_BENCH"
ROUTES = {"pyfrag-frag": "frag", "pyfrag-compact": "compact", "pyfrag-adaptive": "adaptive"}
VARIANTS = tuple(ROUTES) + ("glibc", "jemalloc", "mimalloc", "tcmalloc")
BASELINE = "mimalloc"
TARGET_VARIANT = "pyfrag-adaptive"  # the default route: the one the targets are about
LIMITS = {"rss_geomean": 1.2, "rss_worst": 2.0, "time_geomean": 1.0, "time_worst": 1.15}
TIMEOUT = 300.0  # seconds per run at scale 1
NO_MIMALLOC_BENCH = ("mimalloc-bench programs skipped: set %s to the folder of its built benchmarks "
                     "(mimalloc-bench's out/bench, holding alloc-test, cfrac, larson, ...)"
                     % ENV_MIMALLOC_BENCH)


@dataclass
class ProgramsSetup:
    own_dir: str
    launcher: str
    allocators: list
    programs: list
    python: str
    mimalloc_bench: str | None
    skipped: dict = field(default_factory=dict)           # allocator -> why
    skipped_programs: dict = field(default_factory=dict)  # program -> why
    notes: list = field(default_factory=list)


def _python() -> str:
    """A python3 binary (a pyenv shim is a shell script: it would be measured too)."""
    for path in ("/usr/bin/python3", os.path.realpath(sys.executable)):
        if os.access(path, os.X_OK):
            return path
    return sys.executable


def _why_not(program: Program, own_dir: str, mb: str | None) -> str | None:
    if program.source == SYSTEM:
        missing = [c for c in program.needs if not shutil.which(c)]
        return "needs %s (not on PATH)" % ", ".join(missing) if missing else None
    if program.source == OWN:
        path = os.path.join(own_dir, program.needs[0])
        return None if os.access(path, os.X_OK) else "%s not built (scons -Q builds it)" % path
    if mb is None:
        return "mimalloc-bench not given (%s)" % ENV_MIMALLOC_BENCH
    path = os.path.join(mb, program.needs[0])
    return None if os.access(path, os.X_OK) else "%s not found in %s=%s" % (
        program.needs[0], ENV_MIMALLOC_BENCH, mb)


def setup(names: list, only: list | None = None) -> ProgramsSetup:
    folder = bench.bench_dir()
    own_dir = os.path.join(folder, "programs")
    launcher = os.path.join(own_dir, "launch")
    if not os.access(launcher, os.X_OK):
        raise bench.BenchError("%s not found: %s" % (launcher, bench.HOW_TO_BUILD))
    lib = os.path.normpath(os.path.join(folder, os.pardir, "libpyfrag.so"))
    known = {p.name: p for p in PROGRAMS}
    unknown = [n for n in (only or ()) if n not in known]
    if unknown:
        raise bench.BenchError("unknown program(s) %s: choose from %s"
                               % (",".join(unknown), ",".join(known)))
    mb = os.environ.get(ENV_MIMALLOC_BENCH) or None
    result = ProgramsSetup(own_dir, launcher, [], [], _python(), mb)
    for name in (v for v in VARIANTS if v in names):  # the table's order, whatever the user's
        if name in ROUTES:
            if not os.path.isfile(lib):
                raise bench.BenchError("%s not found: %s" % (lib, bench.HOW_TO_BUILD))
            result.allocators.append(bench.Allocator(
                name, lib, options={"PYFRAG_ROUTE": ROUTES[name], "PYFRAG_HUGEPAGES": "thp"}))
        elif name == "glibc":
            result.allocators.append(bench.Allocator(name, None))
        elif name in bench.PEERS:
            path = bench.find_peer(name)
            if path:
                result.allocators.append(bench.Allocator(name, path))
            else:
                result.skipped[name] = ("not installed (apt-get install %s), skipped"
                                        % bench.PEERS[name][1])
    chosen = [known[n] for n in only] if only else list(PROGRAMS)
    for program in chosen:
        why = _why_not(program, own_dir, mb)
        if why:
            result.skipped_programs[program.name] = why
        else:
            result.programs.append(program)
    if mb is None and any(p.source == MIMALLOC_BENCH for p in chosen):
        result.notes.append(NO_MIMALLOC_BENCH)
    if any(a.name in ROUTES for a in result.allocators) and not _knows_routes(lib):
        result.notes.append("%s has no PYFRAG_ROUTE option: pyfrag-frag, pyfrag-compact and "
                            "pyfrag-adaptive run the same allocator" % lib)
    return result


def _knows_routes(lib: str) -> bool:
    """Whether the library reads PYFRAG_ROUTE (its option table holds the name)."""
    try:
        with open(lib, "rb") as f:
            return b"PYFRAG_ROUTE" in f.read()
    except OSError:
        return False


# ---- running --------------------------------------------------------------------

@dataclass
class Sample:
    rss_kib: int | None = None
    seconds: float | None = None
    failure: str | None = None


def _env(alloc, extra: dict, home: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYFRAG_") and k != "LD_PRELOAD"}
    env.update(LC_ALL="C", HOME=home)
    env.update(alloc.options)
    env.update(extra)
    return env


def run_once(setup_: ProgramsSetup, program: Program, ctx: Context, command, alloc,
             scale: float) -> Sample:
    """One run of one program under one allocator, in a folder of its own."""
    folder = tempfile.mkdtemp(prefix="run-", dir=os.path.dirname(ctx.inputs))
    try:
        result = os.path.join(folder, "launch.txt")
        argv = [setup_.launcher, result, alloc.preload or "", *command.argv]
        timeout = TIMEOUT * max(1.0, scale)
        with open(os.path.join(folder, "stdout"), "wb") as out, \
                open(os.path.join(folder, "stderr"), "wb") as err, \
                open(command.stdin or os.devnull, "rb") as stdin:
            proc = subprocess.Popen(argv, cwd=folder, stdin=stdin, stdout=out, stderr=err,
                                    env=_env(alloc, command.env, folder), start_new_session=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return Sample(failure="took longer than %d s" % timeout)
        with open(os.path.join(folder, "stderr"), "rb") as f:
            stderr = f.read().decode("utf-8", "replace").strip()
        if proc.returncode != 0 or not os.path.exists(result):
            return Sample(failure="launch failed (exit %d): %s" % (proc.returncode, stderr[-300:]))
        with open(result) as f:
            fields = f.read().split()
        values = dict(zip(fields[::2], (int(v) for v in fields[1::2])))
        if values["status"] not in command.ok_status:
            return Sample(failure="exit status %d: %s" % (values["status"], stderr[-300:]))
        with open(os.path.join(folder, "stdout"), "rb") as f:
            stdout = f.read()
        wrong = program.check(ctx, stdout)
        if wrong:
            return Sample(failure="wrong output: %s" % wrong)
        seconds = values["wall_ns"] / 1e9
        if program.rate:
            rate = program.rate(stdout, seconds)
            if not rate:
                return Sample(failure="no throughput in its output")
            seconds = 1e6 / rate  # seconds per million operations
        return Sample(values["maxrss_kib"], seconds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(setup_: ProgramsSetup, runs: int, scale: float = 1.0, progress=None) -> dict:
    """Every program under every allocator, interleaved, `runs` times: the report."""
    samples: dict = {}
    load_start = bench._load_average()
    started = time.monotonic()
    skipped = dict(setup_.skipped_programs)
    with tempfile.TemporaryDirectory(prefix="pyfrag-programs-") as top:
        prepared = []
        for program in setup_.programs:
            inputs = os.path.join(top, program.name, "inputs")
            os.makedirs(inputs)
            ctx = Context(scale, inputs, setup_.own_dir, setup_.mimalloc_bench, setup_.python)
            try:
                prepared.append((program, ctx, program.command(ctx)))
            except OSError as exc:
                skipped[program.name] = str(exc)
        total = runs * len(prepared) * len(setup_.allocators)
        done = 0
        allocators = setup_.allocators
        for run_index in range(runs):
            for index, (program, ctx, command) in enumerate(prepared):
                # each program starts with another allocator: whatever the first run after
                # another program pays (a cold page cache, THP compaction) is spread over all
                turn = (run_index + index) % len(allocators)
                for alloc in allocators[turn:] + allocators[:turn]:
                    if progress:
                        progress(done, total, "%s: %s" % (WORKLOAD, program.name), alloc.name)
                    sample = run_once(setup_, program, ctx, command, alloc, scale)
                    samples.setdefault(program.name, {}).setdefault(alloc.name, []).append(sample)
                    done += 1
    report = summarise(setup_, samples, skipped, runs, scale, time.monotonic() - started)
    report["load_average"] = {"start": load_start, "end": bench._load_average()}
    return report


# ---- the report -----------------------------------------------------------------

def _geomean(values: list) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def summarise(setup_: ProgramsSetup, samples: dict, skipped: dict, runs: int, scale: float,
              seconds: float) -> dict:
    results: dict = {}
    failures = []
    for program, per_alloc in samples.items():
        row = {}
        for name, values in per_alloc.items():
            failed = [s.failure for s in values if s.failure]
            if failed:
                row[name] = {"failed": failed[0]}
                failures.append({"program": program, "allocator": name, "why": failed[0]})
                continue
            row[name] = {"median_peak_rss_kib": statistics.median(s.rss_kib for s in values),
                         "median_seconds": statistics.median(s.seconds for s in values),
                         "samples_peak_rss_kib": [s.rss_kib for s in values],
                         "samples_seconds": [round(s.seconds, 4) for s in values]}
        base = row.get(BASELINE, {})
        for entry in row.values():
            for key, ratio in (("median_peak_rss_kib", "ratio_rss_to_mimalloc"),
                               ("median_seconds", "ratio_time_to_mimalloc")):
                if key in entry:
                    entry[ratio] = (entry[key] / base[key]) if base.get(key) else None
        results[program] = row
    groups = {p.name: p.group for p in PROGRAMS}
    summary = {
        "baseline": BASELINE,
        "sets": {name: groups[name] for name in results},
        "what": {p.name: p.what for p in setup_.programs},
        "time_unit": {p.name: ("s per 1M ops" if p.rate else "s") for p in setup_.programs},
        "skipped": skipped,
        "failures": failures,
        "geomeans": geomeans(results, groups, [a.name for a in setup_.allocators]),
        "notes": list(setup_.notes),
    }
    return {
        "schema": bench.SCHEMA,
        "machine": bench.machine(),
        "runs": runs,
        "scale": scale,
        "seconds": round(seconds, 1),
        "allocators": {a.name: a.preload for a in setup_.allocators},
        "options": {a.name: a.options for a in setup_.allocators if a.options},
        "skipped": dict(setup_.skipped),
        "results": {WORKLOAD: results},
        "targets": targets(results, failures, [a.name for a in setup_.allocators]),
        "bounds": [],
        WORKLOAD: summary,
    }


def _ratios(results: dict, name: str, key: str, group: str | None = None, groups=None) -> dict:
    """program -> ratio to mimalloc of allocator `name` (programs of `group`, or all)."""
    out = {}
    for program, row in results.items():
        if group and groups.get(program) != group:
            continue
        ratio = row.get(name, {}).get(key)
        if ratio:
            out[program] = ratio
    return out


def geomeans(results: dict, groups: dict, names: list) -> dict:
    """Per allocator and set (tuning, held-out, all): geometric means of the ratios to mimalloc."""
    out = {}
    for name in names:
        per = {}
        for group in (TUNING, HELD_OUT, None):
            rss = _ratios(results, name, "ratio_rss_to_mimalloc", group, groups)
            tm = _ratios(results, name, "ratio_time_to_mimalloc", group, groups)
            per[group or "all"] = {"programs": len(rss),
                                   "rss": _round(_geomean(list(rss.values()))),
                                   "time": _round(_geomean(list(tm.values())))}
        out[name] = per
    return out


def _round(value):
    return None if value is None else round(value, 3)


def targets(results: dict, failures: list, names: list) -> list:
    """The issue's targets for each pyfrag variant against mimalloc, in bench's target format."""
    out = []
    for name in names:
        if name not in ROUTES or BASELINE not in names:
            continue
        label = "programs %s: %s / mimalloc" % ("%s", name)
        rss = _ratios(results, name, "ratio_rss_to_mimalloc")
        tm = _ratios(results, name, "ratio_time_to_mimalloc")

        def add(what_target, value, limit, what):
            if value is None:
                return
            value = round(value, 3)
            out.append({"target": label % what_target, "ratio": value, "limit": limit,
                        "met": value <= limit, "what": what})

        add("peak RSS geomean", _geomean(list(rss.values())), LIMITS["rss_geomean"],
            "geometric mean of peak RSS ratios over %d programs" % len(rss))
        if rss:
            worst = max(rss, key=rss.get)
            add("peak RSS worst", rss[worst], LIMITS["rss_worst"], "no program above 2x (worst: %s)" % worst)
        add("time geomean", _geomean(list(tm.values())), LIMITS["time_geomean"],
            "geometric mean of wall-time ratios over %d programs" % len(tm))
        if tm:
            worst = max(tm, key=tm.get)
            add("time worst", tm[worst], LIMITS["time_worst"], "no program above 1.15x (worst: %s)" % worst)
        failed = [f["program"] for f in failures if f["allocator"] == name]
        out.append({"target": "programs failed runs: %s" % name, "ratio": len(failed), "limit": 0,
                    "met": not failed, "what": "every program ran and printed the right output"
                    + (" (failed: %s)" % ", ".join(failed) if failed else "")})
    return out


def merge(native: dict, programs: dict) -> dict:
    """One report of both: the programs workload's results, targets and summary added to `native`."""
    out = dict(native)
    out["results"] = dict(native["results"], **programs["results"])
    out["targets"] = list(native["targets"]) + list(programs["targets"])
    for key in ("allocators", "options", "skipped"):
        out[key] = dict(native[key], **programs[key])
    out["seconds"] = round(native["seconds"] + programs["seconds"], 1)
    out["load_average"] = {"start": native["load_average"]["start"],
                           "end": programs["load_average"]["end"]}
    out[WORKLOAD] = programs[WORKLOAD]
    return out


# ---- the table ------------------------------------------------------------------

def _cell(entry: dict | None, key: str, ratio: str, fmt: str) -> str:
    if not entry:
        return "-"
    if "failed" in entry:
        return "FAILED"
    value = entry[key] / 1024 if key == "median_peak_rss_kib" else entry[key]
    r = entry.get(ratio)
    return (fmt if value >= 1 else "%.3f") % value + (" (%.2f)" % r if r is not None else "")


def _format(rows: list) -> list:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)
                      for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]


def table(report: dict) -> str:
    """Peak RSS and wall time per program and allocator, ratios to mimalloc, geomeans, targets."""
    summary = report[WORKLOAD]
    results = report["results"][WORKLOAD]
    names = [n for n in report["allocators"] if n in VARIANTS]
    order = sorted(results, key=lambda p: (summary["sets"][p] != TUNING, list(summary["sets"]).index(p)))
    load = report.get("load_average") or {}
    lines = ["programs: medians of %d run(s), ratio to %s in brackets%s"
             % (report["runs"], BASELINE, "; load average %s -> %s" % (load.get("start"), load.get("end"))
                if load.get("start") is not None else "")]
    for title, key, ratio, fmt, gkey in (
            ("peak RSS, MiB", "median_peak_rss_kib", "ratio_rss_to_mimalloc", "%.1f", "rss"),
            ("wall time, s (throughput programs: s per 1M ops)", "median_seconds",
             "ratio_time_to_mimalloc", "%.2f", "time")):
        rows = [["set", "program"] + names]
        for program in order:
            rows.append([summary["sets"][program], program]
                        + [_cell(results[program].get(n), key, ratio, fmt) for n in names])
        for group in (TUNING, HELD_OUT, "all"):
            rows.append([group, "geomean of ratios"]
                        + ["-" if summary["geomeans"].get(n, {}).get(group, {}).get(gkey) is None
                           else "%.2f" % summary["geomeans"][n][group][gkey] for n in names])
        lines.append("")
        lines.append(title + ":")
        lines += _format(rows)
    for name, why in summary["skipped"].items():
        lines.append("skipped %s: %s" % (name, why))
    for f in summary["failures"]:
        lines.append("FAILED %s under %s: %s" % (f["program"], f["allocator"], f["why"]))
    for note in summary["notes"]:
        lines.append("note: %s" % note)
    ours = [t for t in report["targets"] if t["target"].startswith("programs ")]
    if ours:
        lines.append("")
        lines.append("targets (programs; the issue's are %s's):" % TARGET_VARIANT)
        for t in ours:
            lines.append("  %-4s %-52s %.2f (limit %.2f): %s"
                         % ("met" if t["met"] else "MISS", t["target"], t["ratio"], t["limit"], t["what"]))
    return "\n".join(lines)
