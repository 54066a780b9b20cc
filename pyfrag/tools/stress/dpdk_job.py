# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag stress --workload dpdk`: the DPDK pipeline under the stress harness.

Contract:
- `DpdkJob(params, program)` is a stress job (pyfrag.tools.stress.harness):
  each worker runs one instance of examples/dpdk/dpdk_pipeline (`program`,
  built by SCons where DPDK is found) on EAL without hugepages or PCI
  (net_null TX, lcores 0-1, its own file prefix) for params.duration seconds
  (or params.ops packets), puts the instance's pid in its slot so the parent
  samples its RSS, and judges what the program printed after both lcores
  flushed: every fragment freed (fragments_out 0: freed once, as the library
  refuses a second free of a free page and counts it), every mbuf back in
  its pool, no corrupted packet, no page in use, committed bytes after
  pf_trim within PYFRAG_RETAIN chunks (the RSS the allocator keeps), and
  the exit status. params.fault_leak N keeps min(N, 64) packets back: the
  run must then fail.
- `find_program()`: the program's path, or raises DpdkMissing saying why.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass

from ..._native.loader import REPO_ROOT
from .harness import CHECKING, PHASE, PROGRESS, RUNNING, TARGET_PID, Slot
from .params import Params

PROGRAM = os.path.join(REPO_ROOT, "build", "release", "examples", "dpdk_pipeline")
CHUNK = 2 * 1024 * 1024
LEAK_MAX = 64  # what the program keeps back at most (--leak)
NUMBER = re.compile(r"^(\w+) (\d+)$", re.M)


class DpdkMissing(ValueError):
    """The DPDK pipeline program is not there (DPDK absent, or not built)."""


def find_program() -> str:
    if os.access(PROGRAM, os.X_OK):
        return PROGRAM
    raise DpdkMissing("--workload dpdk needs %s, which SCons builds where `pkg-config libdpdk` "
                      "finds DPDK (apt-get install libdpdk-dev dpdk-dev pkg-config; scons -Q)"
                      % PROGRAM)


def check_pipeline(returncode: int, out: dict, stderr: str) -> list:
    """[(check, message)] for one run of the pipeline; empty if every rule held."""
    v = []
    if returncode < 0:
        v.append(("crash", "the pipeline died of signal %d" % -returncode))
    if not out:
        last = stderr.strip().splitlines()[-1:] or [""]
        return v + [("exit", "the pipeline printed no counts (exit %d): %s" % (returncode, last[0]))]
    for key, check, what in (("fragments_out", "leak", "fragments not freed"),
                             ("mbufs_out", "leak", "mbufs not back in their pool"),
                             ("corrupt", "corruption", "packets with wrong bytes"),
                             ("pages_in_use", "pages", "pages in use after every lcore flushed")):
        if out.get(key):
            v.append((check, "%d %s" % (out[key], what)))
    allowed = out.get("retain_chunks", 0) * CHUNK
    if out.get("committed_bytes", 0) > allowed:
        v.append(("rss", "%d bytes committed after the trim, PYFRAG_RETAIN allows %d"
                  % (out["committed_bytes"], allowed)))
    if returncode > 0 and not v:
        v.append(("exit", "the pipeline exited with status %d" % returncode))
    return v


@dataclass
class DpdkJob:
    params: Params
    program: str = PROGRAM

    def label(self, index: int) -> str:
        return "dpdk_pipeline"

    def prepare(self) -> None:
        self.program = find_program()

    def command_line(self, index: int) -> list[str]:
        p = self.params
        packets = p.ops if p.ops else 1 << 62
        seconds = max(1, int(round(p.duration))) if not p.ops else 86400
        args = [self.program, "--no-huge", "--no-pci", "--no-shconf", "-m", "256", "-l", "0-1",
                "--file-prefix", "pyfrag-stress-%d-%d" % (os.getpid(), index),
                "--log-level", "1", "--vdev", "net_null0",
                "--", "--packets", str(packets), "--seconds", str(seconds)]
        if p.fault_leak:
            args += ["--leak", str(min(p.fault_leak, LEAK_MAX))]
        return args

    def run_in_worker(self, index: int, slot: Slot) -> dict:
        start = time.monotonic()
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        proc = subprocess.Popen(self.command_line(index), env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        slot.set(TARGET_PID, proc.pid)
        slot.set(PHASE, RUNNING)
        try:
            stdout, stderr = proc.communicate(timeout=self.params.deadline)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        slot.set(PHASE, CHECKING)
        out = {k: int(v) for k, v in NUMBER.findall(stdout)}
        packets = out.get("packets", 0)
        slot.set(PROGRESS, packets)
        return {
            "ops": packets, "elapsed_ns": int((time.monotonic() - start) * 1e9), "threads": 2,
            "counts": {"allocs": out.get("fragments_allocated", 0),
                       "frees": out.get("fragments_allocated", 0) - out.get("fragments_out", 0),
                       "transmitted": out.get("transmitted", 0), "corrupt": out.get("corrupt", 0),
                       "mbufs_out": out.get("mbufs_out", 0)},
            "pre_rss": None, "final_rss": None, "retain": None, "check_rss": False,
            "hugepage": None, "stats_after": out, "target_pid": proc.pid,
            "returncode": proc.returncode,
            "violations": check_pipeline(proc.returncode, out, stderr),
        }

