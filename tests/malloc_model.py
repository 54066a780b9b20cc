# SPDX-License-Identifier: GPL-2.0-only
"""The malloc front's model check, run inside a process under LD_PRELOAD
(tests/test_malloc_model.py starts it on each PYFRAG_ROUTE).

A hypothesis state machine drives malloc, calloc, realloc, memalign and free
(libc's names, which the preload makes pyfrag's) on the test's thread and on
a worker thread, so blocks are freed and reallocated across threads, and
compares against a model of live blocks and of the pages they pin:

- every block is aligned as asked, at least as large as asked
  (malloc_usable_size), never overlaps another live block, and keeps the bytes
  written into it (first, middle and last) until it is freed, through realloc
  moves included; calloc's bytes are zero;
- a live block's page is in use (pf_page_query), and a page_frag page's
  refcount is at least the live blocks the model has on it (a page is pinned
  while any of its blocks lives);
- the library's counters stay consistent: compact live bytes within the slab
  pages, pinned frag bytes and slab pages within what is committed.

Run as a script: exits 0 when the machine found nothing, else prints the
failing sequence (hypothesis' report) and exits 1.
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import os
import sys

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

import pyfrag

libc = ctypes.CDLL(None)  # the global scope: the preloaded library's malloc family
for name, res, args in (("malloc", ctypes.c_void_p, [ctypes.c_size_t]),
                        ("calloc", ctypes.c_void_p, [ctypes.c_size_t, ctypes.c_size_t]),
                        ("realloc", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t]),
                        ("memalign", ctypes.c_void_p, [ctypes.c_size_t, ctypes.c_size_t]),
                        ("free", None, [ctypes.c_void_p]),
                        ("malloc_usable_size", ctypes.c_size_t, [ctypes.c_void_p])):
    getattr(libc, name).restype = res
    getattr(libc, name).argtypes = args

EXAMPLES = int(os.environ.get("PYFRAG_MODEL_EXAMPLES", "150"))
SIZES = st.one_of(st.integers(0, 128), st.integers(129, 4096), st.integers(4097, 40000),
                  st.sampled_from([32768, 32769, 65536, 200000, 2 << 20, (2 << 20) + 1]))
_worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model-worker")


def on(thread: str, func, *args):
    return func(*args) if thread == "main" else _worker.submit(func, *args).result()


def marks(size: int) -> list[int]:
    return sorted({0, size // 2, size - 1}) if size else []


class Block:
    def __init__(self, address: int, size: int, align: int, tag: int):
        self.address, self.size, self.align, self.tag = address, size, align, tag

    def write(self):
        for offset in marks(self.size):
            ctypes.c_ubyte.from_address(self.address + offset).value = (self.tag + offset) & 0xFF

    def check(self, upto: int | None = None):
        size = self.size if upto is None else min(upto, self.size)
        for offset in marks(self.size):
            if offset < size:
                got = ctypes.c_ubyte.from_address(self.address + offset).value
                assert got == (self.tag + offset) & 0xFF, \
                    "block 0x%x lost byte %d (%d != %d)" % (self.address, offset, got,
                                                           (self.tag + offset) & 0xFF)


class MallocMachine(RuleBasedStateMachine):
    blocks = Bundle("blocks")

    def __init__(self):
        super().__init__()
        self.live: dict[int, Block] = {}
        self.tags = 0

    def _made(self, address: int, size: int, align: int) -> Block:
        assert address, "allocation of %d bytes failed" % size
        assert address % align == 0, "0x%x not aligned to %d" % (address, align)
        usable = libc.malloc_usable_size(address)
        assert usable >= size, "usable %d < %d" % (usable, size)
        for other in self.live.values():
            other_end = other.address + max(other.size, 1)
            assert address + max(size, 1) <= other.address or other_end <= address, \
                "0x%x+%d overlaps live 0x%x+%d" % (address, size, other.address, other.size)
        self.tags += 1
        block = Block(address, size, align, self.tags * 37)
        block.write()
        self.live[address] = block
        return block

    @rule(target=blocks, size=SIZES, thread=st.sampled_from(["main", "worker"]))
    def malloc(self, size, thread):
        return self._made(on(thread, libc.malloc, size), size, 16)

    @rule(target=blocks, n=st.integers(1, 64), each=st.integers(1, 300))
    def calloc(self, n, each):
        address = libc.calloc(n, each)
        assert address
        assert ctypes.string_at(address, n * each) == bytes(n * each), "calloc gave dirty bytes"
        return self._made(address, n * each, 16)

    @rule(target=blocks, align=st.sampled_from([32, 64, 256, 4096]), size=st.integers(1, 9000))
    def memalign(self, align, size):
        return self._made(libc.memalign(align, size), size, align)

    @rule(block=consumes(blocks), thread=st.sampled_from(["main", "worker"]))
    def free(self, block, thread):
        block.check()
        del self.live[block.address]
        on(thread, libc.free, block.address)

    @rule(target=blocks, block=consumes(blocks), size=SIZES,
          thread=st.sampled_from(["main", "worker"]))
    def realloc(self, block, size, thread):
        block.check()
        del self.live[block.address]
        address = on(thread, libc.realloc, block.address, size)
        if size == 0:  # glibc's rule: freed, NULL
            assert not address
            return self._made(libc.malloc(1), 1, 16)
        moved = Block(address, block.size, 16, block.tag)
        moved.check(upto=size)
        return self._made(address, size, 16)

    @invariant()
    def pages_pin_what_lives(self):
        on_page: dict[int, int] = {}
        for block in self.live.values():
            page = pyfrag.page_info(block.address)
            assert page.in_use, "live block 0x%x on a page not in use" % block.address
            on_page[page.head] = on_page.get(page.head, 0) + 1
            assert page.refcount >= 1
        for head, count in on_page.items():
            page = pyfrag.page_info(head)
            # a frag page's refcount is its cache's bias plus every live fragment
            if page.refcount > 1:
                assert page.refcount >= count, "page 0x%x: refcount %d < %d live" % (
                    head, page.refcount, count)

    @invariant()
    def counters_consistent(self):
        s = pyfrag.stats()
        assert s.compact_live_bytes <= s.compact_page_bytes
        assert s.compact_page_bytes + s.frag_pinned_bytes <= s.committed_bytes
        assert s.compact_abandoned_pages <= s.compact_pages

    def teardown(self):
        for block in list(self.live.values()):
            block.check()
            libc.free(block.address)
        self.live.clear()


def main() -> int:
    assert libc.malloc(100) and pyfrag.stats().malloc_small + pyfrag.stats().malloc_compact > 0, \
        "the malloc family is not pyfrag's here (no LD_PRELOAD?)"
    test = MallocMachine.TestCase
    test.settings = settings(max_examples=EXAMPLES, stateful_step_count=40, deadline=None,
                             suppress_health_check=list(HealthCheck))
    try:
        test("runTest").runTest()
    except Exception as error:  # hypothesis has printed the falsifying sequence
        print("model check failed: %s" % error, file=sys.stderr)
        return 1
    print("model ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
