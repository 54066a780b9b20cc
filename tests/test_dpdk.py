# SPDX-License-Identifier: GPL-2.0-only
"""pyfrag for DPDK (native/dpdk, pyfrag_dpdk.h) against real DPDK: the C test
program native/dpdk/tests/test_dpdk.c on EAL without hugepages or PCI, once per
vdev (net_null, net_ring, net_pcap), built by SCons for PYFRAG_TEST_MODE like
tests/test_native.py's programs. Skipped, with the reason, where pkg-config
finds no DPDK; without DPDK the build must still succeed (checked here too).
"""
import os
import pathlib
import subprocess

import pytest

from conftest import MODE, REPO_ROOT, SCONS, scons_build
from dpdk_support import DPDK_MISSING, eal_args, read_pcap, write_empty_pcap

needs_dpdk = pytest.mark.skipif(DPDK_MISSING is not None, reason=str(DPDK_MISSING))


@pytest.fixture(scope="module")
def test_program():
    path = pathlib.Path(scons_build("tests")) / "dpdk" / "tests" / "test_dpdk"
    assert path.exists(), "pkg-config finds DPDK but SCons did not build %s" % path
    return path


def run_program(path, vdev, cwd):
    env = dict(os.environ)
    env.setdefault("TSAN_OPTIONS", "halt_on_error=1")
    env.setdefault("ASAN_OPTIONS", "halt_on_error=1")
    env.pop("LD_PRELOAD", None)  # a sanitizer runtime preloaded for Python is not for it
    run = subprocess.run([str(path), *eal_args(vdev, "test")], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=300)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert "not ok" not in run.stdout, report
    assert "Sanitizer" not in run.stderr and "runtime error" not in run.stderr, report
    assert run.stdout.rstrip().endswith(" 0 failed"), report
    return run.stdout


@needs_dpdk
@pytest.mark.parametrize("vdev", ["net_null0", "net_ring0"])
def test_dpdk_program(test_program, vdev, tmp_path):
    out = run_program(test_program, vdev, tmp_path)
    assert "ok test_tx" in out


@needs_dpdk
def test_dpdk_program_pcap(test_program, tmp_path):
    rx, tx = tmp_path / "in.pcap", tmp_path / "out.pcap"
    write_empty_pcap(rx)
    out = run_program(test_program, "net_pcap0,rx_pcap=%s,tx_pcap=%s" % (rx, tx), tmp_path)
    # what test_tx put on the wire is what the capture holds: every packet, every byte
    count, total = next(map(int, line.split()[1:]) for line in out.splitlines()
                        if line.startswith("tx "))
    lengths = read_pcap(tx)
    assert len(lengths) == count and sum(lengths) == total
    assert set(lengths) == {64, 576, 1500}


def test_build_without_dpdk(tmp_path):
    """With no libdpdk for pkg-config, the build says so in one line and builds the rest."""
    if MODE != "release":
        pytest.skip("checked once, in the release mode")
    env = dict(os.environ, PKG_CONFIG_LIBDIR=str(tmp_path), PKG_CONFIG_PATH=str(tmp_path))
    run = subprocess.run([*SCONS, "-Q", "-n", "lib"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    notes = [line for line in run.stdout.splitlines() if "DPDK not found" in line]
    assert len(notes) == 1, run.stdout
