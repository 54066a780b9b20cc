# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag stress --cmd`: the stress harness running an external program under the preload.

Contract:
- `CommandJob(argv, timeout)` is a stress job (pyfrag.tools.stress.harness):
  each worker runs one instance of argv with libpyfrag.so preloaded and
  PYFRAG_STATS=1, puts the instance's pid in its slot so the parent samples
  that process's RSS, samples the instance's hugepage coverage from its
  smaps while it runs (sampling.run_sampling), and collects the statistics
  summary the library prints at exit. An instance still running `timeout`
  seconds after its start is killed (the parent calls its worker hung).
- Per instance, a violation for (judge.check_instance): a death by signal
  (named), a non-zero exit status, failed allocations, invalid frees. A
  program that leaves through _exit (dash does) prints no summary: its
  counts are then zero and counts["summary"] is false, which is reported,
  not judged. Foreign frees are reported in the counts, not judged: they
  are frees of memory pyfrag never handed out, which it ignores by design.
- The RSS bound of the native workloads does not apply (the program ends);
  peak RSS is still sampled and reported.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass

from ...preload import parse_stats_summaries, preload_env
from ...stats import smaps_totals
from . import sampling
from .harness import CHECKING, PHASE, PROGRESS, RUNNING, TARGET_PID, Slot
from .judge import check_instance

SAMPLE_INTERVAL = sampling.COVERAGE_INTERVAL / 5  # programs may be short


class CommandError(ValueError):
    """The program to run cannot be run (not found, not executable)."""


@dataclass
class CommandJob:
    argv: tuple
    timeout: float

    def label(self, index: int) -> str:
        return os.path.basename(self.argv[0])

    def prepare(self) -> None:
        if not self.argv:
            raise CommandError("--cmd needs a program to run")
        if shutil.which(self.argv[0]) is None:
            raise CommandError("--cmd: %s: no such program (or not executable)" % self.argv[0])

    def run_in_worker(self, index: int, slot: Slot) -> dict:
        env = preload_env(stats=True)
        start = time.monotonic()
        proc = subprocess.Popen(list(self.argv), env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        slot.set(TARGET_PID, proc.pid)
        slot.set(PHASE, RUNNING)
        stderr, best = sampling.run_sampling(lambda: _wait(proc, self.timeout),
                                             lambda: _smaps(proc), SAMPLE_INTERVAL)
        elapsed_ns = int((time.monotonic() - start) * 1e9)
        slot.set(PHASE, CHECKING)
        summary = _summary_of(parse_stats_summaries(stderr), proc.pid)
        counters = summary["counters"] if summary else {}
        allocs = sum(counters.get("allocations " + route, 0)
                     for route in ("small (page_frag)", "compact (slab)", "medium (page runs)",
                                   "large (chunk runs)"))
        slot.set(PROGRESS, allocs)
        return {
            "ops": allocs, "elapsed_ns": elapsed_ns, "threads": counters.get("memory threads", 0),
            "counts": {"allocs": allocs, "frees": counters.get("frees total", 0),
                       "foreign_frees": counters.get("frees foreign (ignored)", 0),
                       "alloc_failures": counters.get("allocations failed", 0),
                       "invalid_frees": counters.get("frees invalid", 0),
                       "summary": summary is not None},
            "pre_rss": None, "final_rss": None, "retain": None, "check_rss": False,
            "hugepage": sampling.coverage(best, "resident_bytes"), "stats_after": counters,
            "target_pid": proc.pid, "returncode": proc.returncode,
            "violations": check_instance(proc.returncode, summary, stderr),
        }


def _wait(proc, timeout: float) -> str:
    """The program's stderr once it exited (killed after `timeout` s: do not leave it behind)."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode(errors="replace")


def _smaps(proc):
    """The program's smaps totals while it runs, None once it was reaped (its pid may be
    another process's by then) or if it exited between the check and the read."""
    if proc.returncode is not None:
        return None
    try:
        return smaps_totals(proc.pid)
    except OSError:
        return None


def _summary_of(summaries: list, pid: int):
    """The instance's own summary (its children print theirs too)."""
    return next((s for s in summaries if s["pid"] == pid), None)
