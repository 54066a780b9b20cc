#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Zero-copy receive in bursts: one recvmmsg fills up to 32 fragments, one sendmmsg sends
them on.

A generator socket sends COUNT UDP datagrams over 127.0.0.1. The receiver works
like a NIC driver polling its RX ring: cache.recv_burst() fills up to BURST fresh
fragments with one recvmmsg call (each fragment as long as its datagram, the
fragments nothing filled freed at once), stamps a sequence number into each
fragment's first 4 bytes in place, then cache.send_burst() forwards the whole
burst from the fragments' own memory with one sendmmsg call, and one
free_many() gives them back. The kernel copies the bytes once, on receive,
into the fragment; Python never makes a bytes object of them.

Contract: traffic stays on loopback; every receive has a timeout (no hang);
prints one fact a line and exits 0 when every datagram arrived intact at both
hops and every fragment was freed, 1 otherwise.

    PYTHONPATH=. python3 examples/recv_into.py
"""
import ctypes
import socket

import pyfrag

COUNT = 256
BURST = 32
BUF_SIZE = 2048
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
    return b"\0\0\0\0" + seq.to_bytes(4, "little") * (16 + seq % 100)


def main() -> int:
    rx, gen = udp_pair()
    sink, out = udp_pair()
    in_place = intact = forwarded_ok = bursts = 0
    before = pyfrag.stats()
    with pyfrag.FragCache() as cache:
        seq = 0
        while seq < COUNT:
            count = min(BURST, COUNT - seq)
            for i in range(seq, seq + count):
                gen.send(payload(i))
            frags = []
            while len(frags) < count:  # one recvmmsg each: usually all of them at once
                frags += cache.recv_burst(rx, n=count - len(frags), size=BUF_SIZE)
                bursts += 1
            for i, frag in enumerate(frags, seq):
                data = ctypes.string_at(frag.address, len(frag))  # the raw memory
                in_place += data == payload(i)
                intact += frag[:] == payload(i)
                frag[0:4] = i.to_bytes(4, "big")  # a header written in place
            cache.send_burst(out, frags)  # one sendmmsg, from the fragments themselves
            for i in range(seq, seq + count):
                expected = i.to_bytes(4, "big") + payload(i)[4:]
                forwarded_ok += sink.recv(BUF_SIZE) == expected
            cache.free_many(frags)
            seq += count
    after = pyfrag.stats()
    for sock in (rx, gen, sink, out):
        sock.close()
    allocs, frees = after.allocs - before.allocs, after.frees - before.frees
    print("datagrams: %d sent, %d received intact" % (COUNT, intact))
    print("received in place (at the fragment's address): %d" % in_place)
    print("received with %d recvmmsg bursts, forwarded with %d sendmmsg bursts"
          % (bursts, (COUNT + BURST - 1) // BURST))
    print("forwarded from the fragments with a header written in place: %d" % forwarded_ok)
    print("library counted: allocs %d, frees %d, outstanding %d" % (allocs, frees, allocs - frees))
    return 0 if intact == in_place == forwarded_ok == COUNT and allocs == frees else 1


if __name__ == "__main__":
    raise SystemExit(main())
