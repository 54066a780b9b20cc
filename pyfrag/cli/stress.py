# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag stress`: worker processes hammer the allocator, RSS watched, invariants checked.

Contract: add_parser(subparsers) registers the command; run(args) runs the
harness (pyfrag.tools.stress) with the job the options ask for, shows live
progress on stderr (redrawn in place only on a TTY), prints a per-worker
table and every violation on stdout (stderr when --json - takes stdout;
pyfrag.cli.stress_output), and returns 0 when every check held, 1 when one
failed, 2 for a usage error (including --plot without matplotlib), 130 when
interrupted (every worker stopped first). Registering the command imports
only the parameters: `pyfrag stress --help` needs neither libpyfrag.so nor
psutil.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from ..tools.stress import params as stress_params
from ..tools.stress.params import MiB

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
  dpdk    (needs DPDK) each worker runs examples/dpdk/dpdk_pipeline on EAL
          (--no-huge --no-pci, net_null TX, lcores 0-1): pyfrag-buffer mbufs
          with clones through an rte_ring to a worker lcore; checked after
          both lcores flushed: every fragment and mbuf back, no corruption, no
          page in use, committed bytes within PYFRAG_RETAIN after pf_trim
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

def _bounded(convert, what: str, out_of_range: str, low, high):
    """An argparse type: convert(text) in low..high, else a usage error saying which."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not %s" % (text, what)) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                out_of_range % {"text": text, "value": value, "low": low, "high": high})
        return value
    return parse


def _count(low: int, high: int):
    return _bounded(int, "a whole number", "%(value)d is not in %(low)d..%(high)d", low, high)


def _seconds(low: float, high: float):
    return _bounded(float, "a number of seconds", "%(text)s s is not in %(low)g..%(high)g s",
                    low, high)


def _sizes(text: str):
    try:
        return stress_params.parse_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "stress", help="multiprocess stress test with RSS monitoring and invariant checks",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--workload", choices=stress_params.WORKLOADS + (stress_params.DPDK,), default=None,
        help="what the threads do (mixed)")
    add("--workers", type=_count(1, 256), default=None, metavar="N",
        help="worker processes (the CPU count: %d)" % stress_params.default_workers())
    add("--pairs", type=_count(1, 1024), default=None, metavar="N",
        help="thread pairs per worker: 2N threads (1)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--duration", type=_seconds(0.01, 86400),
                        default=stress_params.DEFAULT_DURATION,
                        metavar="SECONDS", help="how long each worker runs (%(default)s)")
    length.add_argument("--ops", type=_count(1, 2**62), default=0, metavar="N",
                        help="fragments per worker, instead of a duration")
    add("--sizes", type=_sizes, default="imix", metavar="SPEC",
        help="imix, N, MIN-MAX or FILE (imix)")
    add("--seed", type=_count(0, 2**32), default=1, metavar="N", help="random seed (1)")
    add("--start-method", choices=stress_params.START_METHODS, default="spawn",
        help="how workers are started (spawn)")
    add("--interval", type=_seconds(0.01, 10), default=stress_params.DEFAULT_INTERVAL,
        metavar="SECONDS",
        help="RSS sampling and progress period (%(default)s)")
    add("--rss-slack", type=_count(0, 1 << 20), default=stress_params.DEFAULT_RSS_SLACK // MiB,
        metavar="MIB", help="RSS bound: final RSS <= pre-run RSS + PYFRAG_RETAIN x 2 MiB + "
        "peak committed / 256 + MIB (%(default)s)")
    add("--timeout", type=_seconds(0.1, 10**6), default=0.0, metavar="SECONDS",
        help="a worker alive this long after the start is hung (duration + %d s; %d s with --ops)"
        % (stress_params.DEFAULT_TIMEOUT_EXTRA, stress_params.DEFAULT_OPS_TIMEOUT))
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
                        help="producer processes (%d)" % stress_params.DEFAULT_PRODUCERS)
    shared.add_argument("--consumers", type=_count(1, 16), default=None, metavar="N",
                        help="consumer processes (%d)" % stress_params.DEFAULT_CONSUMERS)
    shared.add_argument("--backing", choices=("auto", "hugetlb", "thp", "4k"), default=None,
                        help="the arena's memory (auto: hugetlb, else THP, else 4 KiB)")
    shared.add_argument("--arena-size", type=_count(2, 1 << 20), default=None, metavar="MIB",
                        help="the arena's size (auto: every ring full of the largest size, "
                        "twice, at least 16 MiB)")
    faults = parser.add_argument_group("fault injection (tests the checks themselves)")
    faults.add_argument("--fault-leak", type=_count(1, 2**62), default=0, metavar="N",
                        help="workers leak every Nth fragment (at most %d per worker)"
                        % stress_params.LEAK_MAX)
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


def job_from(args, params: stress_params.Params):
    """The job each worker runs: the native workload, the --cmd program, or --shared's."""
    if args.shared:
        from ..tools.stress.shared_job import SharedJob
        return SharedJob(
            params, args.producers or stress_params.DEFAULT_PRODUCERS,
            args.consumers or stress_params.DEFAULT_CONSUMERS, backing=args.backing or "auto",
            kill_after=args.fault_kill_consumer or 0.0, size=(args.arena_size or 0) * MiB)
    if args.workload == stress_params.DPDK:
        from ..tools.stress.dpdk_job import DpdkJob
        return DpdkJob(params)
    if args.cmd:
        from ..tools.stress.command_job import CommandJob
        return CommandJob(args.cmd, params.deadline)
    from ..tools.stress.private_job import NativeJob
    return NativeJob(params)


def params_from(args) -> stress_params.Params:
    if args.shared:
        workers = (args.producers or stress_params.DEFAULT_PRODUCERS) + \
            (args.consumers or stress_params.DEFAULT_CONSUMERS)
    else:
        workers = args.workers or stress_params.default_workers()
    return stress_params.Params(
        workload=args.workload or "mixed", workers=workers, pairs=args.pairs or 1,
        duration=args.duration, ops=args.ops, sizes=args.sizes, seed=args.seed,
        start_method=args.start_method, interval=args.interval, rss_slack=args.rss_slack * MiB,
        timeout=args.timeout, fault_leak=args.fault_leak,
        fault_crash=-1 if args.fault_crash is None else args.fault_crash)


def _usage_error(message: str) -> int:
    print("pyfrag stress: error: %s" % message, file=sys.stderr)
    return 2


# ---- the command -----------------------------------------------------------------------------

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
    workers = args.workers or stress_params.default_workers()
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
        from ..tools.plot import load_pyplot
        plt = load_pyplot()
        if plt is None:
            return _usage_error("--plot needs matplotlib, which is not installed here: "
                                "pip install 'pyfrag[plot]' (or pip install matplotlib)")
    from ..tools.stress import harness
    from ..tools.stress.command_job import CommandError
    from ..tools.stress.dpdk_job import DpdkMissing
    from .stress_output import ProgressView, format_report, write_json, write_plot
    params = params_from(args)
    view = harness.NullView() if args.quiet else ProgressView(sys.stderr, params)
    started = time.monotonic()
    job = job_from(args, params)
    try:
        report = harness.run(params, job, view=view)
    except (CommandError, DpdkMissing) as exc:
        return _usage_error(str(exc))
    except KeyboardInterrupt:
        print("pyfrag stress: interrupted after %.1f s; every worker was stopped"
              % (time.monotonic() - started), file=sys.stderr)
        return 130
    finally:
        harness.stop_helpers()
    out = sys.stderr if args.json == "-" else sys.stdout
    out.write(format_report(report))
    out.flush()
    if args.json:
        write_json(report, args.json)
    if plt is not None:
        write_plot(report, args.plot, plt)
    return 0 if report.ok else 1
