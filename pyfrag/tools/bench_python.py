# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag bench --workload python`: what a Python packet loop pays, pyfrag against Python's
own buffers.

Contract:
- CASES is the one table: (row, case, what it runs, baseline case of the
  row). Each case is a function(count) -> seconds spent on `count` packets
  (setup outside the timed part). run(runs, scale) runs every case `runs`
  times, interleaved (A B C A B C ...), and returns the report (JSON-ready):
  per case the median and every sample in us per packet, packets per second
  of the median, and its ratio to the row's baseline (a ratio < 1 is
  faster than the baseline). table(report) is the text table.
- The process cases (the hand-over row) start one consumer process per run
  (fork) and time from the first put, once the consumer said it is ready,
  to the consumer's last get.
- report["targets"] says for each of issue 17's targets what was measured
  and whether it was met (a measurement: never an exit code).
- Nothing here loads psutil or numpy; the library loads on the first case.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import socket
import statistics
import time
from multiprocessing import shared_memory

import pyfrag

WORKLOAD = "python"  # the name `pyfrag bench --workload` knows it by
PACKET = 1500
BURST = 32
COUNT = 20000  # packets per case per run at scale 1
BURST_CASE = "pyfrag recv_burst(n=32) + free_many"
KERNEL_FLOOR = "recvmmsg(32) alone, buffers set up once (the kernel's floor)"


# ---- one buffer ------------------------------------------------------------------

def _loop(body, count: int) -> float:
    start = time.perf_counter()
    body(count)
    return time.perf_counter() - start


def frag_alloc_free(count):
    with pyfrag.FragCache() as cache:
        alloc = cache.alloc

        def body(n):
            for _ in range(n):
                alloc(PACKET).free()
        return _loop(body, count)


def frag_with_write(count):
    with pyfrag.FragCache() as cache:
        alloc = cache.alloc

        def body(n):
            for _ in range(n):
                with alloc(PACKET) as frag:
                    frag[0] = 1
        return _loop(body, count)


def frag_bulk(count):
    with pyfrag.FragCache() as cache:
        def body(n):
            for _ in range(n // BURST):
                cache.free_many(cache.alloc_many(BURST, PACKET))
        return _loop(body, count - count % BURST) * count / (count - count % BURST)


def bytearray_new(count):
    def body(n):
        for _ in range(n):
            bytearray(PACKET)
    return _loop(body, count)


def bytearray_with_write(count):
    def body(n):
        for _ in range(n):
            buf = bytearray(PACKET)
            buf[0] = 1
    return _loop(body, count)


def bytearray_slices(count):
    pool = memoryview(bytearray(PACKET * BURST))

    def body(n):
        for i in range(n):
            j = (i % BURST) * PACKET
            pool[j:j + PACKET].release()
    return _loop(body, count)


# ---- datagrams ------------------------------------------------------------------------

def _pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for sock in (a, b):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return a, b


def _receive(receive_batch, count: int, batch: int) -> float:
    """Time receive_batch(b) over count packets, `batch` datagrams queued before each."""
    a, b = _pair()
    payload = b"x" * PACKET
    spent = 0.0
    try:
        for _ in range(max(1, count // batch)):
            for _ in range(batch):
                a.send(payload)
            start = time.perf_counter()
            receive_batch(b)
            spent += time.perf_counter() - start
    finally:
        a.close()
        b.close()
    return spent * count / (max(1, count // batch) * batch)


def frag_recv_view(count):
    with pyfrag.FragCache() as cache:
        def one(sock):
            frag = cache.alloc(PACKET)
            view = frag.view()
            sock.recv_into(view)
            view.release()
            frag.free()
        return _receive(one, count, 1)


def frag_recv_burst_1(count):
    with pyfrag.FragCache() as cache:
        def one(sock):
            cache.free_many(cache.recv_burst(sock, 1, PACKET))
        return _receive(one, count, 1)


def bytearray_recv_1(count):
    return _receive(lambda sock: sock.recv_into(bytearray(PACKET)), count, 1)


def frag_recv_burst_32(count):
    with pyfrag.FragCache() as cache:
        def burst(sock):
            cache.free_many(cache.recv_burst(sock, BURST, 2048))
        return _receive(burst, count, BURST)


def bytearray_recv_32(count):
    def burst(sock):
        for _ in range(BURST):
            sock.recv_into(bytearray(PACKET))
    return _receive(burst, count, BURST)


def slices_recv_32(count):
    pool = memoryview(bytearray(PACKET * BURST))
    parts = [pool[i * PACKET:(i + 1) * PACKET] for i in range(BURST)]

    def burst(sock):
        for part in parts:
            sock.recv_into(part)
    return _receive(burst, count, BURST)


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(_Iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


def kernel_recvmmsg_32(count):
    """The floor of any burst receive: libc's recvmmsg of 32 into buffers set up once,
    one ctypes call per burst and nothing made per datagram (the kernel's own work)."""
    libc = ctypes.CDLL(None, use_errno=True)
    recvmmsg = libc.recvmmsg
    buffers = ctypes.create_string_buffer(2048 * BURST)
    iovs = (_Iovec * BURST)()
    msgs = (_Mmsghdr * BURST)()
    for i in range(BURST):
        iovs[i].base = ctypes.addressof(buffers) + 2048 * i
        iovs[i].len = 2048
        msgs[i].hdr.iov = ctypes.pointer(iovs[i])
        msgs[i].hdr.iovlen = 1

    def burst(sock):
        if recvmmsg(sock.fileno(), msgs, BURST, socket.MSG_DONTWAIT, None) != BURST:
            raise OSError(ctypes.get_errno(), "recvmmsg did not get the whole burst")
    return _receive(burst, count, BURST)


# ---- to another process ----------------------------------------------------------------

def _consume_bytes(queue, done, count):
    done.put("ready")
    for _ in range(count):
        queue.get()
    done.put(time.perf_counter())


def _consume_shared(name, queue, done, count):
    with pyfrag.SharedArena(name) as arena:
        done.put("ready")
        for _ in range(count):
            offset, length = queue.get()
            arena.free_offset(offset)
        done.put(time.perf_counter())


def _consume_shm(name, queue, done, count):
    shm = shared_memory.SharedMemory(name)
    done.put("ready")
    total = 0
    for _ in range(count):
        offset, length = queue.get()
        total += shm.buf[offset]
    shm.close()
    done.put(time.perf_counter())


def _hand_over(target, args, produce, count) -> float:
    ctx = multiprocessing.get_context("fork")
    queue, done = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=target, args=args + (queue, done, count))
    proc.start()
    done.get(timeout=120)  # the consumer is up: what follows is the hand-over alone
    start = time.perf_counter()
    produce(queue, count)
    end = done.get(timeout=120)
    proc.join(30)
    return end - start


def queue_bytes(count):
    def produce(queue, n):
        payload = b"x" * PACKET
        for _ in range(n):
            queue.put(bytes(payload))
    return _hand_over(_consume_bytes, (), produce, count)


def queue_shared_fragment(count):
    name = "bench-py-%d" % os.getpid()
    with pyfrag.SharedArena(name, create=True, size=64 << 20) as arena:
        def produce(queue, n):
            for _ in range(n):
                frag = arena.alloc(PACKET)
                frag[0] = 1
                queue.put(frag.send())
        return _hand_over(_consume_shared, (name,), produce, count)


def queue_shm_offsets(count):
    slots = 4096
    shm = shared_memory.SharedMemory(create=True, size=PACKET * slots)
    try:
        def produce(queue, n):
            buf = shm.buf
            for i in range(n):
                offset = (i % slots) * PACKET
                buf[offset] = 1
                queue.put((offset, PACKET))
        return _hand_over(_consume_shm, (shm.name,), produce, count)
    finally:
        shm.close()
        shm.unlink()


def _consume_ring(name, done, count, bulk):
    with pyfrag.SharedArena(name) as arena:
        ring = pyfrag.SharedRing(arena, "bench")
        done.put("ready")
        got = 0
        while got < count:
            frags = ring.get_many(BURST)
            got += len(frags)
            if bulk:
                arena.free_many(frags)
            else:
                for frag in frags:
                    frag.free()
        done.put(time.perf_counter())


def _ring(count, bulk: bool) -> float:
    name = "bench-ring-%d" % os.getpid()
    with pyfrag.SharedArena(name, create=True, size=64 << 20) as arena:
        ring = pyfrag.SharedRing(arena, "bench", create=True, capacity=1024)
        ctx = multiprocessing.get_context("fork")
        done = ctx.Queue()
        proc = ctx.Process(target=_consume_ring, args=(name, done, count, bulk))
        proc.start()
        done.get(timeout=120)
        start = time.perf_counter()
        if bulk:
            for _ in range(count // BURST):
                frags = arena.alloc_many(BURST, PACKET)
                for frag in frags:
                    frag[0] = 1
                ring.put_many(frags)
            rest = count % BURST
            if rest:
                ring.put_many(arena.alloc_many(rest, PACKET))
        else:
            for _ in range(count):
                frag = arena.alloc(PACKET)
                frag[0] = 1
                ring.put(frag)
        end = done.get(timeout=120)
        proc.join(30)
        return end - start


def ring_single(count):
    return _ring(count, False)


def ring_bulk(count):
    return _ring(count, True)


# row, case, function, baseline case of the row, packets per run relative to COUNT
CASES = [
    ("get a 1500 B buffer and give it back", "pyfrag alloc+free", frag_alloc_free,
     "bytearray(1500)", 1.0),
    ("get a 1500 B buffer and give it back", "pyfrag alloc_many+free_many (32)", frag_bulk,
     "bytearray(1500)", 1.0),
    ("get a 1500 B buffer and give it back", "bytearray(1500)", bytearray_new,
     "bytearray(1500)", 1.0),
    ("get a 1500 B buffer and give it back", "slice of a preallocated bytearray",
     bytearray_slices, "bytearray(1500)", 1.0),
    ("the same in a with block, one byte written", "pyfrag with alloc", frag_with_write,
     "bytearray + write", 1.0),
    ("the same in a with block, one byte written", "bytearray + write", bytearray_with_write,
     "bytearray + write", 1.0),
    ("receive one datagram (socketpair, 1500 B)", "pyfrag recv_into(view) + free",
     frag_recv_view, "recv_into(bytearray)", 0.5),
    ("receive one datagram (socketpair, 1500 B)", "pyfrag recv_burst(n=1) + free_many",
     frag_recv_burst_1, "recv_into(bytearray)", 0.5),
    ("receive one datagram (socketpair, 1500 B)", "recv_into(bytearray)", bytearray_recv_1,
     "recv_into(bytearray)", 0.5),
    ("receive 32 datagrams", BURST_CASE, frag_recv_burst_32,
     "32 recv_into(bytearray)", 1.0),
    ("receive 32 datagrams", "32 recv_into(bytearray)", bytearray_recv_32,
     "32 recv_into(bytearray)", 1.0),
    ("receive 32 datagrams", "32 recv_into(slices of a preallocated bytearray)",
     slices_recv_32, "32 recv_into(bytearray)", 1.0),
    ("receive 32 datagrams", KERNEL_FLOOR, kernel_recvmmsg_32, "32 recv_into(bytearray)", 1.0),
    ("hand a 1500 B packet to another process", "SharedArena fragment send() via Queue",
     queue_shared_fragment, "bytes via Queue", 0.25),
    ("hand a 1500 B packet to another process", "SharedRing put/get_many + free",
     ring_single, "bytes via Queue", 0.25),
    ("hand a 1500 B packet to another process",
     "SharedRing alloc_many/put_many/get_many/free_many (32)", ring_bulk, "bytes via Queue", 1.0),
    ("hand a 1500 B packet to another process", "bytes via Queue", queue_bytes,
     "bytes via Queue", 0.25),
    ("hand a 1500 B packet to another process", "shared_memory offsets via Queue",
     queue_shm_offsets, "bytes via Queue", 0.25),
]


def run(runs: int = 5, scale: float = 1.0, progress=None) -> dict:
    """Every case `runs` times, interleaved; the report."""
    samples: dict = {case: [] for _, case, _, _, _ in CASES}
    total, done = runs * len(CASES), 0
    for _ in range(runs):
        for row, case, func, _, share in CASES:
            if progress is not None:
                progress(done, total, "python", case)
            count = max(BURST, int(COUNT * scale * share))
            samples[case].append(func(count) / count * 1e6)
            done += 1
    results = []
    medians = {case: statistics.median(values) for case, values in samples.items()}
    for row, case, _, baseline, _ in CASES:
        median = medians[case]
        results.append({"row": row, "case": case, "baseline": baseline,
                        "median_us_per_packet": median,
                        "packets_per_second": 1e6 / median if median else None,
                        "ratio_to_baseline": median / medians[baseline],
                        "samples_us_per_packet": samples[case]})
    return {"workload": WORKLOAD, "runs": runs, "scale": scale,
            "load_average": os.getloadavg()[0], "results": results,
            "targets": targets(medians)}


# issue 17's targets: (what, case, baseline or None, bound, "us" (<= bound) or "ratio"
# (case / baseline <= bound) or "speedup" (baseline / case >= bound))
TARGETS = [
    ("alloc + free of one fragment <= 1.0 us", "pyfrag alloc+free", None, 1.0, "us"),
    ("the same in a with block <= 1.3 us", "pyfrag with alloc", None, 1.3, "us"),
    ("32 datagrams in one burst <= 0.3x 32 recv_into(bytearray)",
     BURST_CASE, "32 recv_into(bytearray)", 0.3, "ratio"),
    ("ring >= 10x the packets/s of multiprocessing.Queue with bytes",
     "SharedRing alloc_many/put_many/get_many/free_many (32)", "bytes via Queue", 10.0,
     "speedup"),
]


def targets(medians: dict) -> list:
    rows = []
    for what, case, baseline, bound, kind in TARGETS:
        value = medians[case]
        if kind == "ratio":
            value = value / medians[baseline]
        elif kind == "speedup":
            value = medians[baseline] / value
        met = value >= bound if kind == "speedup" else value <= bound
        row = {"target": what, "measured": value, "unit": kind, "met": met}
        if case == BURST_CASE:
            # what no burst receive can beat here: the kernel's work per datagram
            row["floor"] = medians[KERNEL_FLOOR] / medians[baseline]
        rows.append(row)
    return rows


def table(report: dict) -> str:
    """Markdown table: one line per case, under its row."""
    lines = ["| what a Python packet loop does | case | us/packet (median) | packets/s | "
             "x baseline |", "|---|---|---|---|---|"]
    last = None
    for item in report["results"]:
        row = item["row"] if item["row"] != last else ""
        last = item["row"]
        lines.append("| %s | %s | %.3f | %.0f | %.2f (vs %s) |"
                     % (row, item["case"], item["median_us_per_packet"],
                        item["packets_per_second"], item["ratio_to_baseline"], item["baseline"]))
    lines.append("")
    for row in report["targets"]:
        floor = row.get("floor")
        lines.append("target %s: measured %.3g%s, %s%s" % (
            row["target"], row["measured"], {"us": " us", "ratio": "x", "speedup": "x"}[row["unit"]],
            "met" if row["met"] else "MISSED",
            "" if floor is None else " (the kernel's floor in this run: %.3gx)" % floor))
    lines.append("(median of %d runs, load average %.2f at the end)"
                 % (report["runs"], report["load_average"]))
    return "\n".join(lines)
