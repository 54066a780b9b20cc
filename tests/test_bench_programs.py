# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag bench --workload programs` and pyfrag.tools.bench_programs.

- A tiny run (--scale 0.01, two programs) under a pyfrag route and glibc, with
  "mimalloc" faked by pyfrag's own library so that ratios and targets exist:
  the report's shape, the table, the sets.
- Every system program and program of our own passes its output check at a
  tiny scale, and every program's check refuses a wrong output; a run whose
  output is wrong is a failure in the report, not an exception.
- Without PYFRAG_MIMALLOC_BENCH the mimalloc-bench programs are skipped with
  the message that names it; with a folder that lacks them, each says so.
- launch reports the program's peak RSS (not its parent's) and exit status.
- The targets' arithmetic on made-up numbers.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, run_cli, scons_build
from pyfrag.tools import bench_programs, program_set

OWN = os.path.join(REPO_ROOT, "build", "release", "bench", "programs")
QUICK = ("--workload", "programs", "--runs", "1", "--scale", "0.01")


@pytest.fixture(scope="module", autouse=True)
def programs_built():
    """The launcher and our own programs (release, part of the `tests` alias)."""
    scons_build("tests", mode="release")
    assert os.access(os.path.join(OWN, "launch"), os.X_OK)


@pytest.fixture(scope="module")
def fake_mimalloc(tmp_path_factory):
    """A folder whose "libmimalloc.so.2" is pyfrag: a baseline that is surely installed."""
    folder = tmp_path_factory.mktemp("libs")
    (folder / "libmimalloc.so.2").symlink_to(os.path.join(REPO_ROOT, "build", "release",
                                                          "libpyfrag.so"))
    return str(folder)


@pytest.fixture(scope="module")
def report(tmp_path_factory, fake_mimalloc):
    path = tmp_path_factory.mktemp("programs") / "out.json"
    env = {"PYFRAG_BENCH_LIBDIRS": fake_mimalloc, bench_programs.ENV_MIMALLOC_BENCH: ""}
    proc = run_cli("bench", *QUICK, "--allocators", "pyfrag-frag,glibc,mimalloc",
                   "--programs", "bash-assoc,handoff", "--json", str(path), env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(path.read_text())


def test_report_shape(report):
    _, data = report
    assert data["schema"] == "pyfrag-bench/1"
    assert {"schema", "machine", "runs", "scale", "seconds", "allocators", "options", "skipped",
            "results", "targets", "bounds", "load_average", "programs"} == set(data)
    assert list(data["allocators"]) == ["pyfrag-frag", "glibc", "mimalloc"]
    assert data["options"]["pyfrag-frag"] == {"PYFRAG_ROUTE": "frag", "PYFRAG_HUGEPAGES": "thp"}
    rows = data["results"]["programs"]
    assert set(rows) == {"bash-assoc", "handoff"}
    for row in rows.values():
        for entry in row.values():
            assert entry["median_peak_rss_kib"] > 0 and entry["median_seconds"] > 0
            assert entry["samples_peak_rss_kib"] == [entry["median_peak_rss_kib"]]
            assert entry["ratio_rss_to_mimalloc"] == pytest.approx(
                entry["median_peak_rss_kib"] / row["mimalloc"]["median_peak_rss_kib"])
        assert row["mimalloc"]["ratio_time_to_mimalloc"] == pytest.approx(1.0)
    summary = data["programs"]
    assert summary["sets"] == {"bash-assoc": "tuning", "handoff": "tuning"}
    assert summary["failures"] == []
    assert summary["geomeans"]["mimalloc"]["all"]["rss"] == pytest.approx(1.0)
    assert summary["geomeans"]["glibc"]["held-out"]["programs"] == 0
    names = {t["target"] for t in data["targets"]}
    assert names == {"programs peak RSS geomean: pyfrag-frag / mimalloc",
                     "programs peak RSS worst: pyfrag-frag / mimalloc",
                     "programs time geomean: pyfrag-frag / mimalloc",
                     "programs time worst: pyfrag-frag / mimalloc",
                     "programs failed runs: pyfrag-frag"}
    for t in data["targets"]:
        assert t["met"] == (t["ratio"] <= t["limit"])


def test_table(report):
    proc, _ = report
    assert "peak RSS, MiB:" in proc.stdout and "wall time, s" in proc.stdout
    header = [line for line in proc.stdout.splitlines() if line.startswith("set ")][0].split()
    assert header == ["set", "program", "pyfrag-frag", "glibc", "mimalloc"]
    assert any(line.split()[:2] == ["tuning", "bash-assoc"] for line in proc.stdout.splitlines())
    assert "targets (programs; the issue's are pyfrag-adaptive's):" in proc.stdout


def test_every_check_passes_and_mimalloc_bench_is_skipped_with_a_message():
    proc = run_cli("bench", *QUICK, "--allocators", "glibc", "--json", "-",
                   env={bench_programs.ENV_MIMALLOC_BENCH: ""}, timeout=180)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    summary = data["programs"]
    assert summary["failures"] == []
    assert bench_programs.NO_MIMALLOC_BENCH in summary["notes"]
    assert bench_programs.NO_MIMALLOC_BENCH in proc.stderr
    ran = set(data["results"]["programs"])
    for program in program_set.PROGRAMS:
        if program.source == program_set.MIMALLOC_BENCH:
            assert program.name in summary["skipped"] and program.name not in ran
        elif program.name not in summary["skipped"]:  # a command this machine lacks
            assert "median_peak_rss_kib" in data["results"]["programs"][program.name]["glibc"]
    ours = {p.name for p in program_set.PROGRAMS if p.source == program_set.OWN}
    if not shutil.which("g++"):  # SCons builds the C++ one only with a C++ compiler
        ours.discard("containers")
    assert ours <= ran
    held_out = [p for p in program_set.PROGRAMS if p.group == program_set.HELD_OUT]
    assert len(held_out) > len(program_set.PROGRAMS) / 2


def test_missing_mimalloc_bench_programs_are_named(tmp_path):
    proc = run_cli("bench", *QUICK, "--allocators", "glibc", "--programs", "cfrac,larson",
                   "--json", "-", env={bench_programs.ENV_MIMALLOC_BENCH: str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    skipped = json.loads(proc.stdout)["programs"]["skipped"]
    assert skipped == {"cfrac": "cfrac not found in PYFRAG_MIMALLOC_BENCH=%s" % tmp_path,
                       "larson": "larson not found in PYFRAG_MIMALLOC_BENCH=%s" % tmp_path}
    assert "skipped cfrac: cfrac not found" in proc.stderr  # the table went to stderr


def _context(tmp_path, program):
    inputs = tmp_path / program.name
    inputs.mkdir()
    mb = tmp_path / "mb"
    for folder, name in (("espresso", "largest.espresso"), ("barnes", "input")):
        (mb / folder).mkdir(parents=True, exist_ok=True)
        (mb / folder / name).write_text("")
    return program_set.Context(0.01, str(inputs), OWN, str(mb), sys.executable)


@pytest.mark.parametrize("program", program_set.PROGRAMS, ids=lambda p: p.name)
def test_check_refuses_wrong_output(tmp_path, program):
    ctx = _context(tmp_path, program)
    program.command(ctx)  # writes the inputs the check compares against
    # the mimalloc-bench programs that print nothing are checked by that (and their exit status)
    empty_is_right = program.check is program_set._nothing_printed
    for wrong in (b"wrong\n", b"0 0 0\n") + (() if empty_is_right else (b"",)):
        assert program.check(ctx, wrong), "%s accepted %r" % (program.name, wrong)


def test_cfrac_check_multiplies_the_factors(tmp_path):
    program = {p.name: p for p in program_set.PROGRAMS}["cfrac"]
    ctx = _context(tmp_path, program)
    n = program_set.CFRAC_NUMBER
    assert program.check(ctx, b"%d = 856070387728264 * 20495027946319472471219512627\n" % n) is None
    assert "multiply" in program.check(ctx, b"%d = 856070387728265 * 20495027946319472471219512627\n" % n)


def test_wrong_output_is_a_failure_in_the_report():
    setup = bench_programs.setup(["glibc"], ["bash-assoc"])
    setup.programs = [dataclasses.replace(setup.programs[0], check=lambda ctx, out: "not this")]
    report = bench_programs.run(setup, runs=1, scale=0.01)
    assert report["programs"]["failures"] == [
        {"program": "bash-assoc", "allocator": "glibc", "why": "wrong output: not this"}]
    assert report["results"]["programs"]["bash-assoc"]["glibc"] == {"failed": "wrong output: not this"}
    assert "FAILED" in bench_programs.table(report)


def test_programs_join_the_other_workloads_in_one_report():
    proc = run_cli("bench", "--workload", "burst,programs", "--runs", "1", "--scale", "0.01",
                   "--allocators", "glibc,pyfrag-adaptive,pyfrag-api", "--programs", "bash-assoc",
                   "--json", "-", timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data["results"]) == {"burst", "programs"}
    assert set(data["results"]["burst"]["pair"]) == {"glibc", "pyfrag-api"}  # what each knows
    assert set(data["results"]["programs"]["bash-assoc"]) == {"pyfrag-adaptive", "glibc"}
    assert list(data["allocators"]) == ["glibc", "pyfrag-api", "pyfrag-adaptive"]
    assert "pair: pyfrag-api / fastest peer" in {t["target"] for t in data["targets"]}
    assert "peak RSS, MiB:" in proc.stderr and "median ns per op" in proc.stderr


def test_unknown_program_exits_2():
    proc = run_cli("bench", "--workload", "programs", "--programs", "nope")
    assert proc.returncode == 2 and "usage" in proc.stderr


def _launch(tmp_path, *argv):
    result = tmp_path / "launch.txt"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # as bench_programs runs it
    proc = subprocess.run([os.path.join(OWN, "launch"), str(result), "", *argv],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    fields = result.read_text().split()
    return dict(zip(fields[::2], map(int, fields[1::2])))


def test_launch_reports_the_programs_peak_and_status(tmp_path):
    small = _launch(tmp_path, "true")
    assert small["status"] == 0 and 0 < small["maxrss_kib"] < 8 * 1024  # not this process's RSS
    big = _launch(tmp_path, os.path.join(OWN, "blocks4100"), "20000")  # 82 MB of blocks
    assert 20000 * 4100 // 1024 < big["maxrss_kib"] < 400 * 1024 and big["wall_ns"] > 0
    assert _launch(tmp_path, "sh", "-c", "exit 3")["status"] == 3
    assert _launch(tmp_path, "sh", "-c", "kill -9 $$")["status"] == 128 + 9


def test_targets_arithmetic():
    results = {"a": {"pyfrag-adaptive": {"ratio_rss_to_mimalloc": 1.0, "ratio_time_to_mimalloc": 0.9}},
               "b": {"pyfrag-adaptive": {"ratio_rss_to_mimalloc": 4.0, "ratio_time_to_mimalloc": 1.2}}}
    got = {t["target"]: t for t in bench_programs.targets(results, [], ["pyfrag-adaptive", "mimalloc"])}
    assert got["programs peak RSS geomean: pyfrag-adaptive / mimalloc"]["ratio"] == 2.0
    assert not got["programs peak RSS worst: pyfrag-adaptive / mimalloc"]["met"]
    assert "worst: b" in got["programs peak RSS worst: pyfrag-adaptive / mimalloc"]["what"]
    time = got["programs time geomean: pyfrag-adaptive / mimalloc"]
    assert time["ratio"] == pytest.approx((0.9 * 1.2) ** 0.5, abs=1e-3) and not time["met"]
    assert got["programs failed runs: pyfrag-adaptive"]["met"]
    assert bench_programs.targets(results, [], ["pyfrag-adaptive"]) == []  # no baseline, no ratios
