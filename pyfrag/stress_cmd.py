# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag stress --cmd`: the stress harness running an external program under the preload.

Contract:
- `CommandJob(argv, timeout)` is a stress job (see pyfrag.stress): each
  worker runs one instance of argv with libpyfrag.so preloaded and
  PYFRAG_STATS=1, puts the instance's pid in its slot so the parent samples
  that process's RSS, samples the instance's hugepage coverage from its
  smaps, and collects the statistics summary the library prints at exit.
- Per instance, a violation for: a death by signal (named), a non-zero exit
  status, failed allocations, invalid frees. A program that leaves through
  _exit (dash does) prints no summary: its counts are then zero and
  counts["summary"] is false, which is reported, not judged. Foreign frees are reported in the counts, not judged: they
  are frees of memory pyfrag never handed out, which it ignores by design.
- The RSS bound of the native workloads does not apply (the program ends);
  peak RSS is still sampled and reported.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

from . import stress
from .preload import parse_stats_summaries, preload_env
from .stats import smaps_totals


# lines of a PYFRAG_STATS=1 summary, not the program's own stderr
_SUMMARY = re.compile(r"^(pyfrag stats \(.*, pid \d+\):|  (allocations|frees|frag pages|chunks now|memory)  )")


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

    def run_in_worker(self, index: int, slot: stress.Slot) -> dict:
        env = preload_env(stats=True)
        start = time.monotonic()
        proc = subprocess.Popen(list(self.argv), env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        slot.set(stress.TARGET_PID, proc.pid)
        slot.set(stress.PHASE, stress.RUNNING)
        stderr, coverage = _wait_sampling(proc, self.timeout)
        elapsed_ns = int((time.monotonic() - start) * 1e9)
        slot.set(stress.PHASE, stress.CHECKING)
        summary = _summary_of(parse_stats_summaries(stderr), proc.pid)
        counters = summary["counters"] if summary else {}
        allocs = sum(counters.get("allocations " + route, 0)
                     for route in ("small (page_frag)", "medium (page runs)", "large (chunk runs)"))
        slot.set(stress.PROGRESS, allocs)
        return {
            "ops": allocs, "elapsed_ns": elapsed_ns, "threads": counters.get("memory threads", 0),
            "counts": {"allocs": allocs, "frees": counters.get("frees total", 0),
                       "foreign_frees": counters.get("frees foreign (ignored)", 0),
                       "alloc_failures": counters.get("allocations failed", 0),
                       "invalid_frees": counters.get("frees invalid", 0),
                       "summary": summary is not None},
            "pre_rss": None, "final_rss": None, "retain": None, "check_rss": False,
            "hugepage": coverage, "stats_after": counters, "target_pid": proc.pid,
            "returncode": proc.returncode,
            "violations": _judge_instance(proc.returncode, summary, stderr),
        }


def _wait_sampling(proc, timeout: float):
    """Wait for the program (stderr read on the way), sampling its hugepage coverage."""
    best = None
    deadline = time.monotonic() + timeout
    chunks = []
    os.set_blocking(proc.stderr.fileno(), False)
    while proc.poll() is None and time.monotonic() < deadline:
        best = _fuller(best, proc.pid)
        _drain(proc.stderr, chunks)
        time.sleep(stress.COVERAGE_INTERVAL / 5)
    if proc.poll() is None:
        proc.kill()  # the parent will call this worker hung; do not leave the program behind
    proc.wait()
    os.set_blocking(proc.stderr.fileno(), True)
    chunks.append(proc.stderr.read())
    return b"".join(chunks).decode(errors="replace"), _coverage(best)


def _drain(stream, chunks: list) -> None:
    data = stream.read()
    if data:
        chunks.append(data)


def _fuller(best, pid: int):
    try:
        sample = smaps_totals(pid)
    except OSError:  # exited between poll() and the read
        return best
    return sample if best is None or sample.resident > best.resident else best


def _coverage(totals) -> dict:
    if totals is None or not totals.resident:
        return {"coverage": 0.0, "hugetlb": 0.0, "thp": 0.0, "resident_bytes": 0}
    hugetlb = totals.private_hugetlb + totals.shared_hugetlb
    return {"coverage": (hugetlb + totals.anon_huge_pages) / totals.resident,
            "hugetlb": hugetlb / totals.resident, "thp": totals.anon_huge_pages / totals.resident,
            "resident_bytes": totals.resident}


def _summary_of(summaries: list, pid: int):
    """The instance's own summary (its children print theirs too)."""
    return next((s for s in summaries if s["pid"] == pid), None)


def _judge_instance(returncode: int, summary, stderr: str) -> list:
    out = []
    if returncode < 0:
        out.append(("crash-cmd", "the program died of %s (signal %d)"
                    % (stress.signal_name(-returncode), -returncode)))
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
