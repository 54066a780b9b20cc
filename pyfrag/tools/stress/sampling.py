# SPDX-License-Identifier: GPL-2.0-only
"""What the stress harness measures: resident memory, and hugepage coverage while a job runs.

Contract:
- Resident memory ("RSS") is psutil's rss plus the process's hugetlb pages
  (HugetlbPages in /proc/PID/status), which the kernel leaves out of rss:
  `resident_bytes(process)`, `self_resident_bytes()`.
- `run_sampling(call, sample, interval)` is the one sampling loop of every
  job: call() runs on a thread while this thread takes sample() about every
  `interval` seconds (and once more when it ended), keeping the sample with
  the most resident bytes; it returns (call's result, that sample), or
  re-raises call's exception here. sample() returns totals with `resident`,
  `hugetlb` and `thp` (pyfrag.stats.HugeShares), or None to skip one.
- `coverage(totals, resident_key)` is the one coverage formula: the shares
  of the resident bytes on hugetlb pages, on THP, on either ("coverage"),
  and the resident bytes under `resident_key`; all 0 without a sample.
- Importing this module loads neither libpyfrag.so nor psutil.
"""
from __future__ import annotations

import threading

COVERAGE_INTERVAL = 0.5   # how often a worker reads its smaps during the run
FIRST_SAMPLE = 0.05       # the first sample, once the run has started


def hugetlb_bytes(pid) -> int:
    """The process's hugetlb pages (not part of rss), from /proc/PID/status."""
    try:
        with open("/proc/%s/status" % pid) as status:
            for line in status:
                if line.startswith("HugetlbPages:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def resident_bytes(process) -> int:
    """rss (psutil) + hugetlb pages of a psutil.Process; raises psutil.Error if it is gone."""
    return process.memory_info().rss + hugetlb_bytes(process.pid)


def self_resident_bytes() -> int:
    import psutil
    return resident_bytes(psutil.Process())


def run_sampling(call, sample, interval: float = COVERAGE_INTERVAL):
    """call() on a thread, sample() meanwhile; (call's result, the fullest sample or None)."""
    outcome: dict = {}

    def body():
        try:
            outcome["result"] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
            outcome["error"] = exc

    runner = threading.Thread(target=body, name="pyfrag-stress-run")
    runner.start()
    best = None
    runner.join(FIRST_SAMPLE)
    while True:
        taken = sample()
        if taken is not None and (best is None or taken.resident > best.resident):
            best = taken
        if not runner.is_alive():
            break
        runner.join(interval)
    runner.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"], best


def coverage(totals, resident_key: str = "arena_resident_bytes") -> dict:
    """The coverage of a sample (see the module docstring), JSON-ready."""
    if totals is None:
        return {"coverage": 0.0, "hugetlb": 0.0, "thp": 0.0, resident_key: 0}
    return {"coverage": totals.huge_fraction, "hugetlb": totals.hugetlb_fraction,
            "thp": totals.thp_fraction, resident_key: totals.resident}
