# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag bench` and pyfrag.tools.bench.

- Every workload runs briefly (--runs 1, --scale 0.01) under pyfrag, the
  direct API and glibc, prints the table and writes the JSON report.
- The JSON report's schema.
- The bounds lines' arithmetic, on made-up numbers.
- A peer that is not installed is skipped with a message; an installed (not
  editable) package finds the programs of the clone it runs from; missing
  programs say how to build them; bad arguments exit 2.

The programs are the release build's (build/release/bench/, `scons -Q`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, run_cli, scons_build
from pyfrag.tools import bench

BENCH_DIR = os.path.join(REPO_ROOT, "build", "release", "bench")
QUICK = ("--runs", "1", "--scale", "0.01")
OURS = "pyfrag,pyfrag-4k,pyfrag-api,glibc"



@pytest.fixture(scope="module", autouse=True)
def bench_programs():
    """Build the benchmark programs (release, part of the `tests` alias) once for this module."""
    scons_build("tests", mode="release")
    assert os.path.exists(os.path.join(BENCH_DIR, "bench_ring_api"))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One quick run of every workload; (process, report)."""
    path = tmp_path_factory.mktemp("bench") / "out.json"
    proc = run_cli("bench", *QUICK, "--allocators", OURS, "--json", str(path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(path.read_text())


@pytest.mark.parametrize("workload,cases", [
    ("ring", {"floor", "12", "75", "2048", "imix", "12-a64", "75-a64", "2048-a64", "imix-a64"}),
    ("burst", {"burst", "pair", "burst-floor", "pair-floor", "pair-bump"}),
    ("threads", {"t1", "t2", "t4"}),
    ("churn", {"churn"}),
])
def test_every_workload_runs(report, workload, cases):
    proc, data = report
    assert set(data["results"][workload]) == cases
    for case in cases:
        row = data["results"][workload][case]
        assert set(row) == {"pyfrag", "pyfrag-4k", "pyfrag-api", "glibc"}
        assert all(e["median_ns_per_op"] > 0 for e in row.values())
        assert row["pyfrag"]["ratio_to_pyfrag"] == pytest.approx(1.0)
    assert any(line.split()[:1] == [workload] for line in proc.stdout.splitlines())


def test_table_and_targets(report):
    proc, data = report
    header = proc.stdout.splitlines()[1].split()
    assert header == ["workload", "case", "pyfrag", "pyfrag-4k", "pyfrag-api", "glibc"]
    assert "rss/live" in proc.stdout and "targets:" in proc.stdout
    names = {t["target"] for t in data["targets"]}
    assert "ring imix: pyfrag-api / floor" in names
    assert "pair: pyfrag-api / fastest peer" in names  # glibc is a peer for the pair
    # the pair's bounds, against glibc (the one peer here); the burst's need jemalloc & co.
    assert "bounds (what the burst and pair targets are up against" in proc.stdout
    assert {b["bound"] for b in data["bounds"]} == {
        "pair: the loop alone / glibc", "pair: bare bump allocator / glibc",
        "pair net of the loop: pyfrag-api / glibc"}


def _row(**medians):
    return {name: {"median_ns_per_op": v} for name, v in medians.items()}


def test_bounds_arithmetic():
    results = {"burst": {
        "burst": _row(pyfrag=9.0, jemalloc=9.5, tcmalloc=8.0),
        "burst-floor": _row(pyfrag=4.0, jemalloc=4.2, tcmalloc=3.8),
        "pair": _row(**{"pyfrag-api": 3.4, "glibc": 10.0, "tcmalloc": 6.8}),
        "pair-floor": _row(**{"pyfrag-api": 1.4, "glibc": 1.5, "tcmalloc": 1.8}),
        "pair-bump": _row(**{"pyfrag-api": 2.2, "glibc": 2.3, "tcmalloc": 2.2}),
    }}
    got = {b["bound"]: b["ratio"] for b in bench.bounds(results)}
    assert got == {
        "burst: the loop alone / tcmalloc": pytest.approx(4.0 / 8.0, abs=1e-3),
        "burst net of the loop: pyfrag / tcmalloc": pytest.approx((9.0 - 4.0) / (8.0 - 3.8), abs=1e-3),
        "pair: the loop alone / tcmalloc": pytest.approx(1.4 / 6.8, abs=1e-3),
        "pair: bare bump allocator / tcmalloc": pytest.approx(2.2 / 6.8, abs=1e-3),
        "pair net of the loop: pyfrag-api / tcmalloc": pytest.approx((3.4 - 1.4) / (6.8 - 1.8),
                                                                      abs=1e-3),
    }
    targets = {t["target"]: t for t in bench.targets(results)}
    assert targets["burst: pyfrag / fastest peer"]["ratio"] == pytest.approx(9.0 / 8.0, abs=1e-3)
    assert not targets["pair: pyfrag-api / fastest peer"]["met"]  # 0.5 > 0.4


def test_json_schema(report):
    _, data = report
    assert data["schema"] == bench.SCHEMA == "pyfrag-bench/1"
    assert set(data) == {"schema", "machine", "runs", "scale", "seconds", "allocators", "options",
                         "skipped", "results", "targets", "bounds", "load_average"}
    assert set(data["load_average"]) == {"start", "end"}
    assert data["runs"] == 1 and data["scale"] == 0.01
    assert data["allocators"]["glibc"] is None and data["allocators"]["pyfrag-api"] is None
    assert data["allocators"]["pyfrag"].endswith("libpyfrag.so")
    assert data["options"] == {"pyfrag-4k": {"PYFRAG_FRAG_ORDER": "0"}}
    assert {"cpu", "cpus", "kernel", "libc", "hugepages_2m_reserved", "packages"} <= set(data["machine"])
    entry = data["results"]["ring"]["imix"]["pyfrag"]
    assert set(entry) == {"median_ns_per_op", "median_worst_ns_per_op", "samples_ns_per_op",
                          "ratio_to_pyfrag"}
    assert len(entry["samples_ns_per_op"]) == 1
    churn = data["results"]["churn"]["churn"]["pyfrag"]
    for key in ("peak_rss", "peak_live", "peak_pinned", "peak_pinned4k", "rss_per_live",
                "rss_per_pinned", "rss_per_pinned4k"):
        assert churn["median_" + key] > 0
    for target in data["targets"]:
        assert set(target) == {"target", "ratio", "limit", "met", "what"}
        assert target["met"] == (target["ratio"] <= target["limit"])


def test_missing_peer_is_skipped(tmp_path):
    proc = run_cli("bench", *QUICK, "--workload", "burst", "--allocators", "pyfrag,jemalloc",
                   "--json", "-", env={bench.ENV_LIBDIRS: str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "jemalloc not installed (apt-get install libjemalloc2), skipped" in proc.stderr
    data = json.loads(proc.stdout)
    assert list(data["allocators"]) == ["pyfrag"]
    assert "jemalloc" in data["skipped"]


def test_installed_peer_runs(tmp_path):
    # a peer found through PYFRAG_BENCH_LIBDIRS is preloaded: glibc's libc.so.6 is no
    # peer, so fake "jemalloc" with pyfrag's own library to check the plumbing
    (tmp_path / "libjemalloc.so.2").symlink_to(os.path.join(REPO_ROOT, "build", "release",
                                                            "libpyfrag.so"))
    proc = run_cli("bench", *QUICK, "--workload", "burst", "--allocators", "jemalloc",
                   "--json", "-", env={bench.ENV_LIBDIRS: str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["allocators"]["jemalloc"] == str(tmp_path / "libjemalloc.so.2")


def test_installed_package_finds_the_programs_of_the_current_directory(tmp_path):
    # `pip install .` (not editable) puts the package in site-packages: the bench
    # programs are found in build/release/bench of the clone it is run from
    site = tmp_path / "site"
    shutil.copytree(os.path.join(REPO_ROOT, "pyfrag"), site / "pyfrag")
    proc = subprocess.run([sys.executable, "-m", "pyfrag", "bench", *QUICK, "--workload", "burst",
                           "--allocators", "pyfrag-api", "--json", "-"],
                          env=dict(os.environ, PYTHONPATH=str(site)), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"]["burst"]["pair"]["pyfrag-api"]["median_ns_per_op"] > 0
    elsewhere = subprocess.run([sys.executable, "-m", "pyfrag", "bench", *QUICK],
                               env=dict(os.environ, PYTHONPATH=str(site)), cwd=str(tmp_path),
                               capture_output=True, text=True, timeout=120)
    assert elsewhere.returncode == 1 and "run pyfrag bench from there" in elsewhere.stderr


def test_missing_programs_say_how_to_build(tmp_path):
    proc = run_cli("bench", *QUICK, env={bench.ENV_BENCH_DIR: str(tmp_path)})
    assert proc.returncode == 1
    assert "scons -Q" in proc.stderr and "bench_ring" in proc.stderr


@pytest.mark.parametrize("args", [
    ["--runs", "0"], ["--runs", "x"], ["--workload", "nope"], ["--workload", ""],
    ["--allocators", "glibc,nope"], ["--scale", "-1"], ["--bogus"],
])
def test_bad_arguments_exit_2(args):
    proc = run_cli("bench", *args)
    assert proc.returncode == 2
    assert "usage" in proc.stderr


def test_parse_results():
    text = ("noise\nresult churn churn ns_per_op 12.5 peak_rss 100 rss_per_live 1.5 "
            "checksum 7 front malloc\nresult ring floor ns_per_op 3\n")
    assert bench.parse_results(text) == [
        ("churn", "churn", {"ns_per_op": 12.5, "peak_rss": 100.0, "rss_per_live": 1.5}),
        ("ring", "floor", {"ns_per_op": 3.0}),
    ]


def test_plot_draws_or_says_matplotlib_is_missing(tmp_path):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        proc = run_cli("bench", *QUICK, "--plot", str(tmp_path / "p.png"))
        assert proc.returncode == 2 and "matplotlib" in proc.stderr
    else:
        proc = run_cli("bench", *QUICK, "--workload", "burst", "--allocators", "pyfrag",
                       "--plot", str(tmp_path / "p.png"))
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "p.png").stat().st_size > 0


def test_frag_order_option_gives_smaller_frag_pages():
    # PYFRAG_FRAG_ORDER=0 (what pyfrag-4k sets): 4 KiB frag pages; a fragment that needs more
    # gets the smallest block that holds it; the default stays the kernel's 32 KiB (6000
    # bytes: more than a 4 KiB page, so never the first refill's order-0 fallback)
    code = """if True:
        import pyfrag
        with pyfrag.FragCache() as big_cache, pyfrag.FragCache() as small_cache:
            big = big_cache.alloc(6000)
            small = small_cache.alloc(100)
            print(big_cache.info().page_size, small_cache.info().page_size)
            small.free(); big.free()
    """
    from conftest import run_python
    proc = run_python(code, env={"PYFRAG_FRAG_ORDER": "0"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["8192", "4096"]
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "32768"
