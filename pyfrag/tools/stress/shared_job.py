# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag stress --shared`: producer and consumer processes over one shared arena.

Contract:
- `SharedJob` is a stress job (pyfrag.tools.stress.harness): in
  the parent, prepare() creates the arena "stress-<parent pid>" (removed at
  the end) and lays out, inside it, one SPSC ring per (producer, consumer)
  pair (pf_stress_shared_setup); workers 0..P-1 are producers, P..P+C-1
  consumers; each attaches by name and runs pf_stress_shared_run on a
  thread while its main thread samples the mapping's hugepage coverage
  from /proc/self/smaps (sampling.run_sampling), then detaches. The parent samples every worker's
  RSS (psutil + hugetlb pages) as for the other workloads.
- `finish(report)` reads every process's counters from the arena (a dead
  one's too), frees the layout, flushes, reaps, and checks: no fragment in
  the rings; produced == freed by consumers + drained by producers + freed
  by producers (every ring full at the end) + lost, with lost == 0 unless a
  consumer was killed, then lost <= 1 per killed consumer (what it held);
  the library's counters agree; no corrupt pattern, no failed allocation,
  no failed or invalid free; pages_in_use back to its value before the run
  (with a kill: at most 8 pages, one frag page, per lost fragment); one
  process attached (the parent), no cache left, exactly the killed
  consumers reaped; per worker, peak RSS <= pre-run RSS + the arena's
  mapping + slack and, after detaching, final RSS <= pre-run RSS + slack; a
  hugetlb arena covered 100% by hugetlb pages (the rules are
  pyfrag.tools.stress.judge's). Each broken rule is one Violation of the
  returned SharedReport; the arena is closed (and so removed) at the end,
  and by close() when the run is cut short.
- `kill_after` (--fault-kill-consumer): a parent thread SIGKILLs consumer 0
  that many seconds after it started. The run is then ok (exit 0) when the
  survivors met every rule above and the loss is within what the dead
  consumer held: the kill itself is reported ("killed"), not a violation.
- Importing this module loads neither libpyfrag.so nor psutil.
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import threading
import time

from . import native, sampling
from .harness import CHECKING, PHASE, RUNNING, TARGET_PID, Slot
from .judge import check_arena, check_detached, check_shared_worker
from .params import DEFAULT_CONSUMERS, DEFAULT_PRODUCERS, MAX_PEERS, Params, arena_size, ring_slots
from .report import Report, SharedReport

PRODUCER, CONSUMER = 0, 1
ROLES = ("producer", "consumer")
KILL_POLL = 0.01
TOTALS = ("allocs", "frees", "drained", "self_freed", "corrupt", "alloc_failures",
          "free_failures", "dead_seen")


class SharedJob:
    """One producer or consumer per worker, over one shared arena (see the module docstring)."""

    def __init__(self, params: Params, producers: int = DEFAULT_PRODUCERS,
                 consumers: int = DEFAULT_CONSUMERS, backing: str = "auto",
                 kill_after: float = 0.0, size: int = 0, name: str | None = None):
        if not (1 <= producers <= MAX_PEERS and 1 <= consumers <= MAX_PEERS):
            raise ValueError("producers and consumers must be 1..%d" % MAX_PEERS)
        if params.workers != producers + consumers:
            raise ValueError("params.workers must be producers + consumers")
        self.params = params
        self.producers, self.consumers = producers, consumers
        self.backing = backing
        self.kill_after = kill_after
        self.size = size or arena_size(producers, consumers, params.sizes)
        self.ring_slots = ring_slots(producers, consumers)
        self.name = name or "stress-%d" % os.getpid()
        self.directory = None
        self.control = None
        self._arena = None
        self._killer = None
        self._stop = threading.Event()
        self.kill: dict | None = None
        self.before = self.after_setup = None

    def __getstate__(self) -> dict:
        # what a worker needs; the parent's arena, thread and event stay in the parent
        state = dict(self.__dict__)
        for name in ("_arena", "_killer", "_stop", "kill", "before", "after_setup"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._arena = self._killer = self.kill = self.before = self.after_setup = None
        self._stop = threading.Event()

    def role_of(self, index: int) -> tuple:
        return (PRODUCER, index) if index < self.producers else (CONSUMER, index - self.producers)

    def label(self, index: int) -> str:
        role, i = self.role_of(index)
        return "%s %d" % (ROLES[role], i)

    # -- the parent, before --
    def prepare(self) -> None:
        from ...shared import SharedArena
        native.native()  # a missing or stale library fails here, before the arena is made
        arena = SharedArena(self.name, create=True, size=self.size, backing=self.backing)
        self._arena = arena  # closed by close() if anything below fails
        self.directory = os.path.dirname(arena.path) or None
        self.before = arena.stats()
        self.control = native.setup_shared(arena, self.producers, self.consumers,
                                           self.ring_slots)
        self.after_setup = arena.stats()
        if self.kill_after:
            self._killer = threading.Thread(target=self._kill_consumer, name="pyfrag-kill-consumer",
                                            daemon=True)
            self._killer.start()

    def _kill_consumer(self) -> None:
        """--fault-kill-consumer: SIGKILL consumer 0 kill_after seconds after its start."""
        arena, stop = self._arena, self._stop
        peer = native.peer(arena, self.control, CONSUMER, 0)
        while peer.state == 0:  # not started yet
            if stop.wait(KILL_POLL):
                return
            peer = native.peer(arena, self.control, CONSUMER, 0)
        due = peer.started_ns / 1e9 + self.kill_after  # CLOCK_MONOTONIC, as time.monotonic()
        if stop.wait(max(0.0, due - time.monotonic())):
            return
        peer = native.peer(arena, self.control, CONSUMER, 0)
        self.kill = {"consumer": 0, "worker": self.producers, "pid": peer.pid,
                     "after_s": self.kill_after, "state": native.PEER_STATES[peer.state],
                     "killed": False}
        if peer.state == 1:
            try:
                os.kill(peer.pid, signal.SIGKILL)
                self.kill["killed"] = True
                self.kill["frees_before"] = peer.frees
            except ProcessLookupError:
                pass

    # -- each worker --
    def run_params(self, role: int, index: int, slot: Slot, keep: list) -> native.RunParams:
        p = self.params
        rp = native.RunParams(size=ctypes.sizeof(native.RunParams), role=role, index=index,
                              control=self.control)
        native.set_sizes(rp, p.sizes, keep)
        rp.duration_ns, rp.ops = int(p.duration * 1e9), p.ops
        rp.seed = p.seed * 1000003 + role * 1009 + index
        rp.progress = slot.progress_address
        return rp

    def run_in_worker(self, index: int, slot: Slot) -> dict:
        from ...shared import SharedArena
        role, i = self.role_of(index)
        pre_rss = sampling.self_resident_bytes()
        arena = SharedArena(self.name, directory=self.directory)
        try:
            slot.set(TARGET_PID, os.getpid())
            keep: list = []
            rp = self.run_params(role, i, slot, keep)
            slot.set(PHASE, RUNNING)
            peer, best = sampling.run_sampling(lambda: native.run_shared(arena, rp),
                                               arena.hugepage_coverage)
            slot.set(PHASE, CHECKING)
            map_bytes = arena.map_bytes
        finally:
            arena.close()
        final_rss = sampling.self_resident_bytes()
        return {"ops": peer.allocs if role == PRODUCER else peer.frees,
                "elapsed_ns": peer.elapsed_ns, "threads": 1, "counts": peer.to_dict(),
                "pre_rss": pre_rss, "final_rss": final_rss, "retain": None,
                "hugepage": sampling.coverage(best), "stats_after": None,
                "violations": check_detached(pre_rss, final_rss, self.params.rss_slack),
                "check_rss": False, "map_bytes": map_bytes}

    # -- the parent, after --
    def close(self) -> None:
        """Stop the kill thread and close (and so remove) the arena; idempotent."""
        self._stop.set()
        if self._killer is not None:
            self._killer.join()
        if self._arena is not None:
            self._arena.close()

    def finish(self, report: Report) -> SharedReport:
        """The arena's checks (see the module docstring); closes the arena."""
        try:
            self._stop.set()
            if self._killer is not None:
                self._killer.join()
            return self._finish(report)
        finally:
            self.close()

    def _peers(self, role: int, count: int) -> list:
        return [native.peer(self._arena, self.control, role, i) for i in range(count)]

    def _finish(self, report: Report) -> SharedReport:
        arena = self._arena
        producers = self._peers(PRODUCER, self.producers)
        consumers = self._peers(CONSUMER, self.consumers)
        in_rings = native.rings_content(arena, self.control)
        after_run = arena.stats()
        native.teardown_shared(arena, self.control)
        arena.flush()
        reaped_now = arena.reap()
        final = arena.stats()
        if self.kill and self.kill["killed"]:
            self._forgive_kill(report)
        out = SharedReport(report.params, report.workers, report.elapsed, report.library,
                           report.command)
        totals = {name: sum(getattr(p, name) for p in producers + consumers) for name in TOTALS}
        lost = totals["allocs"] - totals["frees"] - totals["drained"] - totals["self_freed"]
        out.arena = {
            "name": arena.name, "path": arena.path, "backing": arena.backing,
            "size_bytes": arena.size, "map_bytes": arena.map_bytes, "ring_slots": self.ring_slots,
            "rings": self.producers * self.consumers, "producers": self.producers,
            "consumers": self.consumers, "totals": totals, "lost_fragments": lost,
            "in_rings_at_end": in_rings, "reaped_by_harness": reaped_now, "kill": self.kill,
            "peers": {"producers": [p.to_dict() for p in producers],
                      "consumers": [c.to_dict() for c in consumers]},
            "stats_before": dataclasses.asdict(self.before),
            "stats_after_run": dataclasses.asdict(after_run),
            "stats_final": dataclasses.asdict(final),
        }
        out.arena_violations = check_arena(self.before, self.after_setup, after_run, final, totals,
                                           lost, in_rings, self.kill_after, self.kill, self.size)
        for w in out.workers:
            check_shared_worker(w, arena.map_bytes, self.params.rss_slack,
                                arena.backing == "hugetlb")
        return out

    def _forgive_kill(self, report: Report) -> None:
        """The consumer we killed: its SIGKILL is the fault asked for, not a violation."""
        w = report.workers[self.kill["worker"]]
        w.violations = [v for v in w.violations
                        if not (v.check == "crash" and w.exitcode == -signal.SIGKILL)]
        if w.exitcode == -signal.SIGKILL:
            w.status = "killed"
