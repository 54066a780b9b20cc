# SPDX-License-Identifier: GPL-2.0-only
"""Model checking: random operation sequences against the real library and the
reference model (pagefrag_model.py), compared after every step.

The state machine owns two explicit caches (made on the test's thread) and a
worker thread for frees from "another thread". Rules: alloc and alloc_align
of random sizes and alignments, frees in any order by every route (owner
cache with or without the size, interior pointers through pf_free, the
worker thread, another cache), drains, cache re-creation, option changes
(PYFRAG_RETAIN, PYFRAG_PCP_HIGH, PYFRAG_HUGEPAGES and PYFRAG_LIMIT down to
"no new chunk", so refills fail and take reserve pages), trims and the worker's
pf_thread_flush (which apply a thread's batched frees), and misuse
the library must refuse (bad sizes and alignments, double frees it can see).

After every step: each cache's page, offset and bias (pf_cache_query) and
each live page's refcount, size and reserve flag (pf_page_query) equal the
model's; live fragments never overlap and keep their first and last bytes;
every address is the one the model predicts, aligned as asked; the counters
moved exactly as the model says. At the end everything is freed, drained,
flushed and trimmed, and pages_in_use and the reserve are back where they
started.

PYFRAG_MODEL_EXAMPLES sets the number of examples (default 500).
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import os
import sys

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import pyfrag
from pagefrag_model import COUNTERS, FRAG_PAGE, ModelMismatch, PageFragModel
from pyfrag._native import loader, signatures
from pyfrag.options import get_option

NCACHES = 2
EXAMPLES = int(os.environ.get("PYFRAG_MODEL_EXAMPLES", "500"))
MiB = 1 << 20

_worker = None


def worker() -> concurrent.futures.ThreadPoolExecutor:
    """One thread for the whole session: "another thread" for frees."""
    global _worker
    if _worker is None:
        _worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model-free")
    return _worker


def on_worker(func, *args):
    return worker().submit(func, *args).result()


sizes = st.one_of(st.integers(1, 256), st.integers(257, 4096), st.integers(4097, FRAG_PAGE),
                  st.sampled_from([1, 4096, 4097, 16384, FRAG_PAGE]))
aligns = st.one_of(st.none(), st.sampled_from([1 << k for k in range(16)]))
FREE_ROUTES = ("owner_sized", "owner_nosize", "pf_free", "pf_free_interior", "worker_pf_free",
               "worker_cache_free", "other_cache")


def fill_byte(addr: int, size: int) -> int:
    return (addr ^ (addr >> 12) ^ size) & 0xFF


class PageFragMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.lib = loader.lib()
        self.lib.pf_init()
        self.saved = {name: get_option(name) for name in
                      ("PYFRAG_RETAIN", "PYFRAG_PCP_HIGH", "PYFRAG_LIMIT", "PYFRAG_HUGEPAGES")}
        # start each example from as fresh an allocator as the process allows (empty
        # chunks and page lists returned), so a failing example replays the same way
        pyfrag.set_option("PYFRAG_RETAIN", 0)
        on_worker(self.lib.pf_thread_flush)
        self.lib.pf_thread_flush()
        self.lib.pf_trim()
        pyfrag.set_option("PYFRAG_RETAIN", self.saved["PYFRAG_RETAIN"])
        self.base = pyfrag.stats()
        self.model = PageFragModel(NCACHES)
        self.caches = [self.lib.pf_cache_create() for _ in range(NCACHES)]
        self.freed: list[int] = []  # addresses of fragments freed lately (for double frees)
        self.limited = False  # a PYFRAG_LIMIT is set

    # ---- helpers ---------------------------------------------------------------------

    def cache_info(self, ci: int):
        raw = signatures.CacheInfo()
        self.lib.pf_cache_query(self.caches[ci], ctypes.byref(raw))
        return raw

    def expect_refused(self, call, *args, errno_=22):
        with pytest.raises((ValueError, MemoryError)) as caught:
            call(*args)
        assert caught.value.errno == errno_, caught.value

    # ---- rules: allocation ----------------------------------------------------------------

    @rule(ci=st.integers(0, NCACHES - 1), size=sizes, align=aligns)
    def alloc(self, ci, size, align):
        self.alloc_one(ci, size, align)

    @precondition(lambda self: self.limited)
    @rule(ci=st.integers(0, NCACHES - 1), small=st.integers(1, 4096))
    def exhaust(self, ci, small):
        """Under a limit: 32 KiB fragments until MemoryError, then small ones (order-0
        fallbacks, then reserve pages) until MemoryError again."""
        for size in (FRAG_PAGE, small):
            for _ in range(200):
                if self.alloc_one(ci, size, None) is None:
                    break

    def alloc_one(self, ci, size, align):
        handle = self.caches[ci]
        try:
            if align is None:
                got = self.lib.pf_cache_alloc(handle, size)
            else:
                got = self.lib.pf_cache_alloc_align(handle, size, align)
        except MemoryError as exc:
            assert exc.errno == 12 and "ENOMEM" in str(exc)
            got = None
        info = self.cache_info(ci)
        expected = self.model.alloc(ci, size, align or 1, got,
                                    (info.page, info.page_size, bool(info.pfmemalloc)))
        if got is not None:
            assert got % (align or 1) == 0, "0x%x not aligned to %d" % (got, align)
            assert expected == got
            ctypes.memset(got, fill_byte(got, size), size)
        return got

    @rule(ci=st.integers(0, NCACHES - 1),
          size=st.sampled_from([0, FRAG_PAGE + 1, 1 << 32, (1 << 32) + 1, 2**64 - 1]),
          align=st.sampled_from([1, 0, 3, 48, 65536, 1 << 32, (1 << 32) | 8, 2**64 - 1]))
    def alloc_refused(self, ci, size, align):
        """A bad size or alignment: ValueError, nothing changes."""
        if size == 0 or align == 0 or align & (align - 1) or align > FRAG_PAGE:
            code = 22  # EINVAL
        else:
            code = 7  # E2BIG
        if size == 0:
            code = 22
        self.expect_refused(self.lib.pf_cache_alloc_align, self.caches[ci], size, align,
                            errno_=code)
        self.model.refuse_alloc()

    # ---- rules: freeing ------------------------------------------------------------------

    # No preconditions on what the library returned (whether an alloc failed depends on
    # the process's memory, not only on the drawn steps): a rule with nothing to do returns.
    @rule(pick=st.integers(0, 2**16), route=st.sampled_from(FREE_ROUTES), inner=st.integers(0, 2**16))
    def free(self, pick, route, inner):
        addrs = sorted(self.model.frags)
        if not addrs:
            return
        self.free_one(addrs[pick % len(addrs)], route, inner)

    def free_one(self, addr, route, inner):
        frag = self.model.frags[addr]
        assert ctypes.string_at(addr, frag.size) == bytes([fill_byte(addr, frag.size)]) * frag.size
        owner = self.caches[frag.cache]
        other = self.caches[(frag.cache + 1) % NCACHES]
        if route == "owner_sized":
            self.lib.pf_cache_free(owner, addr, frag.size)
            self.model.free(addr, "local", frag.cache, frag.size)
        elif route == "owner_nosize":
            self.lib.pf_cache_free(owner, addr, 0)
            self.model.free(addr, "local", frag.cache, 0)
        elif route == "pf_free":
            self.lib.pf_free(addr)
            self.model.free(addr, "atomic")
        elif route == "pf_free_interior":
            self.lib.pf_free(addr + inner % frag.size)
            self.model.free(addr, "atomic")
        elif route == "worker_pf_free":
            on_worker(self.lib.pf_free, addr + inner % frag.size)
            self.model.free(addr, "atomic", thread="worker")
        elif route == "worker_cache_free":
            on_worker(self.lib.pf_cache_free, owner, addr, frag.size)
            self.model.free(addr, "atomic", thread="worker")
        else:  # through another cache, on the owner thread: not that cache's page
            self.lib.pf_cache_free(other, addr, frag.size)
            self.model.free(addr, "local", (frag.cache + 1) % NCACHES, frag.size)
        self.freed = (self.freed + [addr])[-8:]

    @rule(ci=st.integers(0, NCACHES - 1),
          burst=st.lists(st.tuples(sizes, aligns, st.sampled_from(FREE_ROUTES)), min_size=1,
                         max_size=12),
          order=st.randoms(use_true_random=False))
    def burst(self, ci, burst, order):
        """Run to completion: allocate a burst, free it in any order by any route."""
        got = [(self.alloc_one(ci, size, align), route) for size, align, route in burst]
        order.shuffle(got)
        for addr, route in got:
            if addr is not None:
                self.free_one(addr, route, 0)

    @rule(pick=st.integers(0, 7), ci=st.one_of(st.none(), st.integers(0, NCACHES - 1)))
    def double_free(self, pick, ci):
        """Free again an address freed lately, where the library can tell it is not live."""
        if not self.freed:
            return
        addr = self.freed[pick % len(self.freed)]
        if addr in self.model.frags or not self.model.double_free_refused(addr, ci):
            return  # handed out again, or undetectable: not something to try
        if ci is None:
            self.expect_refused(self.lib.pf_free, addr)
        else:
            self.expect_refused(self.lib.pf_cache_free, self.caches[ci], addr, 1)
        self.model.refused_free()

    # ---- rules: caches, options, memory ---------------------------------------------------

    @rule(ci=st.integers(0, NCACHES - 1))
    def drain(self, ci):
        self.lib.pf_cache_drain(self.caches[ci])
        self.model.drain(ci)

    @rule(ci=st.integers(0, NCACHES - 1))
    def recreate(self, ci):
        """Destroy a cache (its fragments stay valid) and make a new one in its place."""
        self.lib.pf_cache_destroy(self.caches[ci])
        self.model.drain(ci)
        self.caches[ci] = self.lib.pf_cache_create()

    @rule(name=st.sampled_from(["PYFRAG_RETAIN", "PYFRAG_PCP_HIGH", "PYFRAG_HUGEPAGES"]),
          value=st.integers(0, 64))
    def set_option(self, name, value):
        if name == "PYFRAG_RETAIN":
            text = str(value % 4)
        elif name == "PYFRAG_PCP_HIGH":
            text = str([0, 1, 4, 16, 64][value % 5])
        else:
            text = ["auto", "thp", "off"][value % 3]
        pyfrag.set_option(name, text)

    @rule(extra_chunks=st.sampled_from([None, 0, 0, 1, 2]))
    def set_limit(self, extra_chunks):
        """No cap, or a cap at what is committed now plus 0..2 chunks."""
        self.limited = extra_chunks is not None
        if extra_chunks is None:
            pyfrag.set_option("PYFRAG_LIMIT", 0)
        else:
            committed = pyfrag.stats().committed_bytes
            pyfrag.set_option("PYFRAG_LIMIT", max(committed + extra_chunks * 2 * MiB, 2 * MiB))

    @rule()
    def trim(self):
        self.lib.pf_trim()
        self.model.flush("main")

    @rule()
    def worker_flush(self):
        on_worker(self.lib.pf_thread_flush)
        self.model.flush("worker")

    # ---- invariants ----------------------------------------------------------------------------

    @invariant()
    def caches_match(self):
        for ci, c in enumerate(self.model.caches):
            info = self.cache_info(ci)
            want = ((c.page.va, c.page.size, c.offset, c.bias, c.page.reserve) if c.page
                    else (0, 0, 0, 0, False))
            got = (info.page, info.page_size, info.offset, info.bias, bool(info.pfmemalloc))
            if got != want:
                raise ModelMismatch("cache %d (page, size, offset, bias, pfmemalloc): library %r, "
                                    "model %r" % (ci, got, want))

    @invariant()
    def pages_match(self):
        for va, page in self.model.pages.items():
            info = pyfrag.page_info(va)
            got = (info.head, info.size, info.refcount, info.in_use, info.reserve)
            want = (va, page.size, page.refcount, True, page.reserve)
            if got != want:
                raise ModelMismatch("page 0x%x (head, size, refcount, in_use, reserve): library %r, "
                                    "model %r" % (va, got, want))

    @invariant()
    def fragments_hold(self):
        self.model.check_self()
        for addr, frag in self.model.frags.items():
            fill = fill_byte(addr, frag.size)
            assert ctypes.string_at(addr, 1)[0] == fill
            assert ctypes.string_at(addr + frag.size - 1, 1)[0] == fill

    @invariant()
    def counters_match(self):
        now = pyfrag.stats()
        got = {name: getattr(now, name) - getattr(self.base, name) for name in COUNTERS}
        if got != self.model.counts:
            diff = {k: (got[k], self.model.counts[k]) for k in COUNTERS
                    if got[k] != self.model.counts[k]}
            raise ModelMismatch("counters (library, model): %r" % diff)

    # ---- the end: everything comes back ----------------------------------------------------------

    def teardown(self):
        for name, count in self.model.counts.items():  # what the example reached (--hypothesis-show-statistics)
            if count:
                event("reached: " + name)
        try:
            for i, addr in enumerate(sorted(self.model.frags)):
                frag = self.model.frags[addr]
                if i % 3 == 0:
                    on_worker(self.lib.pf_free, addr)
                elif i % 3 == 1:
                    self.lib.pf_cache_free(self.caches[frag.cache], addr, frag.size)
                else:
                    self.lib.pf_free(addr)
            for handle in self.caches:
                self.lib.pf_cache_destroy(handle)
            for name, value in self.saved.items():
                pyfrag.set_option(name, ["auto", "hugetlb", "thp", "off"][value]
                                  if name == "PYFRAG_HUGEPAGES" else value)
            on_worker(self.lib.pf_thread_flush)  # its page lists back: nothing racing the check
            self.lib.pf_thread_flush()
            self.lib.pf_trim()
            if sys.exc_info()[0] is not None:
                return  # a step failed: the model no longer knows every page; that report stands
            end = pyfrag.stats()
            assert end.pages_in_use == self.base.pages_in_use, (end, self.base)
            assert end.reserve_free_pages == self.base.reserve_free_pages, (end, self.base)
            assert end.allocs - end.frees == self.base.allocs - self.base.frees
        finally:
            pyfrag.set_option("PYFRAG_LIMIT", self.saved["PYFRAG_LIMIT"])


PageFragMachine.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestPageFragModel = PageFragMachine.TestCase
