# SPDX-License-Identifier: GPL-2.0-only
"""The native stress loops (pyfrag_stress.h, libpyfrag_stress.so): structs and calls.

Contract:
- `native()` is libpyfrag_stress.so, loaded once from beside the loaded
  libpyfrag.so and after it (pyfrag._native.loader.tool_library), with every
  pf_stress_* function declared; LibraryError if it lacks one or counts
  other workloads than params.WORKLOADS.
- `run(params)` is pf_stress_run (one process's threads, in C); `run_shared`,
  `peer`, `setup_shared`, `rings_content`, `teardown_shared` are the
  pf_stress_shared_* calls on an open pyfrag.SharedArena, each a call in
  flight on it (its close waits for them). A failure raises
  pyfrag's exception for its errno with the library's sentence; a result
  struct of another size than ours is a LibraryError.
- `set_sizes(struct, sizes, keep)` fills the sizes fields that both
  parameter structs share (a table is kept alive in `keep`).
- Importing this module loads nothing.
"""
from __future__ import annotations

import ctypes
import threading
from ctypes import POINTER, c_char_p, c_int, c_uint, c_uint32, c_uint64, c_void_p

from ..._native import loader
from ..._native.errors import LibraryError, error_for
from ..._native.handles import ArenaHandle
from .params import WORKLOADS

STRESS_LIBRARY = "libpyfrag_stress.so"  # the stress loops, beside libpyfrag.so
NO_CONTROL = 2**64 - 1  # pf_stress_shared_setup's failure


class StressParams(ctypes.Structure):
    """pf_stress_params_t: one process's workload."""
    _fields_ = [("size", c_uint32), ("workload", c_uint32), ("pairs", c_uint32),
                ("burst", c_uint32), ("ring_slots", c_uint32), ("churn_slots", c_uint32),
                ("duration_ns", c_uint64), ("ops", c_uint64), ("sizes", POINTER(c_uint32)),
                ("nsizes", c_uint32), ("size_min", c_uint32), ("size_max", c_uint32),
                ("unused", c_uint32), ("leak_every", c_uint64), ("leak_max", c_uint64),
                ("crash_after_ns", c_uint64), ("seed", c_uint64), ("progress", c_void_p)]


class StressResult(ctypes.Structure):
    """pf_stress_result_t."""
    _fields_ = [("size", c_uint32), ("threads", c_uint32)] + [
        (name, c_uint64) for name in ("ops", "allocs", "frees", "leaked", "corrupt",
                                      "alloc_failures", "free_failures", "elapsed_ns")]


class _ResultRoom(ctypes.Union):
    """Room for a larger pf_stress_result_t than ours, so a mismatched library cannot overrun."""
    _fields_ = [("result", StressResult), ("room", ctypes.c_char * 512)]


class RunParams(ctypes.Structure):
    """pf_stress_shared_params_t: one producer's or consumer's run."""
    _fields_ = [("size", c_uint32), ("role", c_uint32), ("index", c_uint32), ("nsizes", c_uint32),
                ("sizes", POINTER(c_uint32)), ("size_min", c_uint32), ("size_max", c_uint32),
                ("control", c_uint64), ("duration_ns", c_uint64), ("ops", c_uint64),
                ("seed", c_uint64), ("progress", c_void_p)]


PEER_STATES = ("idle", "running", "finished", "dead")
PEER_COUNTERS = ("started_ns", "allocs", "frees", "drained", "self_freed", "corrupt",
                 "alloc_failures", "free_failures", "dead_seen", "elapsed_ns")


class Peer(ctypes.Structure):
    """pf_stress_shared_peer_t: one process's counters, kept in the arena (a dead one's too)."""
    _fields_ = [("size", c_uint32), ("state", c_uint32), ("pid", c_uint32),
                ("unused", c_uint32)] + [(name, c_uint64) for name in PEER_COUNTERS]

    def to_dict(self) -> dict:
        out = {"state": PEER_STATES[self.state] if self.state < len(PEER_STATES)
               else str(self.state), "pid": self.pid}
        out.update((name, getattr(self, name)) for name in PEER_COUNTERS)
        return out


_TABLE = [  # name, argtypes, restype
    ("pf_stress_run", [POINTER(StressParams), c_void_p], c_int),
    ("pf_stress_error_message", [], c_char_p),
    ("pf_stress_workload_name", [c_uint], c_char_p),
    ("pf_stress_shared_setup", [ArenaHandle, c_uint32, c_uint32, c_uint32], c_uint64),
    ("pf_stress_shared_run", [ArenaHandle, POINTER(RunParams), POINTER(Peer)], c_int),
    ("pf_stress_shared_peer", [ArenaHandle, c_uint64, c_uint32, c_uint32, POINTER(Peer)], c_int),
    ("pf_stress_shared_in_rings", [ArenaHandle, c_uint64], c_uint64),
    ("pf_stress_shared_teardown", [ArenaHandle, c_uint64], c_int),
]
_lock = threading.Lock()
_native = None


def native():
    """The library with the pf_stress_* functions declared (LibraryError if it lacks them)."""
    global _native
    with _lock:
        if _native is None:
            cdll, path = loader.tool_library(STRESS_LIBRARY)
            loader.declare_extra(cdll, _TABLE, path, "`pyfrag stress`")
            names = tuple(cdll.pf_stress_workload_name(i).decode() for i in range(len(WORKLOADS)))
            if names != WORKLOADS:
                raise LibraryError("%s has workloads %s, this package expects %s; %s"
                                   % (path, names, WORKLOADS, loader.HOW_TO_FIX))
            _native = cdll
    return _native


def _fail(what: str):
    err = ctypes.get_errno()  # read first: the next ctypes call overwrites it
    raise error_for(err, "%s: %s" % (what, native().pf_stress_error_message().decode()))


def set_sizes(struct, sizes, keep: list) -> None:
    """The sizes of a StressParams or RunParams: a table (kept alive in keep), or a range."""
    if sizes.table:
        table = (c_uint32 * len(sizes.table))(*sizes.table)
        keep.append(table)
        struct.sizes, struct.nsizes = ctypes.cast(table, POINTER(c_uint32)), len(table)
    else:
        struct.size_min, struct.size_max = sizes.low, sizes.high


def run(params: StressParams) -> StressResult:
    """pf_stress_run; raises ValueError/MemoryError/FragError with the library's sentence."""
    cdll = native()
    room = _ResultRoom()
    if cdll.pf_stress_run(ctypes.byref(params), ctypes.byref(room)) != 0:
        _fail("pf_stress_run")
    if room.result.size != ctypes.sizeof(StressResult):
        raise LibraryError("%s: pf_stress_result_t has size %d, this package expects %d; %s"
                           % (loader.tool_library(STRESS_LIBRARY)[1], room.result.size,
                              ctypes.sizeof(StressResult), loader.HOW_TO_FIX))
    return room.result


def setup_shared(arena, producers: int, consumers: int, ring_slots: int) -> int:
    """Lay out the rings inside the arena; the control offset."""
    control = arena._call(native().pf_stress_shared_setup, producers, consumers, ring_slots)
    if control == NO_CONTROL:
        _fail("pf_stress_shared_setup")
    return control


def run_shared(arena, params: RunParams) -> Peer:
    """pf_stress_shared_run: this process's producer or consumer loop."""
    peer = Peer()
    if arena._call(native().pf_stress_shared_run, ctypes.byref(params), ctypes.byref(peer)) != 0:
        _fail("pf_stress_shared_run")
    return peer


def peer(arena, control: int, role: int, index: int) -> Peer:
    """The counters of producer or consumer `index` (role 0 or 1), from the arena."""
    out = Peer()
    if arena._call(native().pf_stress_shared_peer, control, role, index, ctypes.byref(out)) != 0:
        _fail("pf_stress_shared_peer")
    return out


def rings_content(arena, control: int) -> int:
    """Fragments still in the rings."""
    return arena._call(native().pf_stress_shared_in_rings, control)


def teardown_shared(arena, control: int) -> None:
    """Free the rings."""
    if arena._call(native().pf_stress_shared_teardown, control) != 0:
        _fail("pf_stress_shared_teardown")
