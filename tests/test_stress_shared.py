# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag stress --shared`: a short run end to end with its JSON and table, a consumer
SIGKILLed mid-run (--fault-kill-consumer), Ctrl-C removing the arena, the checks catching a
broken balance, and usage errors. Runs are 1 to 2 s."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import types

import pytest

from conftest import REPO_ROOT, run_cli
from pyfrag import cli, shared
from pyfrag.tools.stress import judge

SANITIZED = os.environ.get("PYFRAG_TEST_MODE") in ("asan", "tsan")
SLACK = ("--rss-slack", "512") if SANITIZED else ()


def shared_json(tmp_path, *argv, expect=0):
    path = tmp_path / "out.json"
    done = run_cli("stress", "--shared", *argv, *SLACK, "-q", "--json", str(path))
    assert done.returncode == expect, done.stdout + done.stderr
    return json.loads(path.read_text()), done


def arena_files(name: str) -> list:
    return [os.path.join(d, "pyfrag." + name) for d in ("/dev/shm", "/dev/hugepages")
            if os.path.exists(os.path.join(d, "pyfrag." + name))]


def test_short_run_passes(tmp_path):
    data, done = shared_json(tmp_path, "--duration", "1")
    assert data["ok"] is True and data["violations"] == []
    labels = [w["workload"] for w in data["workers"]]
    assert labels == ["producer 0", "producer 1", "consumer 0", "consumer 1"]
    assert all(w["status"] == "ok" and w["exitcode"] == 0 for w in data["workers"])
    arena = data["arena"]
    totals = arena["totals"]
    assert totals["allocs"] > 1000 and totals["frees"] == totals["allocs"]
    assert totals["drained"] == totals["self_freed"] == arena["lost_fragments"] == 0
    assert totals["corrupt"] == totals["alloc_failures"] == totals["free_failures"] == 0
    produced = sum(w["ops"] for w in data["workers"][:2])
    consumed = sum(w["ops"] for w in data["workers"][2:])
    assert produced == consumed == totals["allocs"]
    before, end = arena["stats_before"], arena["stats_final"]
    assert end["pages_in_use"] == before["pages_in_use"]
    assert end["allocs"] - before["allocs"] == totals["allocs"] + arena["rings"] + 1  # + layout
    assert end["allocs"] == end["frees"] and end["invalid_frees"] == 0
    assert (end["processes"], end["caches"], end["reaped_processes"]) == (1, 0, 0)
    assert end["attaches"] - before["attaches"] == end["detaches"] - before["detaches"] == 4
    for w in data["workers"]:
        assert w["peak_rss_bytes"] >= w["final_rss_bytes"] > 0
        assert w["peak_rss_bytes"] - w["pre_rss_bytes"] <= arena["map_bytes"] + 4 * 2**20 or \
            SANITIZED
        assert 0.0 <= w["hugepage_coverage"] <= 1.0
        if arena["backing"] == "hugetlb":
            assert w["hugepage_coverage"] == 1.0
    assert arena_files(arena["name"]) == []  # removed at the end
    table = done.stdout
    assert "worker  pid" in table and "role" in table and "producer 0" in table
    assert "arena stat" in table and "pages_in_use" in table
    assert "0 lost" in table and table.rstrip().splitlines()[-2].startswith("ok (4 processes")


def test_a_killed_consumer_is_survived(tmp_path):
    data, done = shared_json(tmp_path, "--duration", "2", "--fault-kill-consumer", "0.5")
    assert data["ok"] is True, data["violations"]
    arena, workers = data["arena"], data["workers"]
    kill = arena["kill"]
    assert kill["killed"] and kill["worker"] == 2 and kill["pid"] == workers[2]["pid"]
    assert workers[2]["status"] == "killed" and workers[2]["exitcode"] == -signal.SIGKILL
    assert [w["status"] for w in workers if w["index"] != 2] == ["ok"] * 3
    assert arena["peers"]["consumers"][0]["state"] == "dead"
    totals = arena["totals"]
    # its rings filled after it died; the producers took them back
    assert totals["drained"] > 0 and totals["dead_seen"] >= 1
    assert 0 <= arena["lost_fragments"] <= 1
    before, end = arena["stats_before"], arena["stats_final"]
    assert end["reaped_processes"] - before["reaped_processes"] == 1
    assert 0 <= end["pages_in_use"] - before["pages_in_use"] <= 8 * arena["lost_fragments"]
    # a consumer killed after its free but before counting it: counted lost, yet freed
    assert 0 <= end["allocs"] - end["frees"] <= arena["lost_fragments"]
    assert (end["processes"], end["caches"]) == (1, 0)
    assert "SIGKILLed 0.5 s into its run; reaped 1" in done.stdout


def test_interrupt_removes_the_arena():
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "pyfrag", "stress", "--shared", "--duration",
                             "120"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        while "running" not in proc.stderr.readline():
            assert proc.poll() is None, "exited before running"
        assert arena_files("stress-%d" % proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert arena_files("stress-%d" % proc.pid) == []


def test_checks_name_each_broken_rule():
    """judge.check_arena on made-up numbers: a fragment unaccounted for, corruption, pages
    left, no reap."""
    stats = dict.fromkeys(shared.FIELDS, 0)
    stats["processes"] = 1
    before = types.SimpleNamespace(**stats)
    after_run = types.SimpleNamespace(**{**stats, "allocs": 10, "frees": 9})
    final = types.SimpleNamespace(**{**stats, "allocs": 10, "frees": 9, "pages_in_use": 8,
                                     "processes": 2})
    totals = dict(allocs=10, frees=9, drained=0, self_freed=0, corrupt=1, alloc_failures=0,
                  free_failures=0, dead_seen=0)
    found = judge.check_arena(before, before, after_run, final, totals, lost=1, in_rings=0,
                              kill_after=0.0, kill=None, arena_bytes=16 << 20)
    assert [v.check for v in found] == ["leak", "corruption", "pages", "teardown"]
    # the same numbers with consumer 0 killed: one fragment and its page are what it held
    final = types.SimpleNamespace(**{**vars(final), "processes": 1, "reaped_processes": 1})
    totals["corrupt"] = 0
    assert judge.check_arena(before, before, after_run, final, totals, lost=1, in_rings=0,
                             kill_after=0.0, kill={"killed": True}, arena_bytes=16 << 20) == []


@pytest.mark.parametrize("argv", [
    ["--producers", "2"],                                  # without --shared
    ["--fault-kill-consumer", "1"],                        # without --shared
    ["--shared", "--workload", "ring"],
    ["--shared", "--workers", "4"],
    ["--shared", "--fault-leak", "10"],
    ["--shared", "--start-method", "fork"],
    ["--shared", "--producers", "17"],
    ["--shared", "--consumers", "0"],
    ["--shared", "--backing", "huge"],
    ["--shared", "--duration", "1", "--fault-kill-consumer", "2"],
    ["--shared", "--ops", "1000", "--fault-kill-consumer", "0.1"],
])
def test_bad_arguments_exit_2(argv, capsys):
    assert cli.main(["stress", *argv]) == 2
    assert "error" in capsys.readouterr().err
