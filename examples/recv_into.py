#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Zero-copy receive: socket.recv_into() puts each datagram straight into a fragment.

A generator socket sends COUNT UDP datagrams over 127.0.0.1. The receiver works
like a NIC driver: it keeps a burst of 2048-byte RX buffers (fragments of one
FragCache, 64 bytes of headroom each), receives into them with recv_into(),
prepends a 4-byte header into the headroom (no copy) and sends each one on from
the fragment's own memory, then frees it. The kernel copies the bytes once, on
receive, into the fragment; Python never makes a bytes object of them.

Contract: traffic stays on loopback; every receive has a timeout (no hang);
prints one fact a line and exits 0 when every datagram arrived intact at both
hops, 1 otherwise.

    PYTHONPATH=. python3 examples/recv_into.py
"""
import ctypes
import socket

import pyfrag

COUNT = 256
BURST = 32
BUF_SIZE = 2048
HEADROOM = 64
TIMEOUT = 5.0


def udp_pair():
    """A bound receiver and a sender connected to it, both on 127.0.0.1."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(TIMEOUT)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    return rx, tx


def payload(seq: int) -> bytes:
    return seq.to_bytes(4, "little") * (16 + seq % 100)


def receive_into(rx, frag) -> int:
    with frag.view() as view:
        return rx.recv_into(view[HEADROOM:])  # the kernel writes into the fragment


def receive_burst(cache, rx, count):
    """Fill `count` RX buffers, allocated up front like RX descriptors: [(fragment, length)]."""
    buffers = [cache.alloc(BUF_SIZE, align=64) for _ in range(count)]
    return [(frag, receive_into(rx, frag)) for frag in buffers]


def forward(frag, length, seq, out) -> None:
    """Prepend a header into the headroom and send from the fragment itself."""
    with frag.view() as view:
        view[HEADROOM - 4:HEADROOM] = seq.to_bytes(4, "little")
        out.send(view[HEADROOM - 4:HEADROOM + length])


def main() -> int:
    rx, gen = udp_pair()
    sink, out = udp_pair()
    in_place = intact = forwarded_ok = 0
    before = pyfrag.stats()
    with pyfrag.FragCache() as cache:
        for first in range(0, COUNT, BURST):
            count = min(BURST, COUNT - first)
            for seq in range(first, first + count):
                gen.send(payload(seq))
            for seq, (frag, length) in enumerate(receive_burst(cache, rx, count), first):
                data = ctypes.string_at(frag.address + HEADROOM, length)  # read the raw memory
                in_place += data == payload(seq)
                intact += frag[HEADROOM:HEADROOM + length] == payload(seq)
                forward(frag, length, seq, out)
                forwarded_ok += sink.recv(BUF_SIZE) == seq.to_bytes(4, "little") + payload(seq)
                frag.free()
    after = pyfrag.stats()
    for sock in (rx, gen, sink, out):
        sock.close()
    print("datagrams: %d sent, %d received intact" % (COUNT, intact))
    print("received in place (at fragment address + %d): %d" % (HEADROOM, in_place))
    print("forwarded from the fragment with a header in the headroom: %d" % forwarded_ok)
    print("library counted: allocs %d, frees %d"
          % (after.allocs - before.allocs, after.frees - before.frees))
    return 0 if intact == in_place == forwarded_ok == COUNT else 1


if __name__ == "__main__":
    raise SystemExit(main())
