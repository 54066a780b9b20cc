# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag bench --workload dpdk`: packet buffers for DPDK, four ways (native/bench/dpdk).

Contract:
- One process of build/release/bench/bench_dpdk per run measures every case
  (imix-burst, imix-pipeline, jumbo-burst, jumbo-pipeline) for every variant
  (mempool, pyfrag, rte_malloc, glibc), interleaved inside the process; it
  runs on EAL without hugepages or PCI (EAL_ARGS), needing two lcores.
- `missing(folder)`: None when the program is there, else why the workload
  is skipped (DPDK absent when SCons built, or not built).
- `run_once(folder, scale, timeout)`: {case: {variant: {ns_per_op, bytes_per_pkt}}};
  raises bench.BenchError (imported lazily: bench imports this module) if it fails.
- `targets(results)`: the issue's targets this run can judge, as bench.targets'.
- `table_lines(report)`: the dpdk rows in bench.table's format, variants as columns,
  with a bytes-per-packet row under each case.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

PROGRAM = "bench_dpdk"
PACKETS = 400_000  # per case at scale 1 (jumbo: a quarter)
VARIANTS = ("pyfrag", "mempool", "rte_malloc", "glibc")
CASES = ("imix-burst", "imix-pipeline", "jumbo-burst", "jumbo-pipeline")
EAL_ARGS = ("--no-huge", "--no-pci", "--no-shconf", "-m", "512", "-l", "0-1",
            "--log-level", "1")
RESULT = re.compile(r"^result dpdk (\S+) (\S+) ns_per_op (\S+) bytes_per_pkt (\S+)$", re.M)


def missing(folder: str) -> str | None:
    if os.access(os.path.join(folder, PROGRAM), os.X_OK):
        return None
    if shutil.which("pkg-config") is None or subprocess.run(
            ["pkg-config", "--exists", "libdpdk"], capture_output=True).returncode != 0:
        return ("skipped: DPDK not found by pkg-config libdpdk "
                "(apt-get install libdpdk-dev dpdk-dev pkg-config, then scons -Q)")
    return "skipped: %s not built in %s (run scons -Q)" % (PROGRAM, folder)


def run_once(folder: str, scale: float, timeout: float = 600.0) -> dict:
    from .bench import BenchError
    packets = max(32, int(PACKETS * scale))
    cmd = [os.path.join(folder, PROGRAM), *EAL_ARGS,
           "--file-prefix", "pyfrag-bench-%d" % os.getpid(), "--", str(packets)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYFRAG_") and k != "LD_PRELOAD"}
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError("%s took longer than %d s" % (PROGRAM, timeout)) from None
    found = RESULT.findall(proc.stdout)
    if proc.returncode != 0 or len(found) != len(CASES) * len(VARIANTS):
        raise BenchError("%s failed (exit %d): %s"
                         % (PROGRAM, proc.returncode, (proc.stderr or proc.stdout).strip()[-500:]))
    out: dict = {}
    for case, variant, ns, nbytes in found:
        out.setdefault(case, {})[variant] = {"ns_per_op": float(ns), "bytes_per_pkt": float(nbytes)}
    return out


def _median(results, case, variant, key="median_ns_per_op"):
    return results.get("dpdk", {}).get(case, {}).get(variant, {}).get(key)


def targets(results: dict) -> list[dict]:
    out = []

    def add(name, num, den, limit, what):
        if num is None or den is None or den <= 0:
            return
        ratio = round(num / den, 3)
        out.append({"target": name, "ratio": ratio, "limit": limit, "met": ratio <= limit,
                    "what": what})

    for pattern in ("burst", "pipeline"):
        case = "imix-" + pattern
        add("dpdk %s: pyfrag / mempool" % case, _median(results, case, "pyfrag"),
            _median(results, case, "mempool"), 1.3, "time per packet at most 1.3x the 2048-room mempool's")
        add("dpdk %s: pyfrag / mempool bytes" % case,
            _median(results, case, "pyfrag", "median_bytes_per_pkt"),
            _median(results, case, "mempool", "median_bytes_per_pkt"), 0.35,
            "memory per packet in flight at most 0.35x the mempool's")
        add("dpdk %s: pyfrag / rte_malloc" % case, _median(results, case, "pyfrag"),
            _median(results, case, "rte_malloc"), 0.25, "at most 0.25x rte_malloc extbuf's time")
    add("dpdk jumbo-pipeline: pyfrag / mempool", _median(results, "jumbo-pipeline", "pyfrag"),
        _median(results, "jumbo-pipeline", "mempool"), 2.0,
        "at most 2x the 9216-room mempool's time per packet")
    add("dpdk jumbo: pyfrag / mempool bytes",
        _median(results, "jumbo-pipeline", "pyfrag", "median_bytes_per_pkt"),
        _median(results, "jumbo-pipeline", "mempool", "median_bytes_per_pkt"), 1.2,
        "memory per packet in flight at most 1.2x the 9216-room mempool's")
    return out


def table_lines(report: dict) -> list[str]:
    cases = report["results"].get("dpdk", {})
    head = ["workload", "case", *VARIANTS]
    rows = []
    for case, row in cases.items():
        cells = ["dpdk", case]
        for name in VARIANTS:
            e = row.get(name)
            ratio = e.get("ratio_to_pyfrag") if e else None
            cells.append("-" if not e else "%.1f" % e["median_ns_per_op"]
                         + (" (%.2f)" % ratio if ratio is not None and name != "pyfrag" else ""))
        rows.append(cells)
        cells = ["", "bytes/pkt"]
        for name in VARIANTS:
            v = row.get(name, {}).get("median_bytes_per_pkt")
            cells.append("-" if v is None else "%.0f" % v)
        rows.append(cells)
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return ["", "dpdk: median ns per packet (ratio to pyfrag extbuf), bytes per packet in flight",
            fmt(head)] + [fmt(r) for r in rows]
