# SPDX-License-Identifier: GPL-2.0-only
"""The rules of `pyfrag stress`: what turns a run's numbers into violations.

Contract: pure functions of numbers (no process, library or psutil).
- In a worker, after its run, drain and trim: `check_worker` (the native
  workloads: every fragment freed, the library's counters agreeing with the
  workload's, no corruption, no failed call, no page in use, committed
  chunks back to min(PYFRAG_RETAIN, peak), no cache or thread state left),
  `check_detached` (--shared: final RSS after detaching within the slack),
  `check_instance` (--cmd: no signal, exit status 0, no failed allocation
  or invalid free). Each returns [(check, message)].
- In the parent: `judge_worker` fills a WorkerReport from the result its
  worker sent and from how it ended (a crash names the signal; a hang, an
  exception and a non-zero exit are violations too) and adds the RSS rule
  `rss_bound` (final RSS <= pre-run RSS + PYFRAG_RETAIN x 2 MiB + peak
  committed / 256 + slack) unless the job says it does not apply;
  `check_arena` and `check_shared_worker` are the --shared rules on the
  arena's counters and on each process's peak RSS and hugepages.
"""
from __future__ import annotations

import re
import signal

from .params import CHUNK, EXIT_GRACE, META_PER_CHUNK, PAGES_PER_FRAG_PAGE, MiB
from .report import Violation

# lines of a PYFRAG_STATS=1 summary, not the program's own stderr
_SUMMARY = re.compile(r"^(pyfrag stats \(.*, pid \d+\):"
                      r"|  (allocations|frees|frag pages|chunks now|memory)  )")


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "signal %d" % number


def _leak_note(fault_leak: int) -> str:
    return " (--fault-leak %d asked for this)" % fault_leak if fault_leak else ""


# ---- in a worker ---------------------------------------------------------------------------

def check_worker(result, before, after, retain: int, fault_leak: int = 0) -> list:
    """The in-process invariants after a run and a drain: [(check, message)], empty if all hold."""
    out = []
    injected = _leak_note(fault_leak)
    unfreed = result.allocs - result.frees
    if unfreed or result.leaked:
        out.append(("leak", "%d fragments never freed: %d allocated, %d freed%s"
                    % (unfreed, result.allocs, result.frees, injected)))
    lib_allocs, lib_frees = after.allocs - before.allocs, after.frees - before.frees
    if (lib_allocs, lib_frees) != (result.allocs, result.frees):
        out.append(("counters", "the library counted %d allocs and %d frees, the workload made "
                    "%d and %d" % (lib_allocs, lib_frees, result.allocs, result.frees)))
    if result.corrupt:
        out.append(("corruption", "%d fragments had their pattern overwritten while allocated "
                    "(overlapping fragments, or one handed out twice)" % result.corrupt))
    if result.alloc_failures:
        out.append(("alloc-failure", "%d allocations failed (no memory: PYFRAG_LIMIT, or the OS "
                    "refused)" % result.alloc_failures))
    invalid = after.invalid_frees - before.invalid_frees
    if result.free_failures or invalid:
        out.append(("free-failure", "%d frees failed, %d counted invalid by the library"
                    % (result.free_failures, invalid)))
    if after.pages_in_use:
        out.append(("pages", "%d pages (4 KiB) still in use after drain and trim, expected 0%s"
                    % (after.pages_in_use, injected)))
    expected = min(retain, after.peak_committed_bytes // CHUNK)
    if after.committed_bytes != expected * CHUNK:
        out.append(("chunks", "%d chunks (2 MiB) still committed after trim, expected %d "
                    "(PYFRAG_RETAIN=%d)%s" % (after.committed_bytes // CHUNK, expected, retain,
                                              injected)))
    if (after.caches, after.threads) != (before.caches, before.threads):
        out.append(("teardown", "%d caches and %d threads with pyfrag state left, expected %d "
                    "and %d" % (after.caches, after.threads, before.caches, before.threads)))
    return out


def check_detached(pre_rss: int, final_rss: int, slack: int) -> list:
    """--shared, in a worker: its RSS after detaching is back within the slack."""
    growth = final_rss - pre_rss
    if growth <= slack:
        return []
    return [("rss", "final RSS %.1f MiB after detaching is %.1f MiB above the pre-attach %.1f "
             "MiB; the bound is the slack, %.1f MiB"
             % (final_rss / MiB, growth / MiB, pre_rss / MiB, slack / MiB))]


def check_instance(returncode: int, summary, stderr: str) -> list:
    """--cmd, in a worker: how one instance of the program ended, and its exit summary."""
    out = []
    if returncode < 0:
        out.append(("crash-cmd", "the program died of %s (signal %d)"
                    % (signal_name(-returncode), -returncode)))
    elif returncode:
        own = [line for line in stderr.splitlines() if line.strip() and not _SUMMARY.match(line)]
        last = own[-1].strip() if own else ""
        out.append(("exit-cmd", "the program exited with status %d%s"
                    % (returncode, ": " + last if last else "")))
    if summary is None:
        return out  # no exit summary: the program left through _exit (dash does), or died
    counters = summary["counters"]
    if counters.get("allocations failed"):
        out.append(("alloc-failure", "%d allocations failed" % counters["allocations failed"]))
    if counters.get("frees invalid"):
        out.append(("free-failure", "%d invalid frees" % counters["frees invalid"]))
    return out


# ---- in the parent: each worker --------------------------------------------------------------

def rss_bound(report, slack: int) -> int | None:
    """Bytes the final RSS may exceed the pre-run RSS by (None if the worker did not report).

    PYFRAG_RETAIN empty chunks stay committed (x 2 MiB); the page metadata of
    every chunk ever committed stays mapped (1/256 of the peak committed
    bytes); the slack covers the rest (thread stacks glibc keeps for reuse,
    Python objects).
    """
    if report.retain is None or report.stats_after is None:
        return None
    peak_chunks = report.stats_after["peak_committed_bytes"] // CHUNK
    return report.retain * CHUNK + peak_chunks * META_PER_CHUNK + slack


def _exit_violation(r, result, phase: str, params):
    """What the way the worker ended says, as a Violation, or None if it ended well."""
    code = r.exitcode
    if r.status == "hung":
        return Violation(r.index, r.pid, "hang", "still alive %.1f s after the start (timeout "
                         "%.1f s), last phase %s after %d ops; stopped it"
                         % (r.ended_at, params.deadline, phase, r.ops))
    if r.status == "lingered":
        return Violation(r.index, r.pid, "hang", "sent its result but did not exit within %.0f s; "
                         "stopped it" % EXIT_GRACE)
    if code is not None and code < 0:
        why = " (--fault-crash asked for this)" if params.fault_crash == r.index else ""
        return Violation(r.index, r.pid, "crash", "died of %s (signal %d) %.1f s after its start, "
                         "while %s, after %d ops%s"
                         % (signal_name(-code), -code, r.ended_at - r.started_at, phase, r.ops,
                            why))
    if result is None or result[0] != "ok":
        text = result[1] if result else ""
        r.error = text or None
        last = text.strip().splitlines()[-1] if text.strip() else "no result sent"
        return Violation(r.index, r.pid, "error", "exited with status %s: %s" % (code, last))
    if code:
        return Violation(r.index, r.pid, "exit", "exited with status %s after sending its result"
                         % code)
    return None


def _take_result(r, data: dict, params) -> None:
    r.ops, r.elapsed_ns = data["ops"], data["elapsed_ns"]
    r.pre_rss, r.final_rss, r.retain = data["pre_rss"], data["final_rss"], data["retain"]
    r.hugepage, r.counts, r.stats_after = data["hugepage"], data["counts"], data["stats_after"]
    r.peak_rss = max(r.peak_rss, r.pre_rss or 0, r.final_rss or 0)
    for check, message in data["violations"]:
        r.violations.append(Violation(r.index, r.pid, check, message))
    if not data.get("check_rss", True):
        return  # a job whose process ends (--cmd), or that judges its own (--shared)
    bound = rss_bound(r, params.rss_slack)
    growth = r.final_rss - r.pre_rss
    if growth > bound:
        r.violations.append(Violation(
            r.index, r.pid, "rss", "final RSS %.1f MiB is %.1f MiB above the pre-run %.1f MiB; the "
            "bound is %.1f MiB (PYFRAG_RETAIN %d x 2 MiB + page metadata %.1f MiB + slack %.1f "
            "MiB)%s"
            % (r.final_rss / MiB, growth / MiB, r.pre_rss / MiB, bound / MiB, r.retain,
               (bound - r.retain * CHUNK - params.rss_slack) / MiB, params.rss_slack / MiB,
               _leak_note(params.fault_leak))))


def judge_worker(r, result, phase: str, progress: int, params) -> None:
    """Fill WorkerReport r from its worker's result (("ok", dict), ("error", text) or None),
    its last phase and progress, and the way it ended; set its status."""
    r.ops = max(r.ops, progress)
    if result is not None and result[0] == "ok":
        _take_result(r, result[1], params)
    ending = _exit_violation(r, result, phase, params)
    if ending is not None:
        r.violations.append(ending)
        statuses = {"hang": "hung", "crash": "crashed", "error": "error"}
        r.status = statuses.get(ending.check, "failed")
    else:
        r.status = "failed" if r.violations else "ok"


# ---- in the parent: the shared arena -----------------------------------------------------------

def check_arena(before, setup, after_run, final, totals: dict, lost: int, in_rings: int,
                kill_after: float, kill, arena_bytes: int) -> list:
    """--shared: the arena's counters before the run (`before`), after the set-up, after the
    run and at the end, against the processes' `totals`; kill is the --fault-kill-consumer
    record (None if none was due). [Violation], empty if every rule held."""
    v = []

    def bad(check, message):
        v.append(Violation(None, None, check, message))

    killed = bool(kill and kill["killed"])
    kills = 1 if killed else 0
    if kill_after and not killed:
        bad("fault", "--fault-kill-consumer %g: consumer 0 was %s at that time, not killed"
            % (kill_after, kill["state"] if kill else "not started"))
    if in_rings:
        bad("rings", "%d fragments still in the rings after every process ended" % in_rings)
    if lost < 0 or lost > kills:
        bad("leak", "%d fragments unaccounted for: %d produced, %d freed by consumers, %d "
            "drained and %d freed by producers; expected %s"
            % (lost, totals["allocs"], totals["frees"], totals["drained"],
               totals["self_freed"], "0 to 1 (what the killed consumer held)" if kills
               else "0"))
    if totals["corrupt"]:
        bad("corruption", "%d fragments had their pattern overwritten while allocated"
            % totals["corrupt"])
    if totals["alloc_failures"] or final.alloc_failures != before.alloc_failures:
        bad("alloc-failure", "%d allocations failed (the library counted %d): the arena "
            "(%d MiB) was too small or refused" % (totals["alloc_failures"],
                                                  final.alloc_failures - before.alloc_failures,
                                                  arena_bytes // MiB))
    invalid = final.invalid_frees - before.invalid_frees
    if totals["free_failures"] or invalid:
        bad("free-failure", "%d frees failed, %d counted invalid by the library"
            % (totals["free_failures"], invalid))
    lib_allocs = after_run.allocs - setup.allocs
    lib_frees = after_run.frees - setup.frees
    recorded = totals["frees"] + totals["drained"] + totals["self_freed"]
    if lib_allocs != totals["allocs"] or not recorded <= lib_frees <= recorded + max(lost, 0):
        bad("counters", "the arena counted %d allocs and %d frees, the processes %d and %d"
            % (lib_allocs, lib_frees, totals["allocs"], recorded))
    pinned = final.pages_in_use - before.pages_in_use
    allowed = PAGES_PER_FRAG_PAGE * max(lost, 0) if kills else 0
    if not 0 <= pinned <= allowed:
        bad("pages", "pages_in_use is %d after every process detached, %d before the run; "
            "allowed: %d more (%s)" % (final.pages_in_use, before.pages_in_use, allowed,
                                       "one frag page per lost fragment" if kills else
                                       "nothing may stay in use"))
    if final.processes != before.processes or final.caches != before.caches:
        bad("teardown", "%d processes attached and %d caches left, expected %d and %d (the "
            "harness alone)" % (final.processes, final.caches, before.processes,
                                before.caches))
    reaped = final.reaped_processes - before.reaped_processes
    if reaped != kills:
        bad("reap", "%d dead processes reaped, expected %d" % (reaped, kills))
    return v


def check_shared_worker(w, map_bytes: int, slack: int, hugetlb_arena: bool) -> None:
    """--shared: one process's peak RSS within pre-run + the mapping + slack, and a hugetlb
    arena all on hugetlb pages in it; appended to w.violations."""
    if w.pre_rss is None:
        return  # killed, or never reported: its exit is judged already
    bound = map_bytes + slack
    if w.peak_rss - w.pre_rss > bound:
        w.violations.append(Violation(
            w.index, w.pid, "rss", "peak RSS %.1f MiB is %.1f MiB above the pre-attach %.1f "
            "MiB; the bound is the arena's mapping %.1f MiB + slack %.1f MiB"
            % (w.peak_rss / MiB, (w.peak_rss - w.pre_rss) / MiB, w.pre_rss / MiB,
               map_bytes / MiB, slack / MiB)))
    h = w.hugepage
    if hugetlb_arena and h and h["arena_resident_bytes"] and h["hugetlb"] < 1.0:
        w.violations.append(Violation(
            w.index, w.pid, "hugepages", "a hugetlb arena, yet only %.0f%% of its resident "
            "bytes in this process were on hugetlb pages" % (100 * h["hugetlb"])))
