# SPDX-License-Identifier: GPL-2.0-only
"""Side-by-side benchmarks: pyfrag against glibc, jemalloc, mimalloc and tcmalloc.

The programs are native/bench/*.c, built by SCons into build/release/bench/:
bench_X calls plain malloc/free (so any allocator can be put under it with
LD_PRELOAD) and bench_X_api runs the same loop through pyfrag's C API. Each
prints lines "result <workload> <case> ns_per_op <X> [<key> <value>]...".

Allocators run interleaved (A B C A B C ...), so that a slow moment of the
machine hits all of them alike; medians are taken per case. Nothing here
loads libpyfrag.so into this process.
"""
from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import time
from dataclasses import dataclass, field

from .._native.loader import REPO_ROOT
from . import bench_dpdk

SCHEMA = "pyfrag-bench/1"

# workload -> (program, op-count argument at scale 1, the count's meaning)
WORKLOADS = {
    "ring": ("bench_ring", 1_000_000, "buffers through the ring per case"),
    "burst": ("bench_burst", 300_000, "bursts of 32 (pair: 32 x as many pairs)"),
    "threads": ("bench_threads", 100_000, "bursts of 32 per thread"),
    "churn": ("bench_churn", 4_000_000, "replacements in a window of 32768"),
    "dpdk": (bench_dpdk.PROGRAM, bench_dpdk.PACKETS, "packets per case (needs DPDK; not by default)"),
}
DEFAULT_WORKLOADS = [w for w in WORKLOADS if w != "dpdk"]  # dpdk: its own variants, one process
ALLOCATORS = ("pyfrag", "pyfrag-4k", "pyfrag-api", "glibc", "jemalloc", "mimalloc", "tcmalloc")
# pyfrag-4k: pyfrag preloaded with PYFRAG_FRAG_ORDER=0 (4 KiB frag pages: less RSS, more refills)
PEERS = {  # name -> (library file names, Debian package)
    "jemalloc": (("libjemalloc.so.2",), "libjemalloc2"),
    "mimalloc": (("libmimalloc.so.2", "libmimalloc.so.2.0"), "libmimalloc2.0"),
    "tcmalloc": (("libtcmalloc_minimal.so.4",), "libtcmalloc-minimal4"),
}
ENV_BENCH_DIR = "PYFRAG_BENCH_DIR"   # where the bench programs are (default build/release/bench)
ENV_LIBDIRS = "PYFRAG_BENCH_LIBDIRS"  # colon-separated folders searched for the peers
DEFAULT_LIBDIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
                   "/usr/lib", "/usr/local/lib")
HOW_TO_BUILD = ("build them with `scons -Q` at the repository root (it builds build/release/bench/) "
                "and run pyfrag bench from there, or set %s to a folder holding bench_ring, "
                "bench_ring_api, ..." % ENV_BENCH_DIR)
RESULT = re.compile(r"^result (\S+) (\S+) ns_per_op (\S+)(.*)$")


class BenchError(RuntimeError):
    """A benchmark could not run (programs missing, a program failed)."""


@dataclass
class Allocator:
    name: str
    preload: str | None  # LD_PRELOAD value, None for none
    api: bool = False    # run the bench_X_api programs
    options: dict[str, str] = field(default_factory=dict)  # PYFRAG_* environment


@dataclass
class Setup:
    bench_dir: str
    allocators: list[Allocator]
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why


# ---- finding things -------------------------------------------------------------

def bench_dir() -> str:
    """
    PYFRAG_BENCH_DIR, else build/release/bench of the source tree this package
    runs from (an editable install), else of the current directory (the
    clone a plain `pip install .` was made from: the programs are not in the
    wheel).
    """
    if os.environ.get(ENV_BENCH_DIR):
        return os.environ[ENV_BENCH_DIR]
    candidates = [os.path.join(root, "build", "release", "bench") for root in (REPO_ROOT, os.getcwd())]
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, WORKLOADS["ring"][0])):
            return folder
    return candidates[0]


def find_peer(name: str) -> str | None:
    dirs = os.environ.get(ENV_LIBDIRS)
    dirs = [d for d in dirs.split(":") if d] if dirs is not None else DEFAULT_LIBDIRS
    for folder in dirs:
        for lib in PEERS[name][0]:
            path = os.path.join(folder, lib)
            if os.path.isfile(path):
                return path
    return None


def setup(names: list[str], workloads: list[str]) -> Setup:
    """The allocators that can run here; raises BenchError if the programs are missing."""
    folder = bench_dir()
    missing = [p for w in workloads if w != "dpdk" for p in (WORKLOADS[w][0], WORKLOADS[w][0] + "_api")
               if not os.access(os.path.join(folder, p), os.X_OK)]
    if missing:
        raise BenchError("benchmark programs not found in %s (%s): %s"
                         % (folder, ", ".join(missing), HOW_TO_BUILD))
    result = Setup(folder, [])
    if "dpdk" in workloads and bench_dpdk.missing(folder):
        result.skipped["dpdk"] = bench_dpdk.missing(folder)
    for name in names:
        if name in ("pyfrag", "pyfrag-4k"):
            lib = os.path.normpath(os.path.join(folder, os.pardir, "libpyfrag.so"))
            if not os.path.isfile(lib):
                raise BenchError("%s not found: %s" % (lib, HOW_TO_BUILD))
            options = {"PYFRAG_FRAG_ORDER": "0"} if name == "pyfrag-4k" else {}
            result.allocators.append(Allocator(name, lib, options=options))
        elif name == "pyfrag-api":
            result.allocators.append(Allocator(name, None, api=True))
        elif name == "glibc":
            result.allocators.append(Allocator(name, None))
        else:
            path = find_peer(name)
            if path:
                result.allocators.append(Allocator(name, path))
            else:
                result.skipped[name] = ("not installed (apt-get install %s), skipped"
                                        % PEERS[name][1])
    return result


# ---- running --------------------------------------------------------------------

def _env(alloc: Allocator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYFRAG_") and k != "LD_PRELOAD"}
    if alloc.preload:
        env["LD_PRELOAD"] = alloc.preload
    env.update(alloc.options)
    return env


def parse_results(text: str) -> list[tuple[str, str, dict[str, float]]]:
    """(workload, case, {ns_per_op, extra numeric keys}) for every result line."""
    out = []
    for line in text.splitlines():
        m = RESULT.match(line)
        if not m:
            continue
        values = {"ns_per_op": float(m.group(3))}
        extra = m.group(4).split()
        for key, value in zip(extra[::2], extra[1::2]):
            try:
                values[key] = float(value)
            except ValueError:
                pass  # "front malloc"
        values.pop("checksum", None)
        out.append((m.group(1), m.group(2), values))
    return out


def run_one(setup_: Setup, alloc: Allocator, workload: str, scale: float,
            timeout: float = 300.0) -> list[tuple[str, str, dict[str, float]]]:
    program, count, _ = WORKLOADS[workload]
    path = os.path.join(setup_.bench_dir, program + ("_api" if alloc.api else ""))
    cmd = [path, str(max(1, int(count * scale)))]
    try:
        proc = subprocess.run(cmd, env=_env(alloc), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError("%s under %s took longer than %d s" % (program, alloc.name, timeout)) from None
    results = parse_results(proc.stdout)
    if proc.returncode != 0 or not results:
        raise BenchError("%s under %s failed (exit %d): %s"
                         % (program, alloc.name, proc.returncode, proc.stderr.strip()[-500:]))
    return results


def run(setup_: Setup, workloads: list[str], runs: int, scale: float = 1.0, progress=None) -> dict:
    """Every workload under every allocator, interleaved, runs times. The report (JSON-ready)."""
    samples: dict = {}
    load_start = _load_average()
    total = runs * len(workloads) * len(setup_.allocators)
    done = 0
    started = time.monotonic()
    for _ in range(runs):
        for workload in workloads:
            if workload == "dpdk":  # one process runs every variant, interleaved
                if "dpdk" not in setup_.skipped:
                    for case, row in bench_dpdk.run_once(setup_.bench_dir, scale).items():
                        for name, values in row.items():
                            samples.setdefault("dpdk", {}).setdefault(case, {}).setdefault(
                                name, []).append(values)
                continue
            for alloc in setup_.allocators:
                if progress:
                    progress(done, total, workload, alloc.name)
                for wl, case, values in run_one(setup_, alloc, workload, scale):
                    per_case = samples.setdefault(wl, {}).setdefault(case, {})
                    per_case.setdefault(alloc.name, []).append(values)
                done += 1
    report = summarise(setup_, samples, runs, scale, time.monotonic() - started)
    report["load_average"] = {"start": load_start, "end": _load_average()}
    return report


def _load_average() -> float | None:
    """The 1-minute load average: how busy the machine was (other processes skew the ring)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def summarise(setup_: Setup, samples: dict, runs: int, scale: float, seconds: float) -> dict:
    results: dict = {}
    for workload, cases in samples.items():
        for case, per_alloc in cases.items():
            row = {}
            for name, values in per_alloc.items():
                keys = values[0].keys()
                row[name] = {"median_" + k: statistics.median(v[k] for v in values) for k in keys}
                row[name]["samples_ns_per_op"] = [v["ns_per_op"] for v in values]
            base = row.get("pyfrag", {}).get("median_ns_per_op")
            for entry in row.values():
                entry["ratio_to_pyfrag"] = (entry["median_ns_per_op"] / base) if base else None
            results.setdefault(workload, {})[case] = row
    report = {
        "schema": SCHEMA,
        "machine": machine(),
        "runs": runs,
        "scale": scale,
        "seconds": round(seconds, 1),
        "allocators": {a.name: a.preload for a in setup_.allocators},
        "options": {a.name: a.options for a in setup_.allocators if a.options},
        "skipped": dict(setup_.skipped),
        "results": results,
    }
    report["targets"] = targets(results)
    report["bounds"] = bounds(results)
    return report


# ---- the targets --------------------------------------------------------

def _median(results, workload, case, alloc):
    return results.get(workload, {}).get(case, {}).get(alloc, {}).get("median_ns_per_op")


def _over_floor(results, case, alloc):
    """Median over runs of (ring `case` / ring floor), both from the same process."""
    ring = results.get("ring", {})
    num = ring.get(case, {}).get(alloc, {}).get("samples_ns_per_op")
    den = ring.get("floor", {}).get(alloc, {}).get("samples_ns_per_op")
    if not num or not den or len(num) != len(den):
        return None
    return statistics.median(n / d for n, d in zip(num, den))


def targets(results: dict) -> list[dict]:
    """Each target of the issue that this run can judge: value, limit, met."""
    out = []

    def add(name, num, den, limit, what):
        if num is None or den is None:
            return
        ratio = round(num / den, 3)  # judged as reported: 0.4004 shows and counts as 0.4
        out.append({"target": name, "ratio": ratio, "limit": limit,
                    "met": ratio <= limit, "what": what})

    m = lambda *k: _median(results, *k)  # noqa: E731
    f = lambda alloc: _over_floor(results, "imix", alloc)  # noqa: E731
    add("ring imix: pyfrag-api / floor", m("ring", "imix", "pyfrag-api"),
        m("ring", "floor", "pyfrag-api"), 1.5, "direct API at most 1.5x the ring's floor")
    for peer in ("mimalloc", "jemalloc"):
        add("ring imix: pyfrag / %s" % peer, m("ring", "imix", "pyfrag"),
            m("ring", "imix", peer), 0.6, "LD_PRELOAD at most 0.6x %s" % peer)
    # The same three, each ring over the floor its own process measured a moment before:
    # on a shared VM the cost of a cross-core transfer jumps (floor 26 <-> 120+ ns) between
    # processes, which the plain medians above compare across.
    add("ring imix/own floor: pyfrag-api", f("pyfrag-api"), 1.0, 1.5,
        "as above, per process: imix over that process's floor")
    for peer in ("mimalloc", "jemalloc"):
        add("ring imix/own floor: pyfrag / %s" % peer, f("pyfrag"), f(peer), 0.6,
            "as above, each allocator's imix over its own process's floor")
    add("burst: pyfrag / fastest peer", m("burst", "burst", "pyfrag"),
        _fastest(results, "burst", BURST_PEERS)[1], 0.8,
        "LD_PRELOAD at most 0.8x the fastest of jemalloc, mimalloc, tcmalloc")
    add("pair: pyfrag-api / fastest peer", m("burst", "pair", "pyfrag-api"),
        _fastest(results, "pair", PAIR_PEERS)[1], 0.4,
        "one alloc+free pair through the direct API at most 0.4x the fastest peer's malloc+free")
    return out + bench_dpdk.targets(results)


BURST_PEERS = ("jemalloc", "mimalloc", "tcmalloc")
PAIR_PEERS = ("glibc", "jemalloc", "mimalloc", "tcmalloc")


def _fastest(results: dict, case: str, peers) -> tuple[str | None, float | None]:
    """The peer with the lowest median on burst `case`, and that median."""
    found = [(v, p) for p, v in ((p, _median(results, "burst", case, p)) for p in peers) if v]
    if not found:
        return None, None
    value, peer = min(found)
    return peer, value


def bounds(results: dict) -> list[dict]:
    """
    What the burst and pair targets are up against (not targets): the same
    loops with a fixed buffer in place of malloc (the loop's own cost, which
    every allocator pays on top), and a bare bump allocator (an offset bumped
    and rolled back: no checks, counters or page references), each over the
    fastest peer; and pyfrag's ratio with each allocator's own loop cost taken off.
    """
    out = []
    m = lambda *k: _median(results, *k)  # noqa: E731

    def add(name, num, den, what):
        if num is None or den is None or den <= 0:
            return
        out.append({"bound": name, "ratio": round(num / den, 3), "what": what})

    for case, peers, ours in (("burst", BURST_PEERS, "pyfrag"), ("pair", PAIR_PEERS, "pyfrag-api")):
        peer, fastest = _fastest(results, case, peers)
        floor = case + "-floor"
        add("%s: the loop alone / %s" % (case, peer), m("burst", floor, ours), fastest,
            "no allocator at all: the share of the fastest peer's time the loop takes")
        if case == "pair":
            add("pair: bare bump allocator / %s" % peer, m("burst", "pair-bump", ours), fastest,
                "the least a bump allocator with in-place reuse costs in this loop")
        ours_net = _minus(m("burst", case, ours), m("burst", floor, ours))
        peer_net = _minus(fastest, m("burst", floor, peer))
        add("%s net of the loop: %s / %s" % (case, ours, peer), ours_net, peer_net,
            "malloc+free alone: each allocator's time less its own process's loop alone")
    return out


def _minus(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


# ---- the machine ----------------------------------------------------------------

def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _package_version(package: str) -> str | None:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def machine() -> dict:
    cpu = re.search(r"^model name\s*:\s*(.*)$", _read("/proc/cpuinfo"), re.M)
    meminfo = _read("/proc/meminfo")
    huge = re.search(r"^HugePages_Total:\s*(\d+)", meminfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+)", meminfo, re.M)
    thp = re.search(r"\[(\w+)\]", _read("/sys/kernel/mm/transparent_hugepage/enabled"))
    return {
        "cpu": cpu.group(1).strip() if cpu else platform.processor(),
        "cpus": os.cpu_count(),
        "memory_mib": int(mem.group(1)) // 1024 if mem else None,
        "kernel": platform.release(),
        "libc": " ".join(platform.libc_ver()),
        "hugepages_2m_reserved": int(huge.group(1)) if huge else None,
        "thp": thp.group(1) if thp else None,
        "python": platform.python_version(),
        "packages": {p: _package_version(p) for p in
                     [pkg for _, pkg in PEERS.values()]},
    }


# ---- the table ------------------------------------------------------------------

def table(report: dict) -> str:
    """Median ns per op per allocator, and its ratio to pyfrag: one row per workload and case."""
    names = list(report["allocators"])
    head = ["workload", "case"] + names
    rows = []
    for workload, cases in report["results"].items():
        if workload == "dpdk":  # variants, not allocators: bench_dpdk.table_lines below
            continue
        for case, row in cases.items():
            cells = [workload, case]
            for name in names:
                e = row.get(name)
                if not e:
                    cells.append("-")
                    continue
                ratio = e.get("ratio_to_pyfrag")
                cells.append("%.1f" % e["median_ns_per_op"]
                             + (" (%.2f)" % ratio if ratio is not None and name != "pyfrag" else ""))
            rows.append(cells)
            if workload == "churn":
                for key, label in (("median_rss_per_live", "rss/live"),
                                   ("median_rss_per_pinned", "rss/pinned32k"),
                                   ("median_rss_per_pinned4k", "rss/pinned4k"),
                                   ("median_peak_rss", "peak MiB")):
                    cells = ["", label]
                    for name in names:
                        v = row.get(name, {}).get(key)
                        cells.append("-" if v is None else
                                     "%.1f" % (v / 2**20) if key == "median_peak_rss" else "%.2f" % v)
                    rows.append(cells)
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    load = report.get("load_average") or {}
    loads = ("; load average %s -> %s" % (load.get("start"), load.get("end"))
             if load.get("start") is not None else "")
    lines = ["median ns per op (ratio to pyfrag; < 1 is faster than pyfrag), %d run(s)%s"
             % (report["runs"], loads)] + ([fmt(head)] + [fmt(r) for r in rows] if rows else [])
    if "dpdk" in report["results"]:
        lines += bench_dpdk.table_lines(report)
    if report["targets"]:
        lines.append("")
        lines.append("targets:")
        for t in report["targets"]:
            lines.append("  %-4s %-41s %.2f (limit %.2f): %s"
                         % ("met" if t["met"] else "MISS", t["target"], t["ratio"], t["limit"],
                            t["what"]))
    if report.get("bounds"):
        lines.append("")
        lines.append("bounds (what the burst and pair targets are up against; not targets):")
        for b in report["bounds"]:
            lines.append("       %-45s %.2f: %s" % (b["bound"], b["ratio"], b["what"]))
    return "\n".join(lines)


def plot(report: dict, path: str, plt) -> None:
    """One bar group per workload/case: median ns per op of each allocator."""
    names = list(report["allocators"])
    labels, values = [], {n: [] for n in names}
    for workload, cases in report["results"].items():
        for case, row in cases.items():
            labels.append("%s\n%s" % (workload, case))
            for n in names:
                values[n].append(row.get(n, {}).get("median_ns_per_op", 0.0))
    fig, ax = plt.subplots(figsize=(max(8, len(labels) * 0.9), 5))
    width = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        ax.bar([x + i * width for x in range(len(labels))], values[n], width, label=n)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))])
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("median ns per op (lower is better)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
