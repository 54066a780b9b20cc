# SPDX-License-Identifier: GPL-2.0-only
"""What a stress run is: its parameters, fragment sizes, and the shared job's sizing.

Contract:
- `Params` is one run (the CLI's options); it raises ValueError for a value
  no run can use. `Params.deadline` is when a worker still alive is hung.
- `parse_sizes(text)` reads `imix`, a size (`1500`), a range (`64-1500`) or
  a file of sizes (whitespace separated, # comments); ValueError if bad.
- `ring_slots(P, C)` and `arena_size(P, C, sizes)` size the `--shared` run:
  slots per ring (1024, fewer beyond 4 rings) and the arena (every ring full
  of the largest fragments, twice, plus a margin; at least 16 MiB).
- Pure Python: importing this module loads nothing.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

WORKLOADS = ("ring", "burst", "churn", "mixed")  # enum pf_stress_workload order
DPDK = "dpdk"  # not a native loop: the DPDK pipeline program (dpdk_job.py)
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
EXIT_GRACE = 5.0          # seconds a worker may take to exit after sending its result

# --shared
DEFAULT_PRODUCERS = DEFAULT_CONSUMERS = 2
MAX_PEERS = 16                 # PF_STRESS_SHARED_MAX
RING_SLOTS = 1024              # per ring, with up to 4 rings; fewer beyond (ring_slots())
RING_SLOTS_TOTAL = 4096        # slots over all rings, so in-flight memory stays bounded
RING_SLOTS_MIN = 64
MIN_ARENA = 16 * MiB
PAGES_PER_FRAG_PAGE = 8        # a lost fragment pins at most one 32 KiB frag page
ARENA_MARGIN = 4 * MiB         # control block, rings, every process's current frag page


@dataclass(frozen=True)
class Sizes:
    """Fragment sizes: a table picked from uniformly, or a range [low, high]."""
    text: str
    table: tuple = ()
    low: int = 0
    high: int = 0

    @property
    def largest(self) -> int:
        return max(self.table) if self.table else self.high

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
        if self.workload not in WORKLOADS + (DPDK,) or self.start_method not in START_METHODS:
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


def ring_slots(producers: int, consumers: int) -> int:
    """Slots per ring: 1024, fewer when there are more than 4 rings (a power of two, >= 64)."""
    slots = RING_SLOTS
    while slots > RING_SLOTS_MIN and slots * producers * consumers > RING_SLOTS_TOTAL:
        slots //= 2
    return slots


def arena_size(producers: int, consumers: int, sizes: Sizes) -> int:
    """Room for every ring full of the largest fragments (a dead consumer's rings fill up),
    twice, plus a margin; at least 16 MiB; in 2 MiB steps."""
    slots = ring_slots(producers, consumers)
    need = 2 * producers * consumers * slots * sizes.largest + ARENA_MARGIN
    need = max(need, MIN_ARENA)
    return -(-need // CHUNK) * CHUNK
