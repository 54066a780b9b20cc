# SPDX-License-Identifier: GPL-2.0-only
"""Every example in examples/ runs, and says what its README section says it says.

Python examples run as scripts in a fresh interpreter with this checkout
importable; the C examples are built by SCons for PYFRAG_TEST_MODE (release by
default) into build/<mode>/examples/ and run with short, bounded settings.
"""
import os
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import MODE, scons_build

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NUMBER_LINE = re.compile(r"^(\w+)\s+(-?[0-9.]+|unknown)\s", re.M)


def run_script(name, *args, env=None, timeout=120):
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + ([full_env["PYTHONPATH"]] if full_env.get("PYTHONPATH") else []))
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def program_env():
    env = dict(os.environ)
    env.setdefault("TSAN_OPTIONS", "halt_on_error=1")
    env.setdefault("ASAN_OPTIONS", "halt_on_error=1")
    env.pop("LD_PRELOAD", None)  # a sanitizer runtime preloaded for Python is not for these
    return env


@pytest.fixture(scope="session")
def examples_dir():
    """Build the C examples of this mode once per session; their folder."""
    return pathlib.Path(scons_build("examples")) / "examples"


def run_program(examples_dir, name, *args, timeout=120):
    run = subprocess.run([str(examples_dir / name), *args], env=program_env(),
                         capture_output=True, text=True, timeout=timeout)
    assert "Sanitizer" not in run.stderr, run.stderr
    assert "runtime error" not in run.stderr, run.stderr  # UBSan
    return run


def counters(output):
    return {name: (None if value == "unknown" else float(value))
            for name, value in NUMBER_LINE.findall(output)}


# ---- Python examples ------------------------------------------------------------------

def test_quickstart():
    run = run_script("quickstart.py")
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "holding b'hello world'" in out
    assert "after free: view released = True" in out
    assert "second free refused:" in out
    assert "% 64 = 0" in out
    assert "after the with block: freed = True" in out
    assert "library counted: allocs 2, frees 2" in out


def test_recycling():
    run = run_script("recycling.py")
    assert run.returncode == 0, run.stdout + run.stderr
    rows = {line.split(":")[0]: dict((k, int(v)) for k, v in re.findall(r"(\w+) (\d+)", line))
            for line in run.stdout.splitlines()}
    lifo, other, late = (rows["owner, newest first"], rows["other thread"],
                         rows["other thread, one burst late"])
    for row in (lifo, other, late):
        assert row["allocs"] == row["frees"] == 16000, run.stdout
    assert lifo["refills"] <= 2 and lifo["bias_frees"] >= 15990, run.stdout  # offset moves back
    assert other["recycles"] >= 998 and other["refills"] <= 1, run.stdout    # reused in place
    assert late["abandons"] >= 998 and late["recycles"] == 0, run.stdout     # left to its fragments
    spares = rows["owner, with the cache's spares (the default)"]
    assert spares["allocs"] == 16 and spares["frees"] == 0, run.stdout  # Python kept them


def test_recv_into():
    run = run_script("recv_into.py")
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "datagrams: 256 sent, 256 received intact" in out
    assert "received in place (at the fragment's address): 256" in out
    bursts = int(re.search(r"received with (\d+) recvmmsg bursts, forwarded with 8 sendmmsg", out)
                 .group(1))
    assert 8 <= bursts < 256  # bursts, not one call per datagram
    assert "forwarded from the fragments with a header written in place: 256" in out
    assert "outstanding 0" in out


def test_ring_pipeline():
    run = run_script("ring_pipeline.py", "3000")
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "datagrams: 3000 sent, 3000 received, 3000 intact" in out
    assert "process exit codes: 0 0 0 0" in out
    assert "outstanding 4 (the 4 rings' blocks)" in out
    peaks = [float(v) for v in re.findall(r"peak RSS \w+: ([0-9.]+) MiB", out)]
    assert len(peaks) == 4 and all(peak > 0 for peak in peaks)  # psutil saw every process


def test_ring_pipeline_usage_error():
    run = run_script("ring_pipeline.py", "0")
    assert run.returncode == 2 and "usage" in run.stderr


def _line(out, prefix, word):
    """The first line of out that starts with prefix and holds word."""
    return next(line for line in out.splitlines() if line.startswith(prefix) and word in line)


def _percent(line, kind):
    return float(re.search(kind + r" ([0-9]+)%", line).group(1))


@pytest.mark.parametrize("hugepages", ["auto", "off"])
def test_stats_and_hugepages(hugepages):
    run = run_script("stats_and_hugepages.py", env={"PYFRAG_HUGEPAGES": hugepages})
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "PYFRAG_HUGEPAGES=%s" % hugepages in _line(out, "hugetlb pool:", "")
    assert "allocs 8192, frees 0," in _line(out, "filled:", "allocs")
    assert "allocs 8192, frees 8192," in _line(out, "freed:", "allocs")
    memory, cover = _line(out, "filled:", "committed"), _line(out, "filled:", "resident")
    assert "committed 16.0 MiB" in memory
    chunks = {kind: int(n) for kind, n in
              re.findall(r"(hugetlb|thp|4k) (\d+)", memory.split("chunks", 1)[1])}
    assert sum(chunks.values()) == 8, memory
    assert float(re.search(r"resident ([0-9.]+) MiB", cover).group(1)) >= 16.0, cover
    shares = {kind: _percent(cover, kind) for kind in ("hugetlb", "THP", "4 KiB")}
    assert abs(sum(shares.values()) - 100) <= 1, cover
    # what pyfrag counted and what the kernel reports agree on the backing
    assert (shares["hugetlb"] > 0) == (chunks["hugetlb"] > 0), out
    if hugepages == "off":
        assert chunks["4k"] == 8 and shares["4 KiB"] == 100, out
    freed = _line(out, "freed:", "committed")
    assert "pages_in_use 0" in freed and "committed 2.0 MiB" in freed  # PYFRAG_RETAIN=1
    assert re.search(r"chunks back to the OS: \d+ as .*, \d+ by trim\(\)", out), out


def _summaries(stderr):
    return [int(n) for n in re.findall(r"small \(page_frag\) (\d+)", stderr)]


def test_run_under_preload():
    run = run_script("run_under_preload.py", timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    checksum = re.search(r"without pyfrag: checksum (\d+)", out).group(1)
    assert out.count("child: checksum " + checksum) == 2, out
    assert "pyfrag, pymalloc on: exit 0" in out
    assert "pyfrag, PYTHONMALLOC=malloc: exit 0" in out
    small = _summaries(run.stderr)
    assert len(small) == 2, run.stderr
    # pymalloc keeps most objects away from malloc; PYTHONMALLOC=malloc sends them all
    assert small[1] > 200000 and small[1] > 10 * small[0], small


# ---- the UDP pipeline -----------------------------------------------------------------

@pytest.mark.parametrize("alloc", ["pyfrag", "malloc"])
def test_udp_pipeline(examples_dir, alloc):
    run = run_program(examples_dir, "udp_pipeline", "--alloc", alloc, "--duration", "0.3",
                      "--rate", "20000", "--size", "200")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.rstrip().endswith("result ok"), run.stdout
    c = counters(run.stdout)
    assert c["sent"] > 0 and c["delivered"] > 0, run.stdout
    assert c["sent"] <= 20000 * 0.3 + 32, run.stdout  # bounded by rate x duration
    assert c["sent"] == c["delivered"] + c["drops"], run.stdout
    ours = ("rx_missed", "ring_drops", "bad", "tx_errors", "sink_missed")
    if all(c[p] is not None for p in ours + ("backlog_drops",)):
        # backlog_drops is system-wide: other programs' drops may be in it too
        own = sum(c[p] for p in ours)
        assert own <= c["drops"] <= own + c["backlog_drops"], run.stdout
    assert c["rx"] == c["forwarded"] + c["ring_drops"] + c["bad"] + c["tx_errors"], run.stdout
    assert c["bad"] == 0 and c["sink_bad"] == 0, run.stdout
    assert c["buffers_alloc"] == c["buffers_freed"] >= c["rx"], run.stdout
    assert c["alloc_ns"] > 0 and c["ns_per_pkt"] > 0, run.stdout
    if alloc == "pyfrag":
        assert c["pf_allocs"] == c["pf_frees"] == c["buffers_alloc"], run.stdout
    else:
        assert "pf_allocs" not in c, run.stdout


def test_udp_pipeline_count_bounds_the_run(examples_dir):
    run = run_program(examples_dir, "udp_pipeline", "--count", "100", "--rate", "1000000")
    assert run.returncode == 0, run.stdout + run.stderr
    assert counters(run.stdout)["sent"] == 100


@pytest.mark.parametrize("args", [["--alloc", "jemalloc"], ["--rate", "0"], ["--duration", "61"],
                                  ["--size", "8"], ["--count", "1.5"], ["--bogus"], ["extra"],
                                  ["--rate"]])
def test_udp_pipeline_usage_errors(examples_dir, args):
    run = run_program(examples_dir, "udp_pipeline", *args)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.startswith("udp_pipeline: error:") and "usage:" in run.stderr
    assert run.stdout == ""


def test_compare_pipeline(examples_dir):
    env = {"LD_PRELOAD": ""}  # the script runs the programs; it needs no preload itself
    run = run_script("compare_pipeline.py", "--rounds", "1", "--mode", MODE, "--",
                     "--duration", "0.2", "--rate", "20000", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = {line.split()[0]: line.split()[1:] for line in run.stdout.splitlines()[1:]}
    assert set(rows) >= {"sent", "delivered", "alloc_ns", "free_ns", "ns_per_pkt"}
    assert float(rows["sent"][0]) > 0 and float(rows["sent"][1]) > 0


# ---- pinning ----------------------------------------------------------------------------

def _steps(output):
    return {m.group(1): dict((k, int(v)) for k, v in re.findall(r"(\w+) +(-?\d+)", m.group(2)))
            for m in re.finditer(r"^step (\w+) +(.*)$", output, re.M)}


def test_pinning_pyfrag_keeps_whole_frag_pages(examples_dir):
    run = run_program(examples_dir, "pinning", "--alloc", "pyfrag", "--size", "256",
                      "--total", "4", "--keep-every", "64")
    assert run.returncode == 0, run.stdout + run.stderr
    steps = _steps(run.stdout)
    assert steps["pin"]["live_bytes"] == 4 * 1024 * 1024 // 64
    # 128 fragments per 32 KiB page, 2 survivors each: nearly every page stays in use
    assert steps["pin"]["pages_in_use_bytes"] >= 0.9 * steps["fill"]["pages_in_use_bytes"]
    # so the second round cannot reuse them: it needs as many new pages
    assert steps["again"]["pages_in_use_bytes"] >= 1.8 * steps["fill"]["pages_in_use_bytes"]
    assert steps["empty"]["pages_in_use_bytes"] == 0
    assert "summary alloc pyfrag size 256 keep 1/64" in run.stdout


def test_pinning_pyfrag_big_fragments_free_whole_pages(examples_dir):
    run = run_program(examples_dir, "pinning", "--alloc", "pyfrag", "--size", "2048",
                      "--total", "4", "--keep-every", "64")
    assert run.returncode == 0, run.stdout + run.stderr
    steps = _steps(run.stdout)
    # 16 fragments per page: one page in four keeps a survivor
    assert steps["pin"]["pages_in_use_bytes"] <= 0.3 * steps["fill"]["pages_in_use_bytes"]


def test_pinning_malloc_runs(examples_dir):
    run = run_program(examples_dir, "pinning", "--alloc", "malloc", "--total", "4")
    assert run.returncode == 0, run.stdout + run.stderr
    assert set(_steps(run.stdout)) == {"fill", "pin", "again", "empty"}
    assert "summary alloc malloc size 256 keep 1/64" in run.stdout


@pytest.mark.parametrize("args", [["--size", "0"], ["--size", "40000"], ["--total", "0"],
                                  ["--keep-every", "-1"], ["--alloc", "x"], ["--nope"]])
def test_pinning_usage_errors(examples_dir, args):
    run = run_program(examples_dir, "pinning", *args)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.startswith("pinning: error:") and "usage:" in run.stderr


# ---- shared arena: primary and secondaries ------------------------------------------------

def test_shared_primary_and_secondaries(examples_dir):
    run = run_program(examples_dir, "shared_primary", "--secondaries", "3", "--packets", "30000",
                      "--size", "700")
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert out.rstrip().endswith("ok"), out
    received = [int(n) for n in re.findall(r"secondary \d+: received (\d+), bad 0", out)]
    assert received == [10000] * 3, out  # every packet reached its secondary, none bad
    arena = dict((k, int(v)) for k, v in re.findall(r"(\w+) (\d+)", out.splitlines()[-2]))
    assert arena["allocs"] == arena["frees"] == 30000 + 3, out  # packets and rings
    assert arena["attaches"] == 4 and arena["pages_in_use"] == 0, out
    path = re.search(r"^arena (\S+):", out, re.M).group(1)
    assert not pathlib.Path(path).exists(), "the primary removes the name at the end"


@pytest.mark.parametrize("args", [["--secondaries", "0"], ["--size", "8"], ["--packets"],
                                  ["--bogus", "1"], ["--packets", "1x"]])
def test_shared_primary_usage_errors(examples_dir, args):
    run = run_program(examples_dir, "shared_primary", *args)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.startswith("shared_primary: error:") and "usage:" in run.stderr


# ---- DPDK pipeline (examples/dpdk/dpdk_pipeline.c; needs DPDK) ------------------------------

from dpdk_support import DPDK_MISSING, eal_args, write_empty_pcap  # noqa: E402

needs_dpdk = pytest.mark.skipif(DPDK_MISSING is not None, reason=str(DPDK_MISSING))


def run_dpdk_pipeline(examples_dir, vdev, *args):
    return run_program(examples_dir, "dpdk_pipeline", *eal_args(vdev, "example"), "--", *args)


@needs_dpdk
@pytest.mark.parametrize("vdev", ["net_null0", "net_ring0", "net_pcap"])
def test_dpdk_pipeline(examples_dir, vdev, tmp_path):
    if vdev == "net_pcap":
        write_empty_pcap(tmp_path / "in.pcap")
        vdev = "net_pcap0,rx_pcap=%s,tx_pcap=%s" % (tmp_path / "in.pcap", tmp_path / "out.pcap")
    run = run_dpdk_pipeline(examples_dir, vdev, "--packets", "40000", "--seconds", "20")
    assert run.returncode == 0, run.stdout + run.stderr
    c = counters(run.stdout)
    assert c["packets"] == c["fragments_allocated"] == 40000, run.stdout
    assert c["transmitted"] == 40000 + 40000 / 8  # every 8th packet also went out as a clone
    assert c["corrupt"] == c["fragments_out"] == c["mbufs_out"] == c["pages_in_use"] == 0
    if vdev.startswith("net_ring"):
        assert c["received"] == c["transmitted"]  # net_ring loops TX back to RX
    assert run.stdout.rstrip().endswith("all back")


@needs_dpdk
def test_dpdk_pipeline_notices_a_leak(examples_dir):
    run = run_dpdk_pipeline(examples_dir, "net_null0", "--packets", "5000", "--leak", "3")
    assert run.returncode == 1, run.stdout + run.stderr
    c = counters(run.stdout)
    assert c["fragments_out"] == c["mbufs_out"] == 3, run.stdout
    assert "NOT all back" in run.stdout


@needs_dpdk
@pytest.mark.parametrize("args", [["--packets"], ["--leak", "1000"], ["--bogus", "1"]])
def test_dpdk_pipeline_usage_errors(examples_dir, args):
    run = run_dpdk_pipeline(examples_dir, "net_null0", *args)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "dpdk_pipeline" in run.stderr
