# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag stress --cmd`: external programs under the preload, their statistics
collected per instance, and the verdicts (exit status, signal, usage errors)."""
from __future__ import annotations

import json
import os
import shlex
import sys

from conftest import run_cli
from pyfrag.preload import parse_stats_summaries

PYTHON = shlex.quote(sys.executable)
ALLOCATING = PYTHON + " -c " + shlex.quote("import threading\n"
                                           "x = [bytearray(600 + i % 3000) for i in range(20000)]\n"
                                           "print(len(x))")


def stress_cmd(tmp_path, cmd, *argv, expect, env=None):
    path = tmp_path / "out.json"
    done = run_cli("stress", "--cmd", cmd, "-q", "--json", str(path), *argv, env=env)
    assert done.returncode == expect, done.stdout + done.stderr
    return json.loads(path.read_text()), done


def test_instances_run_under_the_preload_with_their_statistics(tmp_path):
    data, done = stress_cmd(tmp_path, ALLOCATING, "--workers", "2", expect=0)
    assert data["ok"] is True and data["command"][0] == sys.executable
    assert len(data["workers"]) == 2
    for worker in data["workers"]:
        assert worker["counts"]["summary"] is True
        assert worker["counts"]["allocs"] >= 20000  # the bytearrays (> 512 B: not pymalloc's)
        assert worker["counts"]["frees"] > 0
        served = worker["stats_after"]
        assert served["allocations small (page_frag)"] + served["allocations compact (slab)"] > 0
        assert worker["peak_rss_bytes"] > 0
        assert 0.0 <= worker["hugepage_coverage"] <= 1.0
    assert "2 instances" in done.stdout


def test_a_failing_program_is_a_violation(tmp_path):
    data, _ = stress_cmd(tmp_path, "sh -c 'echo boom >&2; exit 3'", "--workers", "1", expect=1)
    (violation,) = data["violations"]
    assert violation["check"] == "exit-cmd"
    assert "status 3" in violation["message"] and "boom" in violation["message"]


def test_a_program_killed_by_a_signal_is_named(tmp_path):
    # under CI's ASan pass the preloaded runtime would turn the SIGSEGV into a report and exit(1)
    env = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":handle_segv=0"}
    data, _ = stress_cmd(tmp_path, "sh -c 'kill -SEGV $$'", "--workers", "1", expect=1, env=env)
    (violation,) = data["violations"]
    assert violation["check"] == "crash-cmd" and "SIGSEGV" in violation["message"]


def test_usage_errors_exit_2():
    missing = run_cli("stress", "--cmd", "no-such-program-for-pyfrag", "-q")
    assert missing.returncode == 2 and "no such program" in missing.stderr
    faults = run_cli("stress", "--cmd", "true", "--fault-leak", "5", "-q")
    assert faults.returncode == 2 and "--cmd" in faults.stderr
    empty = run_cli("stress", "--cmd", "", "-q")
    assert empty.returncode == 2


def test_summaries_are_parsed_per_process():
    text = ("noise\n"
            "pyfrag stats (sh, pid 10):\n"
            "  allocations  small (page_frag) 5, medium (page runs) 1, large (chunk runs) 0, failed 0\n"
            "  chunks now   hugetlb 1, thp 0, 4k 0; commits 2, releases 1, commit failures 0\n"
            "more noise\n"
            "pyfrag stats (cat, pid 11):\n"
            "  frees        total 7, on the owner's bias 3, foreign (ignored) 0, invalid 0\n")
    first, second = parse_stats_summaries(text)
    assert (first["program"], first["pid"], second["pid"]) == ("sh", 10, 11)
    assert first["counters"]["allocations small (page_frag)"] == 5
    assert first["counters"]["chunks now commits"] == 2
    assert second["counters"]["frees on the owner's bias"] == 3
    assert "frees total" not in first["counters"]
