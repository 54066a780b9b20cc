# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag bench --workload dpdk` (pyfrag/tools/bench_dpdk.py, native/bench/dpdk/):
a short run reports every case for every variant with ns and bytes per packet,
the table has the dpdk rows and the issue's targets, and the memory figures are
what the layouts say. Skipped, with the reason, where pkg-config finds no DPDK;
there the workload is skipped with a message. Timing is never asserted."""
import json

import pytest

from conftest import run_cli, scons_build
from dpdk_support import DPDK_MISSING
from pyfrag.tools import bench_dpdk

needs_dpdk = pytest.mark.skipif(DPDK_MISSING is not None, reason=str(DPDK_MISSING))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    scons_build("tests", mode="release")
    path = tmp_path_factory.mktemp("bench_dpdk") / "out.json"
    proc = run_cli("bench", "--workload", "dpdk", "--runs", "1", "--scale", "0.02",
                   "--allocators", "pyfrag", "--json", str(path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(path.read_text())


@needs_dpdk
def test_every_case_and_variant(report):
    proc, data = report
    cases = data["results"]["dpdk"]
    assert set(cases) == set(bench_dpdk.CASES)
    for row in cases.values():
        assert set(row) == set(bench_dpdk.VARIANTS)
        for entry in row.values():
            assert entry["median_ns_per_op"] > 0 and entry["median_bytes_per_pkt"] > 0
    assert "dpdk: median ns per packet" in proc.stdout and "bytes/pkt" in proc.stdout
    judged = {t["target"] for t in data["targets"]}
    assert "dpdk imix-pipeline: pyfrag / mempool" in judged
    assert "dpdk jumbo: pyfrag / mempool bytes" in judged


@needs_dpdk
def test_memory_per_packet(report):
    _, data = report
    imix = data["results"]["dpdk"]["imix-burst"]
    # a 2048-room mbuf is one fixed element whatever the packet; a pyfrag packet is a bare
    # mbuf plus its fragment (imix averages 354 bytes + headroom + shared info)
    assert imix["mempool"]["median_bytes_per_pkt"] > 2048 + 128
    assert 500 < imix["pyfrag"]["median_bytes_per_pkt"] < 0.5 * imix["mempool"]["median_bytes_per_pkt"]
    jumbo = data["results"]["dpdk"]["jumbo-burst"]
    # three 9000-byte packets per 32 KiB frag page
    assert jumbo["pyfrag"]["median_bytes_per_pkt"] == pytest.approx(32768 / 3 + 192, rel=0.05)


def test_not_in_the_default_workloads():
    from pyfrag.tools import bench
    assert "dpdk" in bench.WORKLOADS and "dpdk" not in bench.DEFAULT_WORKLOADS


def test_skipped_with_a_message_without_the_program(tmp_path, monkeypatch):
    reason = bench_dpdk.missing(str(tmp_path))
    assert reason and reason.startswith("skipped:")
