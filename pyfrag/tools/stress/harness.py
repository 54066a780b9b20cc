# SPDX-License-Identifier: GPL-2.0-only
"""The stress harness's processes: workers, the parent's RSS sampling and progress, Ctrl-C.

Contract:
- `run(params, job, view=None) -> Report` starts `params.workers`
  processes (multiprocessing, `params.start_method`), each running the
  job's `run_in_worker`. While they run, the parent samples every worker's
  resident memory (pyfrag.tools.stress.sampling) every `params.interval`
  seconds and reports progress through `view` (`update(elapsed, rows)`,
  `close()`). It returns when every worker has exited, or was stopped as
  hung `params.deadline` seconds after the start; each worker's report is
  judged by pyfrag.tools.stress.judge, then `job.finish(report)` (if the
  job has one) makes the final Report.
- A job is any picklable object with `label(index) -> str`,
  `prepare() -> None` (in the parent, before any worker starts: fail
  early), `run_in_worker(index, slot) -> dict` (in the worker; the dict's
  keys are those of pyfrag.tools.stress.private_job.NativeJob's), and
  optionally `finish(report) -> Report` and `close()` (called instead of
  finish when the run is cut short). A worker that measures another process
  puts that process's pid in its slot's TARGET_PID word.
- Ctrl-C (SIGINT) or SIGTERM in the parent: every worker is terminated
  (then killed if it lingers) and joined before KeyboardInterrupt
  propagates; workers ignore SIGINT and die with the parent even if it is
  killed outright (PR_SET_PDEATHSIG, or a pidfd under forkserver), so no
  process is left behind.
- The command, not `run()`, calls `stop_helpers()` before exiting.
- Importing this module loads neither libpyfrag.so nor psutil.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
import traceback
from ctypes import c_uint64
from dataclasses import dataclass

from ..._native import loader
from .judge import judge_worker
from .params import EXIT_GRACE, Params
from .report import Report, WorkerReport
from .sampling import resident_bytes

# one 64-byte line of shared memory per worker
SLOT_WORDS = 8
PROGRESS, PHASE, TARGET_PID = 0, 1, 2
PHASES = ("starting", "running", "checking", "done")
STARTING, RUNNING, CHECKING, DONE = range(4)


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


# ---- the parent: running them all ----------------------------------------------------------

class NullView:
    """Progress display that shows nothing (see pyfrag.cli.stress_output.ProgressView)."""

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


def run(params: Params, job, view=None) -> Report:
    """Run the stress test; KeyboardInterrupt (after stopping every worker) on Ctrl-C/SIGTERM."""
    try:
        report = _run(params, job, view if view is not None else NullView())
    except BaseException:
        close = getattr(job, "close", None)
        if close is not None:
            close()
        raise
    finish = getattr(job, "finish", None)
    return finish(report) if finish is not None else report


def _run(params: Params, job, view) -> Report:
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
        judge_worker(w.report, w.result, w.phase, w.slot.get(PROGRESS), params)
    library = loader.library_path() if loader.is_loaded() else None
    return Report(params, [w.report for w in running], time.monotonic() - start, library,
                  getattr(job, "argv", None))
