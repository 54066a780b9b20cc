# SPDX-License-Identifier: GPL-2.0-only
"""The stress harness behind `pyfrag stress`: worker processes, RSS sampling, invariants.

Contract:
- `run(params, job=None, view=None) -> Report` starts `params.workers`
  processes (multiprocessing, `params.start_method`), each running one *job*
  (by default `NativeJob`: pf_stress_run, threads looping in C). While they
  run, the parent samples every worker's resident memory every
  `params.interval` seconds and reports progress through `view`. It returns
  when every worker has exited, or was stopped as hung `params.timeout`
  seconds after the start.
- Resident memory ("RSS") is psutil's rss plus the process's hugetlb pages
  (HugetlbPages in /proc/PID/status), which the kernel leaves out of rss.
- Every worker checks itself after its run (see `check_worker`): every
  fragment freed, no page in use after drain, committed chunks back to
  min(PYFRAG_RETAIN, peak), the library's counters agreeing with the
  workload's, no corrupt pattern, no failed call. The parent adds: no worker
  crashed (a negative exit code is a signal, named), exited without a
  result, or hung; final RSS <= pre-run RSS + PYFRAG_RETAIN x 2 MiB + peak
  committed bytes / 256 (page metadata, never unmapped) + `params.rss_slack`
  (4 MiB), see `rss_bound`. Each broken rule is one `Violation`;
  `Report.ok` is true when there are none.
- Ctrl-C (SIGINT) or SIGTERM in the parent: every worker is terminated
  (then killed if it lingers) and joined before KeyboardInterrupt
  propagates; workers ignore SIGINT and die with the parent even if it is
  killed outright (PR_SET_PDEATHSIG, or a pidfd under forkserver), so no
  process is left behind.
- A job is any picklable object with `label(index) -> str`,
  `prepare() -> None` (in the parent, before any worker starts: fail early)
  and `run_in_worker(index, slot) -> dict` (in the worker; the dict's keys
  are those of `NativeJob.run_in_worker`). `pyfrag.stress_cmd.CommandJob`
  (`--cmd`) is the other: its worker puts the program's pid in the slot's
  TARGET_PID word so the parent samples that process.
- The command, not `run()`, calls `stop_helpers()` before exiting.
- Importing this module loads neither libpyfrag.so nor psutil.
"""
from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
import traceback
from ctypes import POINTER, c_char_p, c_int, c_uint32, c_uint64, c_void_p
from dataclasses import dataclass, field

from . import _lib

WORKLOADS = ("ring", "burst", "churn", "mixed")  # enum pf_stress_workload order
START_METHODS = ("spawn", "fork", "forkserver")
IMIX = (64,) * 7 + (576,) * 4 + (1500,)  # 64/576/1500 bytes at 7:4:1
FRAG_MAX = 32768
CHUNK = 2 * 1024 * 1024
MiB = 1024 * 1024

DEFAULT_DURATION = 9.0    # seconds of native run: the whole command takes about 9.5 s on 2 cores
DEFAULT_INTERVAL = 0.1    # RSS sampling period, seconds
DEFAULT_RSS_SLACK = 4 * MiB
META_PER_CHUNK = 512 * 16  # struct pf_page per 4 KiB page: 8 KiB per 2 MiB chunk, kept for good
DEFAULT_TIMEOUT_EXTRA = 30.0  # a worker still alive duration + this after the start is hung
DEFAULT_OPS_TIMEOUT = 300.0
LEAK_MAX = 1024           # --fault-leak leaks at most this many fragments per worker
BURST = 32
MAX_SIZE_TABLE = 1 << 20
COVERAGE_INTERVAL = 0.5   # how often a worker reads its own smaps during the run
EXIT_GRACE = 5.0          # seconds a worker may take to exit after sending its result

# one 64-byte line of shared memory per worker
SLOT_WORDS = 8
PROGRESS, PHASE, TARGET_PID = 0, 1, 2
PHASES = ("starting", "running", "checking", "done")
STARTING, RUNNING, CHECKING, DONE = range(4)


# ---- parameters ------------------------------------------------------------------

@dataclass(frozen=True)
class Sizes:
    """Fragment sizes: a table picked from uniformly, or a range [low, high]."""
    text: str
    table: tuple = ()
    low: int = 0
    high: int = 0

    def to_json(self) -> dict:
        if self.table:
            return {"spec": self.text, "table": len(self.table), "min": min(self.table),
                    "max": max(self.table), "mean": sum(self.table) / len(self.table)}
        return {"spec": self.text, "min": self.low, "max": self.high}


def _check_size(size: int, where: str) -> int:
    if not 1 <= size <= FRAG_MAX:
        raise ValueError("%s: a fragment size must be 1..%d bytes, not %d"
                         % (where, FRAG_MAX, size))
    return size


def _sizes_from_file(path: str) -> tuple:
    try:
        with open(path) as f:
            words = [w for line in f for w in line.split("#", 1)[0].split()]
    except OSError as exc:
        raise ValueError("cannot read sizes file %s: %s" % (path, exc.strerror)) from None
    sizes = []
    for word in words:
        if not word.isdigit():
            raise ValueError("%s: %r is not a size in bytes" % (path, word))
        sizes.append(_check_size(int(word), path))
    if not sizes or len(sizes) > MAX_SIZE_TABLE:
        raise ValueError("%s: needs 1..%d sizes, has %d" % (path, MAX_SIZE_TABLE, len(sizes)))
    return tuple(sizes)


def parse_sizes(text: str) -> Sizes:
    """`imix`, a size (`1500`), a range (`64-1500`) or a file of sizes; ValueError if bad."""
    if text == "imix":
        return Sizes(text, table=IMIX)
    if text.isdigit():
        return Sizes(text, table=(_check_size(int(text), "--sizes"),))
    low, dash, high = text.partition("-")
    if dash and low.isdigit() and high.isdigit():
        low_n, high_n = _check_size(int(low), "--sizes"), _check_size(int(high), "--sizes")
        if low_n > high_n:
            raise ValueError("--sizes %s: the range is empty (MIN > MAX)" % text)
        return Sizes(text, low=low_n, high=high_n)
    if os.path.exists(text):
        return Sizes(text, table=_sizes_from_file(text))
    raise ValueError("--sizes %r is not imix, a size, MIN-MAX, or an existing file" % text)


@dataclass(frozen=True)
class Params:
    """One stress run (the CLI's options; ValueError for a value no run can use)."""
    workload: str = "mixed"
    workers: int = 2
    pairs: int = 1
    duration: float = DEFAULT_DURATION
    ops: int = 0                  # per worker; 0: run for `duration`
    sizes: Sizes = Sizes("imix", table=IMIX)
    seed: int = 1
    start_method: str = "spawn"
    interval: float = DEFAULT_INTERVAL
    rss_slack: int = DEFAULT_RSS_SLACK
    timeout: float = 0.0          # 0: duration + 30 s (300 s with ops)
    fault_leak: int = 0           # leak every Nth fragment (0: never)
    fault_crash: int = -1         # index of the worker to crash (-1: none)

    def __post_init__(self):
        if self.workload not in WORKLOADS or self.start_method not in START_METHODS:
            raise ValueError("workload must be one of %s and start_method one of %s"
                             % (WORKLOADS, START_METHODS))
        if self.workers < 1 or self.pairs < 1 or (self.duration <= 0 and self.ops <= 0):
            raise ValueError("workers and pairs must be >= 1, and duration or ops > 0")

    @property
    def deadline(self) -> float:
        if self.timeout:
            return self.timeout
        return DEFAULT_OPS_TIMEOUT if self.ops else self.duration + DEFAULT_TIMEOUT_EXTRA

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["sizes"] = self.sizes.to_json()
        out["timeout"] = self.deadline
        out["rss_bound"] = ("final RSS <= pre-run RSS + PYFRAG_RETAIN x 2 MiB + peak committed "
                            "bytes / 256 + rss_slack")
        return out


def default_workers() -> int:
    return os.cpu_count() or 2


# ---- the native functions (pyfrag_stress.h) -------------------------------------------

class StressParams(ctypes.Structure):
    _fields_ = [("size", c_uint32), ("workload", c_uint32), ("pairs", c_uint32),
                ("burst", c_uint32), ("ring_slots", c_uint32), ("churn_slots", c_uint32),
                ("duration_ns", c_uint64), ("ops", c_uint64), ("sizes", POINTER(c_uint32)),
                ("nsizes", c_uint32), ("size_min", c_uint32), ("size_max", c_uint32),
                ("unused", c_uint32), ("leak_every", c_uint64), ("leak_max", c_uint64),
                ("crash_after_ns", c_uint64), ("seed", c_uint64), ("progress", c_void_p)]


class StressResult(ctypes.Structure):
    _fields_ = [("size", c_uint32), ("threads", c_uint32)] + [
        (name, c_uint64) for name in ("ops", "allocs", "frees", "leaked", "corrupt",
                                      "alloc_failures", "free_failures", "elapsed_ns")]


class _ResultRoom(ctypes.Union):
    """Room for a larger pf_stress_result_t than ours, so a mismatched library cannot overrun."""
    _fields_ = [("result", StressResult), ("room", ctypes.c_char * 512)]


_NATIVE = [  # name, argtypes, restype
    ("pf_stress_run", [POINTER(StressParams), c_void_p], c_int),
    ("pf_stress_error_message", [], c_char_p),
    ("pf_stress_workload_name", [ctypes.c_uint], c_char_p),
]
_native_lock = threading.Lock()
_native = None
STRESS_LIBRARY = "libpyfrag_stress.so"  # the stress loops, beside libpyfrag.so


def native():
    """The library with the pf_stress_* functions declared (LibraryError if it lacks them)."""
    global _native
    with _native_lock:
        if _native is None:
            cdll, path = _lib.tool_library(STRESS_LIBRARY)
            _lib.declare_extra(cdll, _NATIVE, path, "the stress loops")
            names = tuple(cdll.pf_stress_workload_name(i).decode() for i in range(len(WORKLOADS)))
            if names != WORKLOADS:
                raise _lib.LibraryError("%s has workloads %s, this package expects %s; %s"
                                        % (path, names, WORKLOADS, _lib.HOW_TO_FIX))
            _native = cdll
    return _native


def run_native(params: StressParams) -> StressResult:
    """pf_stress_run; raises ValueError/MemoryError/FragError with the library's sentence."""
    cdll = native()
    room = _ResultRoom()
    if cdll.pf_stress_run(ctypes.byref(params), ctypes.byref(room)) != 0:
        err = ctypes.get_errno()
        raise _lib.error_for(err, "pf_stress_run: %s" % cdll.pf_stress_error_message().decode())
    if room.result.size != ctypes.sizeof(StressResult):
        raise _lib.LibraryError("%s: pf_stress_result_t has size %d, this package expects %d; %s"
                                % (_lib.tool_library(STRESS_LIBRARY)[1], room.result.size,
                                   ctypes.sizeof(StressResult), _lib.HOW_TO_FIX))
    return room.result


# ---- measuring a process -----------------------------------------------------------------

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


# ---- shared memory between parent and workers --------------------------------------------

class Slot:
    """One worker's words in the shared array: progress (fragments), phase, target pid."""

    def __init__(self, shared, index: int):
        self.shared = shared
        self.base = index * SLOT_WORDS

    def get(self, word: int) -> int:
        return self.shared[self.base + word]

    def set(self, word: int, value: int) -> None:
        self.shared[self.base + word] = value

    @property
    def progress_address(self) -> int:
        return ctypes.addressof(self.shared) + (self.base + PROGRESS) * ctypes.sizeof(c_uint64)


# ---- the native job (runs in each worker) ----------------------------------------------------

@dataclass
class NativeJob:
    """Run one native workload (pf_stress_run) in each worker, then check the library's state."""
    params: Params

    def label(self, index: int) -> str:
        return self.params.workload

    def prepare(self) -> None:
        native()  # a missing or stale library fails here, before any worker starts

    def native_params(self, index: int, slot: Slot, keep) -> StressParams:
        p = self.params
        sp = StressParams(size=ctypes.sizeof(StressParams), ring_slots=1024, churn_slots=1024)
        sp.workload = WORKLOADS.index(p.workload)
        sp.pairs, sp.burst, sp.ops = p.pairs, BURST, p.ops
        sp.duration_ns = int(p.duration * 1e9)
        if p.sizes.table:
            table = (c_uint32 * len(p.sizes.table))(*p.sizes.table)
            keep.append(table)
            sp.sizes, sp.nsizes = ctypes.cast(table, POINTER(c_uint32)), len(table)
        else:
            sp.size_min, sp.size_max = p.sizes.low, p.sizes.high
        sp.leak_every, sp.leak_max = p.fault_leak, LEAK_MAX
        if p.fault_crash == index:
            sp.crash_after_ns = int((p.duration / 2 if not p.ops else 0.1) * 1e9)
        sp.seed = p.seed * 1000003 + index
        sp.progress = slot.progress_address
        return sp

    def run_in_worker(self, index: int, slot: Slot) -> dict:
        from .options import get_option, thread_flush, trim
        from .stats import stats as read_stats
        native().pf_init()
        slot.set(TARGET_PID, os.getpid())
        keep: list = []
        sp = self.native_params(index, slot, keep)
        before, pre_rss = read_stats(), self_resident_bytes()
        slot.set(PHASE, RUNNING)
        result, coverage = _run_sampling_coverage(sp)
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
            "pre_rss": pre_rss, "final_rss": self_resident_bytes(), "retain": retain,
            "hugepage": coverage, "stats_after": dataclasses.asdict(after),
            "violations": check_worker(result, before, after, retain, self.params.fault_leak),
        }


def _coverage_dict(cov) -> dict:
    return {"coverage": cov.huge_fraction, "hugetlb": cov.hugetlb_fraction,
            "thp": cov.thp_fraction, "arena_resident_bytes": cov.resident}


def _run_sampling_coverage(sp: StressParams):
    """Run pf_stress_run on a thread; meanwhile read the arena's smaps, keep the fullest sample."""
    from .stats import hugepage_coverage
    outcome: dict = {}

    def call():
        try:
            outcome["result"] = run_native(sp)
        except BaseException as exc:  # re-raised on the worker's main thread
            outcome["error"] = exc

    runner = threading.Thread(target=call, name="pf_stress_run")
    runner.start()
    best = None
    runner.join(0.05)
    while True:
        cov = hugepage_coverage()
        if best is None or cov.resident > best.resident:
            best = cov
        if not runner.is_alive():
            break
        runner.join(COVERAGE_INTERVAL)
    runner.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"], _coverage_dict(best)


def _leak_note(fault_leak: int) -> str:
    return " (--fault-leak %d asked for this)" % fault_leak if fault_leak else ""


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


# ---- the worker process ------------------------------------------------------------------

def _die_with_parent(main_pid: int) -> None:
    """Die (SIGKILL) when the harness's process goes away, however it goes.

    spawn and fork: the kernel does it (PR_SET_PDEATHSIG). forkserver: our
    parent is the fork server, which outlives the harness while any worker
    lives, so a thread waits on a pidfd of the harness instead.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == main_pid:
        return
    try:
        pidfd = os.pidfd_open(main_pid)
    except ProcessLookupError:
        os._exit(1)  # already gone
    except (OSError, AttributeError):
        return
    threading.Thread(target=_kill_self_when_ready, args=(pidfd,), name="pyfrag-watch-parent",
                     daemon=True).start()


def _kill_self_when_ready(pidfd: int) -> None:
    select.select([pidfd], [], [])  # a pidfd turns readable when its process exits
    os.kill(os.getpid(), signal.SIGKILL)


def worker_main(job, index: int, shared, conn, main_pid: int) -> None:
    """Entry point of a worker process: run the job, send ("ok", dict) or ("error", text)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    _die_with_parent(main_pid)
    slot = Slot(shared, index)
    try:
        result = job.run_in_worker(index, slot)
    except BaseException:  # noqa: BLE001 - everything goes to the parent
        conn.send(("error", traceback.format_exc()))
        conn.close()
        sys.exit(1)
    slot.set(PHASE, DONE)
    conn.send(("ok", result))
    conn.close()


# ---- results ---------------------------------------------------------------------------

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


def rss_bound(report: WorkerReport, slack: int) -> int | None:
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


# ---- the parent: one running worker ----------------------------------------------------------

@dataclass(frozen=True)
class WorkerRow:
    """What a progress view shows about one worker."""
    index: int
    pid: int | None
    state: str          # starting, running, checking, done, exited [CODE]
    ops: int            # fragments so far
    rate: float         # fragments per second over the last sample period
    rss: int | None     # resident bytes at the last sample

class _Running:
    """A worker process as the parent sees it: sampling, result, exit, verdict."""

    def __init__(self, index: int, job, slot: Slot, report: WorkerReport):
        self.index, self.job, self.slot, self.report = index, job, slot, report
        self.process = self.conn = None
        self._ps = None
        self.result = None
        self.result_at = None
        self.last_ops = 0
        self.rate = 0.0

    @property
    def finished(self) -> bool:
        return self.report.ended_at is not None

    def start(self, ctx, shared, start: float) -> None:
        recv_end, send_end = ctx.Pipe(duplex=False)
        args = (self.job, self.index, shared, send_end, os.getpid())
        self.process = ctx.Process(target=worker_main, name="pyfrag-stress-%d" % self.index,
                                   args=args, daemon=True)
        self.process.start()
        send_end.close()
        self.conn = recv_end
        self.report.pid = self.process.pid
        self.report.started_at = time.monotonic() - start

    def sample(self, t: float, dt: float) -> None:
        """Record resident memory and the ops rate at t seconds since the start."""
        import psutil
        ops = self.slot.get(PROGRESS)
        self.rate = (ops - self.last_ops) / dt if dt > 0 else 0.0
        self.last_ops = ops
        pid = self.slot.get(TARGET_PID) or self.report.pid
        try:
            if self._ps is None or self._ps.pid != pid:
                self._ps = psutil.Process(pid)
            rss = resident_bytes(self._ps)
        except psutil.Error:
            return
        if rss == 0:  # exited, not yet reaped: a zombie has no memory left to count
            return
        self.report.samples.append((t, rss))
        self.report.peak_rss = max(self.report.peak_rss, rss)

    def collect(self, now: float) -> None:
        """Take the result if it arrived; notice the exit."""
        try:
            while self.result is None and self.conn.poll():
                self.result = self.conn.recv()
                self.result_at = now
        except (EOFError, OSError):
            pass
        if self.process.exitcode is not None:
            self.process.join()
            self.report.exitcode = self.process.exitcode
            self.report.ended_at = now

    def stop(self, now: float, status: str) -> None:
        """Terminate (SIGTERM, then SIGKILL) and reap; mark the report."""
        if self.process is None:
            return
        if self.process.exitcode is None:
            self.process.terminate()
            self.process.join(2.0)
            if self.process.exitcode is None:
                self.process.kill()
                self.process.join()
            if not self.finished:
                self.report.status = status
                self.report.exitcode = self.process.exitcode
                self.report.ended_at = now
        self.conn.close()

    @property
    def phase(self) -> str:
        return PHASES[min(self.slot.get(PHASE), DONE)]

    def row(self) -> WorkerRow:
        r = self.report
        if self.finished:
            state = "exited %s" % r.exitcode if r.exitcode else "exited"
            return WorkerRow(r.index, r.pid, state, self.last_ops, 0.0, None)
        rss = r.samples[-1][1] if r.samples else None
        return WorkerRow(r.index, r.pid, self.phase, self.last_ops, self.rate, rss)


# ---- the parent: verdicts --------------------------------------------------------------------

def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "signal %d" % number


def _exit_violation(w: _Running, params: Params, has_result: bool):
    """What the way the worker ended says, as a Violation, or None if it ended well."""
    r = w.report
    code = r.exitcode
    if r.status == "hung":
        return Violation(r.index, r.pid, "hang", "still alive %.1f s after the start (timeout "
                         "%.1f s), last phase %s after %d ops; stopped it"
                         % (r.ended_at, params.deadline, w.phase, r.ops))
    if r.status == "lingered":
        return Violation(r.index, r.pid, "hang", "sent its result but did not exit within %.0f s; "
                         "stopped it" % EXIT_GRACE)
    if code is not None and code < 0:
        why = " (--fault-crash asked for this)" if params.fault_crash == r.index else ""
        return Violation(r.index, r.pid, "crash", "died of %s (signal %d) %.1f s after its start, "
                         "while %s, after %d ops%s"
                         % (signal_name(-code), -code, r.ended_at - r.started_at, w.phase, r.ops,
                            why))
    if not has_result:
        text = w.result[1] if w.result else ""
        r.error = text or None
        last = text.strip().splitlines()[-1] if text.strip() else "no result sent"
        return Violation(r.index, r.pid, "error", "exited with status %s: %s" % (code, last))
    if code:
        return Violation(r.index, r.pid, "exit", "exited with status %s after sending its result"
                         % code)
    return None


def _judge_result(w: _Running, params: Params) -> None:
    r = w.report
    data = w.result[1]
    r.ops, r.elapsed_ns = data["ops"], data["elapsed_ns"]
    r.pre_rss, r.final_rss, r.retain = data["pre_rss"], data["final_rss"], data["retain"]
    r.hugepage, r.counts, r.stats_after = data["hugepage"], data["counts"], data["stats_after"]
    r.peak_rss = max(r.peak_rss, r.pre_rss or 0, r.final_rss or 0)
    for check, message in data["violations"]:
        r.violations.append(Violation(r.index, r.pid, check, message))
    if not data.get("check_rss", True):
        return  # a job whose process ends (--cmd): no pre-run RSS to come back to
    bound = rss_bound(r, params.rss_slack)
    growth = r.final_rss - r.pre_rss
    if growth > bound:
        injected = _leak_note(params.fault_leak)
        r.violations.append(Violation(
            r.index, r.pid, "rss", "final RSS %.1f MiB is %.1f MiB above the pre-run %.1f MiB; the "
            "bound is %.1f MiB (PYFRAG_RETAIN %d x 2 MiB + page metadata %.1f MiB + slack %.1f "
            "MiB)%s"
            % (r.final_rss / MiB, growth / MiB, r.pre_rss / MiB, bound / MiB, r.retain,
               (bound - r.retain * CHUNK - params.rss_slack) / MiB, params.rss_slack / MiB,
               injected)))


def _judge(w: _Running, params: Params) -> None:
    r = w.report
    r.ops = max(r.ops, w.slot.get(PROGRESS))
    has_result = w.result is not None and w.result[0] == "ok"
    if has_result:
        _judge_result(w, params)
    ending = _exit_violation(w, params, has_result)
    if ending is not None:
        r.violations.append(ending)
        statuses = {"hang": "hung", "crash": "crashed", "error": "error"}
        r.status = statuses.get(ending.check, "failed")
    else:
        r.status = "failed" if r.violations else "ok"


# ---- the parent: running them all ----------------------------------------------------------

class NullView:
    """Progress display that shows nothing (see cmd_stress.ProgressView for the real one)."""

    def update(self, elapsed: float, rows: list) -> None:
        pass

    def close(self) -> None:
        pass


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _start_all(ctx, running: list, shared, start: float) -> None:
    """Start every worker with SIGINT ignored, so they inherit that (even across exec)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for w in running:
            w.start(ctx, shared, start)
    finally:
        signal.signal(signal.SIGINT, previous)


def _watch(running: list, params: Params, view, start: float) -> None:
    """Sample, collect and display until every worker has exited or the deadline passed."""
    last = start
    while True:
        now = time.monotonic()
        for w in running:
            if not w.finished:
                w.collect(now - start)
            if not w.finished:
                w.sample(now - start, now - last)
            if w.result is not None and not w.finished and now - start - w.result_at > EXIT_GRACE:
                w.stop(now - start, "lingered")  # sent its result but does not exit
        last = now
        view.update(now - start, [w.row() for w in running])
        if all(w.finished for w in running):
            return
        if now - start > params.deadline:
            for w in running:
                if not w.finished:
                    w.stop(now - start, "hung")
            return
        time.sleep(max(0.0, params.interval - (time.monotonic() - now)))


def _stop_all(running: list, start: float) -> None:
    # a second Ctrl-C must not cut this short
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for w in running:
            if w.process is not None and w.process.exitcode is None:
                w.process.terminate()
        for w in running:
            w.stop(time.monotonic() - start, "stopped")
    finally:
        signal.signal(signal.SIGINT, previous)


def stop_helpers() -> None:
    """Stop multiprocessing's helper processes (forkserver, then resource tracker) and reap them.

    For a command about to exit: they would exit by themselves once this
    process is gone, but as zombies of init for a moment. A later use of
    multiprocessing starts them again. (Private CPython methods, if present.)
    """
    from multiprocessing import forkserver, resource_tracker
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _stop_each((getattr(forkserver, "_forkserver", None),
                    getattr(resource_tracker, "_resource_tracker", None)))
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_each(helpers) -> None:
    for helper in helpers:
        stop = getattr(helper, "_stop", None)
        if stop is None:
            continue
        try:
            stop()
        except (OSError, RuntimeError, ChildProcessError):
            pass


def run(params: Params, job=None, view=None) -> Report:
    """Run the stress test; KeyboardInterrupt (after stopping every worker) on Ctrl-C/SIGTERM."""
    job = job if job is not None else NativeJob(params)
    view = view if view is not None else NullView()
    job.prepare()
    ctx = multiprocessing.get_context(params.start_method)
    shared = ctx.RawArray(c_uint64, params.workers * SLOT_WORDS)
    running = [_Running(i, job, Slot(shared, i), WorkerReport(i, job.label(i)))
               for i in range(params.workers)]
    previous_term = signal.signal(signal.SIGTERM, _interrupt)
    start = time.monotonic()
    try:
        _start_all(ctx, running, shared, start)
        _watch(running, params, view, start)
    finally:
        _stop_all(running, start)
        signal.signal(signal.SIGTERM, previous_term)
        view.close()
    for w in running:
        _judge(w, params)
    library = _lib.library_path() if _lib.is_loaded() else None
    return Report(params, [w.report for w in running], time.monotonic() - start, library,
                  getattr(job, "argv", None))
