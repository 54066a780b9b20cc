# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag stress --shared`: producer and consumer processes over one shared arena.

Contract:
- `SharedJob` is a stress job (see pyfrag.stress) run by `stress.run`: in
  the parent, prepare() creates the arena "stress-<parent pid>" (removed at
  the end) and lays out, inside it, one SPSC ring per (producer, consumer)
  pair (pf_stress_shared_setup); workers 0..P-1 are producers, P..P+C-1
  consumers; each attaches by name and runs pf_stress_shared_run on a
  thread while its main thread samples the mapping's hugepage coverage
  from /proc/self/smaps, then detaches. The parent samples every worker's
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
  hugetlb arena covered 100% by hugetlb pages. Each broken rule is one
  Violation of the returned SharedReport.
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
from ctypes import POINTER, c_int, c_uint32, c_uint64, c_void_p
from dataclasses import dataclass, field

from . import _lib, stress
from .stress import MiB, Violation

PRODUCER, CONSUMER = 0, 1
ROLES = ("producer", "consumer")
STATES = ("idle", "running", "finished", "dead")
MAX_PEERS = 16                 # PF_STRESS_SHARED_MAX
RING_SLOTS = 1024              # per ring, with up to 4 rings; fewer beyond (ring_slots())
RING_SLOTS_TOTAL = 4096        # slots over all rings, so in-flight memory stays bounded
RING_SLOTS_MIN = 64
DEFAULT_PRODUCERS = DEFAULT_CONSUMERS = 2
MIN_ARENA = 16 * MiB
PAGES_PER_FRAG_PAGE = 8        # a lost fragment pins at most one 32 KiB frag page
ARENA_MARGIN = 4 * MiB         # control block, rings, every process's current frag page
KILL_POLL = 0.01


# ---- the native functions (pyfrag_stress.h) ------------------------------------------------

class RunParams(ctypes.Structure):
    _fields_ = [("size", c_uint32), ("role", c_uint32), ("index", c_uint32), ("nsizes", c_uint32),
                ("sizes", POINTER(c_uint32)), ("size_min", c_uint32), ("size_max", c_uint32),
                ("control", c_uint64), ("duration_ns", c_uint64), ("ops", c_uint64),
                ("seed", c_uint64), ("progress", c_void_p)]


PEER_COUNTERS = ("started_ns", "allocs", "frees", "drained", "self_freed", "corrupt",
                 "alloc_failures", "free_failures", "dead_seen", "elapsed_ns")


class Peer(ctypes.Structure):
    _fields_ = [("size", c_uint32), ("state", c_uint32), ("pid", c_uint32),
                ("unused", c_uint32)] + [(name, c_uint64) for name in PEER_COUNTERS]

    def to_dict(self) -> dict:
        out = {"state": STATES[self.state] if self.state < len(STATES) else str(self.state),
               "pid": self.pid}
        out.update((name, getattr(self, name)) for name in PEER_COUNTERS)
        return out


_NATIVE = [  # name, argtypes, restype
    ("pf_stress_shared_setup", [c_void_p, c_uint32, c_uint32, c_uint32], c_uint64),
    ("pf_stress_shared_run", [c_void_p, POINTER(RunParams), POINTER(Peer)], c_int),
    ("pf_stress_shared_peer", [c_void_p, c_uint64, c_uint32, c_uint32, POINTER(Peer)], c_int),
    ("pf_stress_shared_in_rings", [c_void_p, c_uint64], c_uint64),
    ("pf_stress_shared_teardown", [c_void_p, c_uint64], c_int),
]
_native_lock = threading.Lock()
_native = None


def native():
    """The library with pf_stress_shared_* declared (LibraryError if it lacks them)."""
    global _native
    with _native_lock:
        if _native is None:
            cdll = stress.native()  # pf_stress_error_message, and the library's checks
            _lib.declare_extra(cdll, _NATIVE, _lib.tool_library(stress.STRESS_LIBRARY)[1],
                               "`pyfrag stress --shared`")
            _native = cdll
    return _native


def _fail(what: str):
    err = ctypes.get_errno()
    raise _lib.error_for(err, "%s: %s" % (what, native().pf_stress_error_message().decode()))


def read_peer(arena, control: int, role: int, index: int) -> Peer:
    peer = Peer()
    if native().pf_stress_shared_peer(arena._checked_handle(), control, role, index,
                                      ctypes.byref(peer)) != 0:
        _fail("pf_stress_shared_peer")
    return peer


# ---- sizing --------------------------------------------------------------------------

def ring_slots(producers: int, consumers: int) -> int:
    """Slots per ring: 1024, fewer when there are more than 4 rings (a power of two, >= 64)."""
    slots = RING_SLOTS
    while slots > RING_SLOTS_MIN and slots * producers * consumers > RING_SLOTS_TOTAL:
        slots //= 2
    return slots


def arena_size(producers: int, consumers: int, sizes: stress.Sizes) -> int:
    """Room for every ring full of the largest fragments (a dead consumer's rings fill up),
    twice, plus a margin; at least 16 MiB; in 2 MiB steps."""
    largest = max(sizes.table) if sizes.table else sizes.high
    slots = ring_slots(producers, consumers)
    need = 2 * producers * consumers * slots * largest + ARENA_MARGIN
    need = max(need, MIN_ARENA)
    return -(-need // stress.CHUNK) * stress.CHUNK


# ---- the job --------------------------------------------------------------------------

@dataclass
class SharedReport(stress.Report):
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


class SharedJob:
    """One producer or consumer per worker, over one shared arena (see the module docstring)."""

    def __init__(self, params: stress.Params, producers: int = DEFAULT_PRODUCERS,
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
        from .shared import SharedArena
        cdll = native()
        arena = SharedArena(self.name, create=True, size=self.size, backing=self.backing)
        self._arena = arena
        self.directory = os.path.dirname(arena.path) or None
        self.before = arena.stats()
        control = cdll.pf_stress_shared_setup(arena._checked_handle(), self.producers,
                                              self.consumers, self.ring_slots)
        if control == 2**64 - 1:
            self.close()
            _fail("pf_stress_shared_setup")
        self.control = control
        self.after_setup = arena.stats()
        if self.kill_after:
            self._killer = threading.Thread(target=self._kill_consumer, name="pyfrag-kill-consumer",
                                            daemon=True)
            self._killer.start()

    def _kill_consumer(self) -> None:
        """--fault-kill-consumer: SIGKILL consumer 0 kill_after seconds after its start."""
        arena, stop = self._arena, self._stop
        peer = read_peer(arena, self.control, CONSUMER, 0)
        while peer.state == 0:  # not started yet
            if stop.wait(KILL_POLL):
                return
            peer = read_peer(arena, self.control, CONSUMER, 0)
        due = peer.started_ns / 1e9 + self.kill_after  # CLOCK_MONOTONIC, as time.monotonic()
        if stop.wait(max(0.0, due - time.monotonic())):
            return
        peer = read_peer(arena, self.control, CONSUMER, 0)
        self.kill = {"consumer": 0, "worker": self.producers, "pid": peer.pid,
                     "after_s": self.kill_after, "state": STATES[peer.state], "killed": False}
        if peer.state == 1:
            try:
                os.kill(peer.pid, signal.SIGKILL)
                self.kill["killed"] = True
                self.kill["frees_before"] = peer.frees
            except ProcessLookupError:
                pass

    # -- each worker --
    def run_params(self, role: int, index: int, slot: stress.Slot, keep: list) -> RunParams:
        p = self.params
        rp = RunParams(size=ctypes.sizeof(RunParams), role=role, index=index, control=self.control)
        if p.sizes.table:
            table = (c_uint32 * len(p.sizes.table))(*p.sizes.table)
            keep.append(table)
            rp.sizes, rp.nsizes = ctypes.cast(table, POINTER(c_uint32)), len(table)
        else:
            rp.size_min, rp.size_max = p.sizes.low, p.sizes.high
        rp.duration_ns, rp.ops = int(p.duration * 1e9), p.ops
        rp.seed = p.seed * 1000003 + role * 1009 + index
        rp.progress = slot.progress_address
        return rp

    def run_in_worker(self, index: int, slot: stress.Slot) -> dict:
        from .shared import SharedArena
        role, i = self.role_of(index)
        pre_rss = stress.self_resident_bytes()
        arena = SharedArena(self.name, directory=self.directory)
        try:
            slot.set(stress.TARGET_PID, os.getpid())
            keep: list = []
            rp = self.run_params(role, i, slot, keep)
            slot.set(stress.PHASE, stress.RUNNING)
            peer, coverage = _run_sampling_coverage(arena, rp)
            slot.set(stress.PHASE, stress.CHECKING)
            map_bytes = arena.map_bytes
        finally:
            arena.close()
        final_rss = stress.self_resident_bytes()
        violations = []
        growth = final_rss - pre_rss
        if growth > self.params.rss_slack:
            violations.append(("rss", "final RSS %.1f MiB after detaching is %.1f MiB above the "
                               "pre-attach %.1f MiB; the bound is the slack, %.1f MiB"
                               % (final_rss / MiB, growth / MiB, pre_rss / MiB,
                                  self.params.rss_slack / MiB)))
        counts = peer.to_dict()
        return {"ops": peer.allocs if role == PRODUCER else peer.frees,
                "elapsed_ns": peer.elapsed_ns, "threads": 1, "counts": counts,
                "pre_rss": pre_rss, "final_rss": final_rss, "retain": None,
                "hugepage": coverage, "stats_after": None, "violations": violations,
                "check_rss": False, "map_bytes": map_bytes}

    # -- the parent, after --
    def close(self) -> None:
        """Stop the kill thread and close (and so remove) the arena; idempotent."""
        self._stop.set()
        if self._killer is not None:
            self._killer.join()
        if self._arena is not None:
            self._arena.close()

    def finish(self, report: stress.Report) -> SharedReport:
        """The arena's checks (see the module docstring); closes the arena."""
        try:
            self._stop.set()
            if self._killer is not None:
                self._killer.join()
            return self._finish(report)
        finally:
            self.close()

    def _peers(self) -> tuple:
        arena = self._arena
        producers = [read_peer(arena, self.control, PRODUCER, i) for i in range(self.producers)]
        consumers = [read_peer(arena, self.control, CONSUMER, i) for i in range(self.consumers)]
        return producers, consumers

    def _finish(self, report: stress.Report) -> SharedReport:
        arena, cdll = self._arena, native()
        producers, consumers = self._peers()
        in_rings = cdll.pf_stress_shared_in_rings(arena._checked_handle(), self.control)
        after_run = arena.stats()
        if cdll.pf_stress_shared_teardown(arena._checked_handle(), self.control) != 0:
            _fail("pf_stress_shared_teardown")
        arena.flush()
        reaped_now = arena.reap()
        final = arena.stats()
        killed = bool(self.kill and self.kill["killed"])
        if killed:
            self._forgive_kill(report)
        out = SharedReport(report.params, report.workers, report.elapsed, report.library,
                           report.command)
        totals = {name: sum(getattr(p, name) for p in producers + consumers)
                  for name in ("allocs", "frees", "drained", "self_freed", "corrupt",
                               "alloc_failures", "free_failures", "dead_seen")}
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
        out.arena_violations = self._check(out, totals, lost, in_rings, after_run, final, killed)
        return out

    def _forgive_kill(self, report: stress.Report) -> None:
        """The consumer we killed: its SIGKILL is the fault asked for, not a violation."""
        w = report.workers[self.kill["worker"]]
        w.violations = [v for v in w.violations
                        if not (v.check == "crash" and w.exitcode == -signal.SIGKILL)]
        if w.exitcode == -signal.SIGKILL:
            w.status = "killed"

    def _check(self, out, totals, lost, in_rings, after_run, final, killed) -> list:
        v = []

        def bad(check, message):
            v.append(Violation(None, None, check, message))

        before, setup = self.before, self.after_setup
        kills = 1 if killed else 0
        if self.kill_after and not killed:
            bad("fault", "--fault-kill-consumer %g: consumer 0 was %s at that time, not killed"
                % (self.kill_after, self.kill["state"] if self.kill else "not started"))
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
                                                      self.size // MiB))
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
        for w in out.workers:
            self._check_worker(w, out.arena["map_bytes"], bad)
        return v

    def _check_worker(self, w, map_bytes: int, bad) -> None:
        if w.pre_rss is None:
            return  # killed, or never reported: its exit is judged already
        bound = map_bytes + self.params.rss_slack
        if w.peak_rss - w.pre_rss > bound:
            w.violations.append(Violation(
                w.index, w.pid, "rss", "peak RSS %.1f MiB is %.1f MiB above the pre-attach %.1f "
                "MiB; the bound is the arena's mapping %.1f MiB + slack %.1f MiB"
                % (w.peak_rss / MiB, (w.peak_rss - w.pre_rss) / MiB, w.pre_rss / MiB,
                   map_bytes / MiB, self.params.rss_slack / MiB)))
        h = w.hugepage
        if self._arena.backing == "hugetlb" and h and h["arena_resident_bytes"] and \
                h["hugetlb"] < 1.0:
            w.violations.append(Violation(
                w.index, w.pid, "hugepages", "a hugetlb arena, yet only %.0f%% of its resident "
                "bytes in this process were on hugetlb pages" % (100 * h["hugetlb"])))


def _coverage_dict(cov) -> dict:
    resident = cov.resident
    return {"coverage": cov.huge_fraction,
            "hugetlb": cov.hugetlb / resident if resident else 0.0,
            "thp": cov.thp / resident if resident else 0.0,
            "arena_resident_bytes": resident}


def _run_sampling_coverage(arena, rp: RunParams):
    """pf_stress_shared_run on a thread; meanwhile read the mapping's smaps, keep the fullest."""
    cdll = native()
    handle = arena._checked_handle()
    outcome: dict = {}

    def call():
        peer = Peer()
        if cdll.pf_stress_shared_run(handle, ctypes.byref(rp), ctypes.byref(peer)) != 0:
            try:
                _fail("pf_stress_shared_run")
            except BaseException as exc:  # re-raised on the worker's main thread
                outcome["error"] = exc
        outcome["peer"] = peer

    runner = threading.Thread(target=call, name="pf_stress_shared_run")
    runner.start()
    best = None
    runner.join(0.05)
    while True:
        cov = arena.hugepage_coverage()
        if best is None or cov.resident > best.resident:
            best = cov
        if not runner.is_alive():
            break
        runner.join(stress.COVERAGE_INTERVAL)
    runner.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["peer"], _coverage_dict(best)


def run(params: stress.Params, job: SharedJob, view=None) -> SharedReport:
    """stress.run with the shared job, then the arena's checks; the arena is always removed."""
    try:
        report = stress.run(params, job=job, view=view)
    except BaseException:
        job.close()
        raise
    return job.finish(report)
