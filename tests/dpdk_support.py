# SPDX-License-Identifier: GPL-2.0-only
"""What the DPDK tests share: whether DPDK is here, and EAL arguments that work here.

Contract:
- `DPDK_MISSING`: None where `pkg-config libdpdk` finds DPDK (SCons then builds the
  DPDK component), else the reason to skip, naming the packages to install.
- `eal_args(vdev, tag)`: EAL arguments for a run without hugepages, PCI or shared
  runtime files (--no-huge --no-pci --no-shconf, a file prefix of its own so
  parallel runs never meet; not --in-memory, which 22.11 refuses with --no-huge),
  the main lcore and one worker (-l 0-1), and one vdev.
- `write_empty_pcap(path)`: a pcap file with no packets (net_pcap's rx_pcap).
- `read_pcap(path)`: the captured length of every packet in a pcap file.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess

INSTALL = "apt-get install libdpdk-dev dpdk-dev pkg-config"


def _missing() -> str | None:
    if shutil.which("pkg-config") is None:
        return "pkg-config is not installed (%s)" % INSTALL
    found = subprocess.run(["pkg-config", "--exists", "libdpdk"], capture_output=True)
    return None if found.returncode == 0 else "DPDK not found by pkg-config libdpdk (%s)" % INSTALL


DPDK_MISSING = _missing()
_runs = 0


def eal_args(vdev: str, tag: str) -> list[str]:
    global _runs
    _runs += 1
    return ["--no-huge", "--no-pci", "--no-shconf", "-m", "256", "-l", "0-1",
            "--file-prefix", "pyfrag-%s-%d-%d" % (tag, os.getpid(), _runs),
            "--log-level", "5", "--vdev", vdev]


PCAP_HEADER = struct.Struct("<IHHiIII")
PCAP_RECORD = struct.Struct("<IIII")


def write_empty_pcap(path) -> None:
    with open(path, "wb") as f:
        f.write(PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # Ethernet


def read_pcap(path) -> list[int]:
    data = open(path, "rb").read()
    assert PCAP_HEADER.unpack_from(data)[0] in (0xA1B2C3D4, 0xA1B23C4D)  # us or ns stamps
    lengths, at = [], PCAP_HEADER.size
    while at < len(data):
        _sec, _usec, captured, _wire = PCAP_RECORD.unpack_from(data, at)
        lengths.append(captured)
        at += PCAP_RECORD.size + captured
    assert at == len(data), "a truncated pcap record"
    return lengths
