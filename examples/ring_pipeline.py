#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""A multiprocessing packet pipeline on shared-arena rings: receiver -> workers -> sender.

Four processes share one SharedArena and its rings; packets cross them as
fragments, never copied or pickled:

  receiver  recv_burst() from a UDP socket into fragments of the arena (one
            recvmmsg per burst), put_many() into the ring of worker 0 or 1,
            burst by burst in turn
  workers   get_many() from their ring, write a sequence-checked header into
            each fragment in place, put_many() into their ring to the sender
  sender    get_many() from both workers' rings, send_burst() each burst to the
            sink (one sendmmsg), free_many()

The main process generates COUNT datagrams, receives them at the sink and
checks every one, while psutil samples the RSS of all four processes (the
arena's pages are counted in each process that touched them).

Contract: loopback only; every wait has a timeout (no hang); prints one fact
a line and exits 0 when every datagram arrived intact, in order per worker,
and the arena holds no fragment but the rings' own blocks at the end; 1
otherwise. Usage: ring_pipeline.py [COUNT] (default 20000).

    PYTHONPATH=. python3 examples/ring_pipeline.py 20000
"""
import multiprocessing
import os
import queue
import socket
import sys
import threading
import time

import psutil

import pyfrag

BURST = 32
SIZE = 1500
WORKERS = 2
TIMEOUT = 30.0


def payload(seq: int) -> bytes:
    return b"\0\0\0\0" + seq.to_bytes(4, "little") * (8 + seq % 300)


def receiver(name, address, count, ready):
    with pyfrag.SharedArena(name) as arena:
        rings = [pyfrag.SharedRing(arena, "work%d" % i) for i in range(WORKERS)]
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        rx.bind(address)
        rx.settimeout(TIMEOUT)
        ready.put(rx.getsockname())
        got = turn = 0
        while got < count:
            frags = arena.recv_burst(rx, n=BURST, size=SIZE)
            rings[turn].put_many(frags, timeout=TIMEOUT)
            turn = (turn + 1) % WORKERS
            got += len(frags)
        rx.close()


def worker(name, index):
    with pyfrag.SharedArena(name) as arena:
        work = pyfrag.SharedRing(arena, "work%d" % index)
        done = pyfrag.SharedRing(arena, "done%d" % index)
        while True:
            try:
                frags = work.get_many(BURST, timeout=2.0)
            except (queue.Empty, BrokenPipeError):  # the receiver is finished (or gone)
                return
            for frag in frags:
                seq = int.from_bytes(frag[4:8], "little")
                frag[0:4] = (seq ^ 0x5A5A5A5A).to_bytes(4, "little")  # the "processing"
            done.put_many(frags, timeout=TIMEOUT)


def sender(name, sink, count):
    with pyfrag.SharedArena(name) as arena:
        rings = [pyfrag.SharedRing(arena, "done%d" % i) for i in range(WORKERS)]
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        tx.connect(sink)
        sent, idle_since = 0, time.monotonic()
        while sent < count and time.monotonic() - idle_since < TIMEOUT:
            for ring in rings:
                frags = ring.get_many(BURST, block=False)
                if frags:
                    sent += arena.send_burst(tx, frags)
                    arena.free_many(frags)
                    idle_since = time.monotonic()
            if not frags:
                time.sleep(0.0002)
        tx.close()


def sample_rss(pids, stop, peaks):
    procs = {pid: psutil.Process(pid) for pid in pids}
    while not stop.is_set():
        for pid, proc in procs.items():
            try:
                peaks[pid] = max(peaks.get(pid, 0), proc.memory_info().rss)
            except psutil.NoSuchProcess:
                pass
        stop.wait(0.01)


def main(argv) -> int:
    count = int(argv[1]) if len(argv) > 1 else 20000
    if count < 1:
        print("usage: ring_pipeline.py [COUNT >= 1]", file=sys.stderr)
        return 2
    name = "ring-pipeline-%d" % os.getpid()
    ctx = multiprocessing.get_context("fork")
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(TIMEOUT)
    with pyfrag.SharedArena(name, create=True, size=64 << 20) as arena:
        for i in range(WORKERS):
            pyfrag.SharedRing(arena, "work%d" % i, create=True, capacity=1024)
            pyfrag.SharedRing(arena, "done%d" % i, create=True, capacity=1024)
        ready = ctx.Queue()
        procs = [ctx.Process(target=receiver, args=(name, ("127.0.0.1", 0), count, ready))]
        procs += [ctx.Process(target=worker, args=(name, i)) for i in range(WORKERS)]
        procs.append(ctx.Process(target=sender, args=(name, sink.getsockname(), count)))
        for proc in procs:
            proc.start()
        peaks, stop = {}, threading.Event()
        sampler = threading.Thread(target=sample_rss, args=([p.pid for p in procs], stop, peaks))
        sampler.start()
        gen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        gen.connect(ready.get(timeout=TIMEOUT))
        start = time.perf_counter()
        received, intact = 0, 0
        sent = 0
        while received < count:
            while sent < count and sent - received < 512:  # bounded in flight: no drops
                gen.send(payload(sent))
                sent += 1
            try:
                data = sink.recv(2048)
            except socket.timeout:
                break
            seq = int.from_bytes(data[4:8], "little")
            header = (seq ^ 0x5A5A5A5A).to_bytes(4, "little")
            intact += data == header + payload(seq)[4:]
            received += 1
        seconds = time.perf_counter() - start
        for proc in procs:
            proc.join(TIMEOUT)
        stop.set()
        sampler.join()
        gen.close()
        arena.reap()
        stats = arena.stats()
        exits = [proc.exitcode for proc in procs]
    sink.close()
    rings = 2 * WORKERS
    print("datagrams: %d sent, %d received, %d intact" % (count, received, intact))
    print("throughput: %.0f packets/s through receiver -> %d workers -> sender"
          % (received / seconds, WORKERS))
    roles = ["receiver"] + ["worker%d" % i for i in range(WORKERS)] + ["sender"]
    for role, proc in zip(roles, procs):
        print("peak RSS %s: %.1f MiB" % (role, peaks.get(proc.pid, 0) / 2**20))
    print("process exit codes: %s" % " ".join(map(str, exits)))
    print("arena: allocs %d, frees %d, outstanding %d (the %d rings' blocks)"
          % (stats.allocs, stats.frees, stats.allocs - stats.frees, rings))
    ok = (received == intact == count and exits == [0] * len(procs)
          and stats.allocs - stats.frees == rings)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
