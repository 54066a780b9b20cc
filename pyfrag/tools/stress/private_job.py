# SPDX-License-Identifier: GPL-2.0-only
"""The native workloads of `pyfrag stress`: one pf_stress_run per worker, then its checks.

Contract: `NativeJob(params)` is a stress job (pyfrag.tools.stress.harness).
In each worker it runs params.workload through pf_stress_run (threads
looping in C over the public API) while the worker samples the arena's
hugepage coverage (sampling.run_sampling), then drains, trims and checks
the library's state (judge.check_worker). `--fault-crash` makes the chosen
worker die of SIGSEGV even if its run ended before the wild write was due.
Importing this module loads neither libpyfrag.so nor psutil.
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
from dataclasses import dataclass

from . import native, sampling
from .harness import CHECKING, PHASE, RUNNING, TARGET_PID, Slot
from .judge import check_worker
from .params import BURST, LEAK_MAX, WORKLOADS, Params


@dataclass
class NativeJob:
    """Run one native workload (pf_stress_run) in each worker, then check the library's state."""
    params: Params

    def label(self, index: int) -> str:
        return self.params.workload

    def prepare(self) -> None:
        native.native()  # a missing or stale library fails here, before any worker starts

    def native_params(self, index: int, slot: Slot, keep: list) -> native.StressParams:
        p = self.params
        sp = native.StressParams(size=ctypes.sizeof(native.StressParams), ring_slots=1024,
                                 churn_slots=1024)
        sp.workload = WORKLOADS.index(p.workload)
        sp.pairs, sp.burst, sp.ops = p.pairs, BURST, p.ops
        sp.duration_ns = int(p.duration * 1e9)
        native.set_sizes(sp, p.sizes, keep)
        sp.leak_every, sp.leak_max = p.fault_leak, LEAK_MAX
        if p.fault_crash == index:
            sp.crash_after_ns = int((p.duration / 2 if not p.ops else 0.1) * 1e9)
        sp.seed = p.seed * 1000003 + index
        sp.progress = slot.progress_address
        return sp

    def run_in_worker(self, index: int, slot: Slot) -> dict:
        from ..._native import loader
        from ...options import get_option, thread_flush, trim
        from ...stats import hugepage_coverage, stats as read_stats
        loader.lib().pf_init()
        slot.set(TARGET_PID, os.getpid())
        keep: list = []
        sp = self.native_params(index, slot, keep)
        before, pre_rss = read_stats(), sampling.self_resident_bytes()
        slot.set(PHASE, RUNNING)
        result, best = sampling.run_sampling(lambda: native.run(sp), hugepage_coverage)
        slot.set(PHASE, CHECKING)
        if sp.crash_after_ns:  # the run ended before the wild write was due: crash anyway
            os.kill(os.getpid(), signal.SIGSEGV)
        thread_flush()
        trim()
        after = read_stats()
        retain = get_option("PYFRAG_RETAIN")
        return {
            "ops": result.ops, "elapsed_ns": result.elapsed_ns, "threads": result.threads,
            "counts": {name: getattr(result, name) for name in
                       ("allocs", "frees", "leaked", "corrupt", "alloc_failures", "free_failures")},
            "pre_rss": pre_rss, "final_rss": sampling.self_resident_bytes(), "retain": retain,
            "hugepage": sampling.coverage(best), "stats_after": dataclasses.asdict(after),
            "violations": check_worker(result, before, after, retain, self.params.fault_leak),
        }
