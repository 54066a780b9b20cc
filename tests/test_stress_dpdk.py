# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag stress --workload dpdk`: the DPDK pipeline (examples/dpdk/dpdk_pipeline.c)
under the stress harness. A clean run passes with every check named; an injected
leak (--fault-leak) fails with the leak named per worker; without the program the
command says what to install. The program is the release build's; skipped, with
the reason, where pkg-config finds no DPDK."""
import json

import pytest

from conftest import run_cli, scons_build
from dpdk_support import DPDK_MISSING
from pyfrag.tools.stress.dpdk_job import check_pipeline

needs_dpdk = pytest.mark.skipif(DPDK_MISSING is not None, reason=str(DPDK_MISSING))


@pytest.fixture(scope="module")
def pipeline_built():
    scons_build("examples", "release")


@needs_dpdk
def test_clean_run_passes(pipeline_built, tmp_path):
    out = tmp_path / "stress.json"
    run = run_cli("stress", "--workload", "dpdk", "--workers", "2", "--duration", "2", "-q",
                  "--json", str(out), timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "every fragment freed and every mbuf back" in run.stdout
    report = json.loads(out.read_text())
    text = json.dumps(report)
    assert '"violations": []' in text
    assert run.stdout.count(" ok\n") == 2, run.stdout  # both workers' rows


@needs_dpdk
def test_injected_leak_is_caught(pipeline_built):
    run = run_cli("stress", "--workload", "dpdk", "--workers", "1", "--duration", "1", "-q",
                  "--fault-leak", "4", timeout=180)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "leak: 4 fragments not freed" in run.stdout
    assert "leak: 4 mbufs not back in their pool" in run.stdout


def test_rules_on_made_up_counts():
    clean = {"packets": 10, "fragments_out": 0, "mbufs_out": 0, "corrupt": 0, "pages_in_use": 0,
             "committed_bytes": 2 << 20, "retain_chunks": 1}
    assert check_pipeline(0, clean, "") == []
    assert [c for c, _ in check_pipeline(0, dict(clean, corrupt=2), "")] == ["corruption"]
    assert [c for c, _ in check_pipeline(0, dict(clean, committed_bytes=6 << 20), "")] == ["rss"]
    assert [c for c, _ in check_pipeline(-11, {}, "boom")] == ["crash", "exit"]
    assert [c for c, _ in check_pipeline(3, clean, "")] == ["exit"]


def test_missing_program_is_a_usage_error(monkeypatch):
    from pyfrag.tools.stress import dpdk_job
    monkeypatch.setattr(dpdk_job, "PROGRAM", "/nonexistent/dpdk_pipeline")
    with pytest.raises(dpdk_job.DpdkMissing, match="pkg-config libdpdk"):
        dpdk_job.find_program()
