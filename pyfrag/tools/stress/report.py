# SPDX-License-Identifier: GPL-2.0-only
"""The results of a stress run: violations, one report per worker, the run's report.

Contract: plain dataclasses, filled by pyfrag.tools.stress.harness and
judge, shown by the CLI. `Report.ok` is true when no rule was broken;
`to_json()` is the `--json` document (its keys are a public format).
`SharedReport` adds the arena's side of `--shared`. Importing this module
loads nothing.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .params import Params


@dataclass
class Violation:
    worker: int | None
    pid: int | None
    check: str
    message: str

    def __str__(self) -> str:
        who = "worker %d (pid %s): " % (self.worker, self.pid) if self.worker is not None else ""
        return "%s%s: %s" % (who, self.check, self.message)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class WorkerReport:
    index: int
    label: str
    pid: int | None = None
    status: str = "starting"          # ok, failed, crashed, hung, error, stopped
    exitcode: int | None = None
    ops: int = 0
    elapsed_ns: int = 0
    pre_rss: int | None = None
    final_rss: int | None = None
    peak_rss: int = 0
    retain: int | None = None
    hugepage: dict | None = None
    counts: dict = field(default_factory=dict)
    stats_after: dict | None = None
    samples: list = field(default_factory=list)   # (seconds since start, resident bytes)
    violations: list = field(default_factory=list)
    started_at: float = 0.0
    ended_at: float | None = None
    error: str | None = None

    @property
    def ops_per_s(self) -> float | None:
        return self.ops * 1e9 / self.elapsed_ns if self.elapsed_ns else None

    @property
    def ns_per_op(self) -> float | None:
        return self.elapsed_ns / self.ops if self.ops and self.elapsed_ns else None

    def to_json(self) -> dict:
        return {
            "index": self.index, "pid": self.pid, "workload": self.label, "status": self.status,
            "exitcode": self.exitcode, "ops": self.ops, "ns_per_op": self.ns_per_op,
            "ops_per_s": self.ops_per_s, "elapsed_s": self.elapsed_ns / 1e9,
            "peak_rss_bytes": self.peak_rss, "final_rss_bytes": self.final_rss,
            "pre_rss_bytes": self.pre_rss,
            "hugepage_coverage": self.hugepage["coverage"] if self.hugepage else None,
            "hugepage_detail": self.hugepage, "retain": self.retain, "counts": self.counts,
            "stats_after": self.stats_after,
            "rss_samples": [[round(t, 3), rss] for t, rss in self.samples],
            "violations": [v.to_json() for v in self.violations],
        }


@dataclass
class Report:
    params: Params
    workers: list
    elapsed: float = 0.0
    library: str | None = None  # path of the libpyfrag.so the parent checked, if it loaded one
    command: tuple | None = None  # the --cmd program, when the job ran one

    @property
    def violations(self) -> list:
        return [v for w in self.workers for v in w.violations]

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict:
        return {"params": self.params.to_json(), "workers": [w.to_json() for w in self.workers],
                "ok": self.ok, "violations": [v.to_json() for v in self.violations],
                "elapsed_s": self.elapsed, "library": self.library,
                "command": list(self.command) if self.command else None}


@dataclass
class SharedReport(Report):
    """A stress Report plus the arena's side: its stats, the loss, the kill, global violations."""
    arena: dict = field(default_factory=dict)
    arena_violations: list = field(default_factory=list)

    @property
    def violations(self) -> list:
        return [v for w in self.workers for v in w.violations] + self.arena_violations

    def to_json(self) -> dict:
        out = super().to_json()
        a = self.arena
        out["params"].update(workload="shared", pairs=None, producers=a.get("producers"),
                             consumers=a.get("consumers"), backing=a.get("backing"),
                             fault_kill_consumer=(a.get("kill") or {}).get("after_s"),
                             rss_bound="peak RSS <= pre-run RSS + the arena's mapping + "
                             "rss_slack; final RSS after detaching <= pre-run RSS + rss_slack")
        out["arena"] = a
        return out

