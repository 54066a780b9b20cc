# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag stress`: worker processes hammer the allocator, RSS watched, invariants checked.

Contract: add_parser(subparsers) registers the command; run(args) runs the
harness (pyfrag.stress), shows live progress on stderr (redrawn in place
only on a TTY), prints a per-worker table and every violation on stdout
(stderr when --json - takes stdout), and returns 0 when every check held,
1 when one failed, 2 for a usage error (including --plot without
matplotlib), 130 when interrupted (every worker stopped first).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

from . import stress, stress_shared
from ._plot import load_pyplot
from .stress import MiB

DESCRIPTION = """\
Run a native allocation workload in WORKERS processes (2 x PAIRS threads each,
looping in C through the public API), sample every worker's resident memory,
and check afterwards, in every worker: every fragment freed, no page in use
after drain, committed chunks back to PYFRAG_RETAIN, the library's counters
matching the workload, no corrupted fragment; and from the parent: no worker
crashed or hung; final RSS <= pre-run RSS + PYFRAG_RETAIN x 2 MiB + peak
committed / 256 (page metadata, kept) + RSS slack.
Every violation is listed; the exit code is 0 if there are none, else 1."""

EPILOG = """\
workloads:
  ring    producer threads allocate and push through SPSC rings to consumer
          threads that verify and free (the kernel's page_frag_test)
  burst   run-to-completion bursts of 32 from each thread's default cache
  churn   each thread replaces random fragments in a table of 1024: random lifetimes
  mixed   ring pairs that also run burst and churn steps on the same caches
sizes: imix (64/576/1500 bytes at 7:4:1), N, MIN-MAX, or a file of sizes
  (whitespace separated, # comments). RSS is psutil's rss + hugetlb pages.
--shared: PRODUCERS producer processes and CONSUMERS consumer processes attach
  to one shared arena (hugetlbfs, else /dev/shm) and exchange fragments as
  offsets through one SPSC ring per producer/consumer pair, the rings
  themselves fragments of the arena. Checked: every fragment produced freed
  exactly once, no corruption, no failed allocation or invalid free, the
  arena's pages_in_use back to its start value once every process detached,
  per process peak RSS <= pre-run + the mapping + slack, final RSS (after
  detaching) <= pre-run + slack. --fault-kill-consumer S SIGKILLs consumer 0
  S seconds into its run: the producers drain its rings, the harness reaps
  it, and the run passes (exit 0) if the survivors met every check and the
  loss is within what the dead consumer held (at most one fragment, and the
  32 KiB frag page it pins), shown on the "fault:" line.
exit: 0 all checks held, 1 a check failed, 2 usage, 130 interrupted."""


# ---- arguments -----------------------------------------------------------------

def _count(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError("%d is not in %d..%d" % (value, low, high))
        return value
    return parse


def _seconds(low: float, high: float):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a number of seconds" % text) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError("%s s is not in %g..%g s" % (text, low, high))
        return value
    return parse


def _sizes(text: str):
    try:
        return stress.parse_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "stress", help="multiprocess stress test with RSS monitoring and invariant checks",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--workload", choices=stress.WORKLOADS, default=None,
        help="what the threads do (mixed)")
    add("--workers", type=_count(1, 256), default=None, metavar="N",
        help="worker processes (the CPU count: %d)" % stress.default_workers())
    add("--pairs", type=_count(1, 1024), default=None, metavar="N",
        help="thread pairs per worker: 2N threads (1)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--duration", type=_seconds(0.01, 86400), default=stress.DEFAULT_DURATION,
                        metavar="SECONDS", help="how long each worker runs (%(default)s)")
    length.add_argument("--ops", type=_count(1, 2**62), default=0, metavar="N",
                        help="fragments per worker, instead of a duration")
    add("--sizes", type=_sizes, default="imix", metavar="SPEC",
        help="imix, N, MIN-MAX or FILE (imix)")
    add("--seed", type=_count(0, 2**32), default=1, metavar="N", help="random seed (1)")
    add("--start-method", choices=stress.START_METHODS, default="spawn",
        help="how workers are started (spawn)")
    add("--interval", type=_seconds(0.01, 10), default=stress.DEFAULT_INTERVAL, metavar="SECONDS",
        help="RSS sampling and progress period (%(default)s)")
    add("--rss-slack", type=_count(0, 1 << 20), default=stress.DEFAULT_RSS_SLACK // MiB,
        metavar="MIB", help="RSS bound: final RSS <= pre-run RSS + PYFRAG_RETAIN x 2 MiB + "
        "peak committed / 256 + MIB (%(default)s)")
    add("--timeout", type=_seconds(0.1, 10**6), default=0.0, metavar="SECONDS",
        help="a worker alive this long after the start is hung (duration + %d s; %d s with --ops)"
        % (stress.DEFAULT_TIMEOUT_EXTRA, stress.DEFAULT_OPS_TIMEOUT))
    add("--json", metavar="PATH", help="also write the results as JSON to PATH (- for stdout)")
    add("--plot", metavar="PATH.png", help="draw RSS over time per worker (needs matplotlib: "
        "pip install 'pyfrag[plot]')")
    add("-q", "--quiet", action="store_true", help="no live progress")
    add("--cmd", metavar='"PROGRAM ARGS"', type=_command,
        help="instead of the native workloads, run WORKERS instances of PROGRAM under the "
        "preload (PYFRAG_STATS=1), sample their RSS and hugepages, collect pyfrag's statistics "
        "from each, and judge exit status, signals, failed allocations and invalid frees")
    shared = parser.add_argument_group("shared arena (--shared)")
    shared.add_argument("--shared", action="store_true",
                        help="producer and consumer processes over one shared arena, instead of "
                        "the workloads")
    shared.add_argument("--producers", type=_count(1, 16), default=None, metavar="N",
                        help="producer processes (%d)" % stress_shared.DEFAULT_PRODUCERS)
    shared.add_argument("--consumers", type=_count(1, 16), default=None, metavar="N",
                        help="consumer processes (%d)" % stress_shared.DEFAULT_CONSUMERS)
    shared.add_argument("--backing", choices=("auto", "hugetlb", "thp", "4k"), default=None,
                        help="the arena's memory (auto: hugetlb, else THP, else 4 KiB)")
    shared.add_argument("--arena-size", type=_count(2, 1 << 20), default=None, metavar="MIB",
                        help="the arena's size (auto: every ring full of the largest size, "
                        "twice, at least 16 MiB)")
    faults = parser.add_argument_group("fault injection (tests the checks themselves)")
    faults.add_argument("--fault-leak", type=_count(1, 2**62), default=0, metavar="N",
                        help="workers leak every Nth fragment (at most %d per worker)"
                        % stress.LEAK_MAX)
    faults.add_argument("--fault-crash", nargs="?", const=0, type=_count(0, 255), metavar="WORKER",
                        help="worker WORKER (0) dies of SIGSEGV halfway through its run")
    faults.add_argument("--fault-kill-consumer", type=_seconds(0.001, 86400), default=None,
                        metavar="SECONDS", help="--shared: SIGKILL consumer 0 SECONDS after its "
                        "start; exit 0 if the survivors pass and the loss is what it held")
    parser.set_defaults(run=run)


def _command(text: str) -> tuple:
    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError("cannot split %r: %s" % (text, exc)) from None
    if not argv:
        raise argparse.ArgumentTypeError("needs a program to run")
    return argv


def job_from(args, params: stress.Params):
    """The job each worker runs: the native workload, the --cmd program, or --shared's."""
    if args.shared:
        return stress_shared.SharedJob(
            params, args.producers or stress_shared.DEFAULT_PRODUCERS,
            args.consumers or stress_shared.DEFAULT_CONSUMERS, backing=args.backing or "auto",
            kill_after=args.fault_kill_consumer or 0.0, size=(args.arena_size or 0) * MiB)
    if not args.cmd:
        return None  # stress.run's default, the native job
    from .stress_cmd import CommandJob
    return CommandJob(args.cmd, params.deadline)


def params_from(args) -> stress.Params:
    if args.shared:
        workers = (args.producers or stress_shared.DEFAULT_PRODUCERS) + \
            (args.consumers or stress_shared.DEFAULT_CONSUMERS)
    else:
        workers = args.workers or stress.default_workers()
    return stress.Params(
        workload=args.workload or "mixed", workers=workers, pairs=args.pairs or 1,
        duration=args.duration, ops=args.ops, sizes=args.sizes, seed=args.seed,
        start_method=args.start_method, interval=args.interval, rss_slack=args.rss_slack * MiB,
        timeout=args.timeout, fault_leak=args.fault_leak,
        fault_crash=-1 if args.fault_crash is None else args.fault_crash)


def _usage_error(message: str) -> int:
    print("pyfrag stress: error: %s" % message, file=sys.stderr)
    return 2




# ---- live progress (stderr) ------------------------------------------------------------

def _mib(n) -> str:
    return "-" if n is None else "%.1f MiB" % (n / MiB)


def _si(n) -> str:
    if n is None:
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return "%.2f%s" % (n / scale, suffix)
    return "%.0f" % n


class ProgressView:
    """Per-worker ops/s and RSS on stderr: redrawn in place on a TTY, a line a second otherwise."""

    REDRAW_PERIOD = 0.1
    LINE_PERIOD = 1.0

    def __init__(self, stream, params: stress.Params, tty: bool | None = None):
        self.stream = stream
        self.params = params
        self.tty = stream.isatty() if tty is None else tty
        self.drawn = 0
        self.last = None

    def _due(self, elapsed: float) -> bool:
        period = self.REDRAW_PERIOD if self.tty else self.LINE_PERIOD
        if self.last is not None and elapsed - self.last < period:
            return False
        self.last = elapsed
        return True

    def _total(self) -> str:
        p = self.params
        return "%d ops/worker" % p.ops if p.ops else "%.1f s" % p.duration

    def update(self, elapsed: float, rows: list) -> None:
        if not self._due(elapsed):
            return
        if self.tty:
            self._redraw(elapsed, rows)
        else:
            cells = ["w%d %s %s/s %s" % (r.index, r.state, _si(r.rate), _mib(r.rss)) for r in rows]
            self.stream.write("[%6.1f s] %s\n" % (elapsed, " | ".join(cells)))
        self.stream.flush()

    def _redraw(self, elapsed: float, rows: list) -> None:
        lines = ["pyfrag stress: %.1f s of %s" % (elapsed, self._total())]
        lines += ["  worker %-3d pid %-8s %-10s %10s ops %9s ops/s  RSS %s"
                  % (r.index, r.pid, r.state, _si(r.ops), _si(r.rate), _mib(r.rss)) for r in rows]
        up = "\x1b[%dF" % self.drawn if self.drawn else ""
        self.stream.write(up + "".join(line + "\x1b[K\n" for line in lines))
        self.drawn = len(lines)

    def close(self) -> None:
        self.stream.flush()


# ---- the report (stdout) ------------------------------------------------------------------

COLUMNS = ("worker", "pid", "workload", "ops", "ops/s", "ns/op", "pre RSS", "peak RSS",
           "final RSS", "hugepages", "result")


def _hugepages(w) -> str:
    h = w.hugepage
    if not h:
        return "-"
    if h["hugetlb"] > 0 and h["hugetlb"] >= h["thp"]:
        kind = "hugetlb"
    else:
        kind = "THP" if h["thp"] else "4K"
    return "%.0f%% %s" % (100 * h["coverage"], kind)


def _row(w) -> tuple:
    ns = "-" if w.ns_per_op is None else "%.1f" % w.ns_per_op
    return (str(w.index), str(w.pid), w.label, _si(w.ops), _si(w.ops_per_s), ns, _mib(w.pre_rss),
            _mib(w.peak_rss), _mib(w.final_rss), _hugepages(w), w.status)


def format_table(report: stress.Report, columns: tuple = COLUMNS, counted=None) -> str:
    """One row per worker, and "all": the ops of the workers `counted` (default: every one)."""
    rows = [columns] + [_row(w) for w in report.workers]
    counted = report.workers if counted is None else counted
    total_ops = sum(w.ops for w in counted)
    total_rate = sum(w.ops_per_s or 0 for w in counted)
    rows.append(("all", "", "", _si(total_ops), _si(total_rate), "", "", "", "", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(r, widths)).rstrip()
                     for r in rows) + "\n"


def _summary(report: stress.Report) -> str:
    p = report.params
    if report.ok and report.workers and report.workers[0].retain is None:
        n = len(report.workers)
        return ("ok (%d instance%s, %.1f s): every instance exited 0 under the preload, no "
                "allocation failed,\n    no invalid free\n" % (n, "" if n == 1 else "s",
                                                           report.elapsed))
    if report.ok:
        n = len(report.workers)
        return ("ok (%d worker%s, %.1f s): every fragment freed, no page in use after drain,\n"
                "    chunks back to PYFRAG_RETAIN, counters agree, no corruption, no crash or\n"
                "    hang, final RSS within pre-run + PYFRAG_RETAIN x 2 MiB + peak committed / 256"
                " + %d MiB\n" % (n, "" if n == 1 else "s", report.elapsed, p.rss_slack // MiB))
    lines = ["FAILED: %d violation%s" % (len(report.violations),
                                        "" if len(report.violations) == 1 else "s")]
    lines += ["  - %s" % v for v in report.violations]
    return "\n".join(lines) + "\n"


def format_report(report: stress.Report) -> str:
    if isinstance(report, stress_shared.SharedReport):
        return format_shared_report(report)
    p = report.params
    length = "%d ops per worker" % p.ops if p.ops else "%g s" % p.duration
    if report.command:
        title = ("pyfrag stress --cmd %s: %d instances, start method %s\n\n"
                 % (shlex.join(report.command), p.workers, p.start_method))
        return title + format_table(report) + "\n" + _summary(report)
    title = ("pyfrag stress: %s, %d workers x %d pair%s, %s, sizes %s, start method %s\n\n"
             % (p.workload, p.workers, p.pairs, "" if p.pairs == 1 else "s", length, p.sizes.text,
                p.start_method))
    return title + format_table(report) + "\n" + _summary(report)


# ---- the --shared report -------------------------------------------------------------------

ARENA_ROWS = ("pages_in_use", "pages_free", "processes", "caches", "allocs", "frees", "refills",
              "recycles", "abandons", "order0_fallbacks", "invalid_frees", "alloc_failures",
              "attaches", "detaches", "reaped_processes", "reaped_caches", "lost_pages",
              "lock_recoveries")


def format_arena_table(arena: dict) -> str:
    stages = (("start", arena["stats_before"]), ("after run", arena["stats_after_run"]),
              ("end", arena["stats_final"]))
    rows = [("arena stat",) + tuple(name for name, _ in stages)]
    rows += [(field,) + tuple(str(stats[field]) for _, stats in stages) for field in ARENA_ROWS]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip()
                     for r in rows) + "\n"


def _fragments_line(arena: dict) -> str:
    t = arena["totals"]
    return ("fragments: %d produced, %d freed by consumers, %d drained from a dead consumer's "
            "rings, %d freed by producers, %d lost\n"
            % (t["allocs"], t["frees"], t["drained"], t["self_freed"], arena["lost_fragments"]))


def _kill_lines(arena: dict) -> str:
    kill = arena.get("kill")
    if not kill:
        return ""
    if not kill["killed"]:
        return "fault: consumer 0 was not killed (it was %s)\n" % kill["state"]
    final, before = arena["stats_final"], arena["stats_before"]
    return ("fault: consumer 0 (pid %d) SIGKILLed %g s into its run; reaped %d; lost: %d "
            "fragment%s, %d pages (4 KiB) still in use, library lost_pages %d\n"
            % (kill["pid"], kill["after_s"], final["reaped_processes"] - before["reaped_processes"],
               arena["lost_fragments"], "" if arena["lost_fragments"] == 1 else "s",
               final["pages_in_use"] - before["pages_in_use"], final["lost_pages"]))


def _shared_summary(report) -> str:
    if not report.ok:
        lines = ["FAILED: %d violation%s" % (len(report.violations),
                                            "" if len(report.violations) == 1 else "s")]
        lines += ["  - %s" % v for v in report.violations]
        return "\n".join(lines) + "\n"
    p, n = report.params, len(report.workers)
    return ("ok (%d processes, %.1f s): every fragment freed exactly once, no corruption, no "
            "failed allocation\n    or invalid free, pages_in_use back to its start, RSS within "
            "pre-run + mapping + %d MiB\n" % (n, report.elapsed, p.rss_slack // MiB))


def format_shared_report(report) -> str:
    """The workers (ops: fragments produced, or consumed; "all" counts each fragment once, as
    produced), the arena's stats before, after the run and at the end, the fragment balance."""
    p, a = report.params, report.arena
    length = "%d ops per producer" % p.ops if p.ops else "%g s" % p.duration
    title = ("pyfrag stress --shared: %d producers x %d consumers, %d rings of %d slots, %s, "
             "sizes %s, start method %s\narena %s: %d MiB, %s, %s\n\n"
             % (a["producers"], a["consumers"], a["rings"], a["ring_slots"], length, p.sizes.text,
                p.start_method, a["name"], a["size_bytes"] // MiB, a["backing"], a["path"]))
    producers = [w for w in report.workers if w.label.startswith("producer")]
    table = format_table(report, ("worker", "pid", "role") + COLUMNS[3:], producers)
    return (title + table + "\n" + format_arena_table(a) + "\n" +
            _fragments_line(a) + _kill_lines(a) + "\n" + _shared_summary(report))


def write_json(report: stress.Report, path: str) -> None:
    data = report.to_json()
    if path == "-":
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    with open(path, "w") as out:
        json.dump(data, out, indent=2)
        out.write("\n")


def write_plot(report: stress.Report, path: str, plt) -> None:
    fig, ax = plt.subplots(figsize=(9, 5))
    for w in report.workers:
        if not w.samples:
            continue
        line, = ax.plot([t for t, _ in w.samples], [rss / MiB for _, rss in w.samples],
                        label="worker %d (pid %s): %s" % (w.index, w.pid, w.status))
        bound = stress.rss_bound(w, report.params.rss_slack)
        if bound is not None:
            ax.axhline((w.pre_rss + bound) / MiB, color=line.get_color(), linestyle=":",
                       linewidth=1)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("resident memory, MiB (rss + hugetlb)")
    ax.set_title("pyfrag stress: %s (dotted: each worker's final-RSS bound)"
                 % report.params.workload)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- the command -----------------------------------------------------------------------------

def stress_job_errors() -> tuple:
    from .stress_cmd import CommandError
    return (CommandError,)


_SHARED_ONLY = ("producers", "consumers", "backing", "arena_size", "fault_kill_consumer")
_NOT_SHARED = ("workload", "workers", "pairs", "cmd", "fault_leak", "fault_crash")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_shared_args(args):
    """A usage error message for --shared (or its options without it), or None."""
    if not args.shared:
        given = [_option(n) for n in _SHARED_ONLY if getattr(args, n) is not None]
        return "%s only with --shared" % ", ".join(given) if given else None
    given = [_option(n) for n in _NOT_SHARED if getattr(args, n) not in (None, 0)]
    if given:
        return "%s do not apply to --shared (use --producers and --consumers)" % ", ".join(given)
    if args.start_method == "fork":
        return ("--shared needs fresh worker processes (spawn or forkserver): a forked worker "
                "would inherit the parent's attachment to the arena")
    kill = args.fault_kill_consumer
    if kill is not None and (args.ops or kill >= args.duration):
        return ("--fault-kill-consumer %g must come before the end of the run: give a "
                "--duration longer than it (not --ops)" % kill)
    return None


def _check_args(args):
    """A usage error message, or None."""
    problem = _check_shared_args(args)
    if problem:
        return problem
    if args.cmd and (args.fault_leak or args.fault_crash is not None):
        return "--fault-leak and --fault-crash act on the native workloads, not on --cmd"
    workers = args.workers or stress.default_workers()
    if args.fault_crash is not None and args.fault_crash >= workers:
        return "--fault-crash %d: there are only %d workers" % (args.fault_crash, workers)
    for path in (args.json, args.plot):
        folder = os.path.dirname(os.path.abspath(path)) if path and path != "-" else None
        if folder and not os.path.isdir(folder):
            return "%s: folder %s does not exist" % (path, folder)
    return None


def run(args) -> int:
    problem = _check_args(args)
    if problem:
        return _usage_error(problem)
    plt = None
    if args.plot:
        plt = load_pyplot()
        if plt is None:
            return _usage_error("--plot needs matplotlib, which is not installed here: "
                                "pip install 'pyfrag[plot]' (or pip install matplotlib)")
    params = params_from(args)
    view = stress.NullView() if args.quiet else ProgressView(sys.stderr, params)
    started = time.monotonic()
    job = job_from(args, params)
    try:
        if args.shared:
            report = stress_shared.run(params, job, view=view)
        else:
            report = stress.run(params, job=job, view=view)
    except stress_job_errors() as exc:
        return _usage_error(str(exc))
    except KeyboardInterrupt:
        print("pyfrag stress: interrupted after %.1f s; every worker was stopped"
              % (time.monotonic() - started), file=sys.stderr)
        return 130
    finally:
        stress.stop_helpers()
    out = sys.stderr if args.json == "-" else sys.stdout
    out.write(format_report(report))
    out.flush()
    if args.json:
        write_json(report, args.json)
    if plt is not None:
        write_plot(report, args.plot, plt)
    return 0 if report.ok else 1
