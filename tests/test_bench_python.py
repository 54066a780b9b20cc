# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag bench --workload python`: every row and case runs (at a tiny scale), the table
and the JSON report hold medians, packets per second, ratios and the issue's targets."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli
from pyfrag.tools import bench_python


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "python.json"
    run = run_cli("bench", "--workload", "python", "--runs", "1", "--scale", "0.02",
                  "--json", str(path), timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout, json.loads(path.read_text())


def test_every_case_has_a_median_and_a_ratio(report):
    _, data = report
    assert data["workload"] == "python" and data["runs"] == 1
    cases = [item["case"] for item in data["results"]]
    assert cases == [case for _, case, _, _, _ in bench_python.CASES]
    for item in data["results"]:
        assert item["median_us_per_packet"] > 0
        assert item["packets_per_second"] == pytest.approx(1e6 / item["median_us_per_packet"])
        assert len(item["samples_us_per_packet"]) == 1
        assert item["ratio_to_baseline"] > 0
        if item["case"] == item["baseline"]:
            assert item["ratio_to_baseline"] == 1.0


def test_table_and_targets(report):
    out, data = report
    assert "| what a Python packet loop does |" in out
    assert "SharedRing" in out and "bytes via Queue" in out
    assert [t["target"] for t in data["targets"]] == [t[0] for t in bench_python.TARGETS]
    for target in data["targets"]:
        assert target["measured"] > 0 and isinstance(target["met"], bool)
        assert ("target %s: measured" % target["target"]) in out
    # the burst target says what the kernel alone costs, from the same run
    (burst,) = [t for t in data["targets"] if "floor" in t]
    medians = {item["case"]: item["median_us_per_packet"] for item in data["results"]}
    assert burst["floor"] == pytest.approx(medians[bench_python.KERNEL_FLOOR]
                                           / medians["32 recv_into(bytearray)"])
    assert "the kernel's floor in this run" in out


def test_python_workload_with_a_bad_name_is_a_usage_error():
    run = run_cli("bench", "--workload", "pyhton")
    assert run.returncode == 2
