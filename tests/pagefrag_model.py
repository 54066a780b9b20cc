# SPDX-License-Identifier: GPL-2.0-only
"""A pure-Python reference model of page_frag caches and their pages' refcounts.

Contract:
- `PageFragModel(ncaches)` holds what pyfrag's caches and frag pages should
  look like: per cache the current page, offset and bias; per page its size,
  refcount and reserve flag; every live fragment; and the counters the
  library should have moved. It imports nothing from pyfrag.
- The model is a checker. The caller makes the real call first and hands
  the outcome in: `alloc()` gets the address the library returned (None for
  MemoryError) and, because only the page allocator knows which page a
  refill gets, the cache's page afterwards (va, size, from the reserve).
  Everything else is predicted: whether the fast path serves the request,
  the exact address, recycle in place versus abandon, when a page goes back,
  every refcount and bias, which frees are refused. A disagreement raises
  `ModelMismatch` saying what differed.
- Semantics followed (native/src/page_frag.c, api.c): bias starts at
  MAX + 1; the fast path aligns the address, not the offset; a used-up page
  whose references all came back is reused in place unless it is a reserve
  page or too small for the request (size or alignment); otherwise it is
  abandoned to its fragments. A free on the owner thread of a fragment of
  the cache's current page goes back to the bias (and rolls the offset back
  if it was the newest one and its size was given); any other free drops one
  page reference. On the owner's current page, a free of an address at or
  past the offset, or when the bias is full, is refused (EINVAL).
- Page references a thread drops are batched (page_frag.c, struct
  pf_put_batch): each thread ("main", "worker") counts its drops on one page
  that no cache holds while more references than its count plus one remain,
  and applies them on its first free of another page, on what may be the
  page's last reference, and on pf_thread_flush / pf_trim. A page's refcount here is the library's: what
  the batches have not applied yet is still in it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

PAGE = 4096
FRAG_PAGE = 32768
BIAS_FULL = FRAG_PAGE + 1

# The counters the model predicts exactly (pyfrag.stats() field names).
COUNTERS = ("allocs", "frees", "bias_frees", "refills", "recycles", "abandons", "order0_fallbacks",
            "reserve_pages", "reserve_returns", "drains", "invalid_frees", "alloc_failures")


class ModelMismatch(AssertionError):
    """The library did something the model says it must not."""


def align_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


@dataclass
class Page:
    va: int
    size: int
    refcount: int
    reserve: bool

    def holds(self, addr: int) -> bool:
        return self.va <= addr < self.va + self.size


@dataclass
class Cache:
    page: Page | None = None
    offset: int = 0
    bias: int = 0

    def forget(self) -> None:
        self.page, self.offset, self.bias = None, 0, 0


@dataclass
class Frag:
    addr: int
    size: int
    page: Page
    cache: int  # index of the cache it came from


@dataclass
class PageFragModel:
    ncaches: int
    caches: list = field(default_factory=list)
    pages: dict = field(default_factory=dict)  # va -> Page, every page with refcount > 0
    frags: dict = field(default_factory=dict)  # addr -> Frag, every live fragment
    counts: dict = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    batches: dict = field(default_factory=dict)  # thread name -> (page, drops not yet applied)

    def __post_init__(self):
        self.caches = [Cache() for _ in range(self.ncaches)]

    # ---- helpers ------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def _put(self, page: Page, n: int = 1) -> None:
        """Drop n references; at zero the page goes back to the page allocator."""
        page.refcount -= n
        if page.refcount < 0:
            raise ModelMismatch("model bug: page 0x%x refcount %d" % (page.va, page.refcount))
        if page.refcount == 0:
            del self.pages[page.va]
            if page.reserve:
                self._count("reserve_returns")

    def _put_batched(self, thread: str, page: Page) -> None:
        batched, count = self.batches.get(thread, (None, 0))
        if batched is page and count + 1 < page.refcount:
            self.batches[thread] = (page, count + 1)
            return
        self.flush(thread)  # any free outside the batch's page applies it first
        if batched is not page and page.refcount > 1 and not any(c.page is page for c in self.caches):
            self.batches[thread] = (page, 1)
            return
        self._put(page)

    def flush(self, thread: str) -> None:
        """pf_thread_flush / pf_trim on `thread`: its batch is applied."""
        page, count = self.batches.pop(thread, (None, 0))
        if count:
            self._put(page, count)

    def live_page_at(self, addr: int) -> Page | None:
        for page in self.pages.values():
            if page.holds(addr):
                return page
        return None

    # ---- operations -----------------------------------------------------------------

    def alloc(self, ci: int, size: int, align: int, got: int | None, info) -> int | None:
        """Check one pf_cache_alloc_align(cache ci, size, align) that returned `got`
        (None: MemoryError); `info` is the cache's (page, page_size, pfmemalloc) after it.
        Returns the address the model expects (== got)."""
        c = self.caches[ci]
        need = max(size, align)
        if c.page is not None:
            start = align_up(c.page.va + c.offset, align)
            if start - c.page.va + size <= c.page.size:  # fast path
                self._hand_out(ci, c, start, size, got)
                return start
            page = c.page
            page.refcount -= c.bias
            if page.refcount == 0 and not page.reserve and need <= page.size:
                page.refcount, c.bias, c.offset = BIAS_FULL, BIAS_FULL, 0
                self._count("recycles")
                self._hand_out(ci, c, page.va, size, got)
                return page.va
            if page.refcount == 0:
                page.refcount = 1  # _put takes the last one
                self._put(page)
            else:
                self._count("abandons")
            c.forget()
        if got is None:
            self._count("alloc_failures")
            if info[0] != 0:
                raise ModelMismatch("failed alloc left cache %d with page 0x%x" % (ci, info[0]))
            return None
        self._refill(ci, c, need, info)
        self._hand_out(ci, c, c.page.va, size, got)
        return c.page.va

    def _refill(self, ci: int, c: Cache, need: int, info) -> None:
        va, size, reserve = info
        if size not in (PAGE, FRAG_PAGE):
            raise ModelMismatch("refill of cache %d got a %d-byte page" % (ci, size))
        if need > PAGE and size != FRAG_PAGE:
            raise ModelMismatch("a request needing %d bytes (size or alignment) got a %d-byte page"
                                % (need, size))
        if va % size:
            raise ModelMismatch("page 0x%x is not aligned to its size %d" % (va, size))
        if reserve and size != PAGE:
            raise ModelMismatch("a reserve page of %d bytes" % size)
        for other in self.pages.values():
            if other.va < va + size and va < other.va + other.size:
                raise ModelMismatch("refill handed out 0x%x+%d, which overlaps live page 0x%x+%d"
                                    % (va, size, other.va, other.size))
        page = Page(va, size, BIAS_FULL, reserve)
        self.pages[va] = page
        c.page, c.offset, c.bias = page, 0, BIAS_FULL
        self._count("refills")
        if size == PAGE:
            self._count("order0_fallbacks")
        if reserve:
            self._count("reserve_pages")

    def _hand_out(self, ci: int, c: Cache, addr: int, size: int, got: int | None) -> None:
        if got != addr:
            raise ModelMismatch("cache %d: expected a fragment at 0x%x, the library gave %s"
                                % (ci, addr, "MemoryError" if got is None else "0x%x" % got))
        c.offset = addr - c.page.va + size
        c.bias -= 1
        self._count("allocs")
        self.frags[addr] = Frag(addr, size, c.page, ci)

    def refuse_alloc(self) -> None:
        """A bad size or alignment: nothing changes."""

    def free(self, addr: int, how: str, cache: int | None = None, size: int = 0,
             thread: str = "main") -> Frag:
        """A successful free of live fragment `addr` on `thread`. how: "local"
        (pf_cache_free on the owner thread through cache `cache`, giving `size`),
        "atomic" (pf_free on any thread whose default cache does not hold the page, or
        pf_cache_free from a thread that is not the cache's owner)."""
        frag = self.frags.pop(addr)
        self._count("frees")
        c = self.caches[cache] if cache is not None else None
        if how == "local" and c is not None and c.page is frag.page:
            c.bias += 1
            self._count("bias_frees")
            if size and frag.addr + size == c.page.va + c.offset:
                c.offset = frag.addr - c.page.va
        else:
            self._put_batched(thread, frag.page)
        return frag

    def double_free_refused(self, addr: int, cache: int | None) -> bool:
        """Would a free of `addr` (no live fragment there) on the owner thread through
        `cache` (None: pf_free, whose default cache holds none of these pages) be
        refused? True when it must be; False when the model cannot say (the library
        would take another fragment's reference: undetectable, not to be tried)."""
        page = self.live_page_at(addr)
        if page is None:
            return True  # not in a page handed out
        if cache is None:
            return False
        c = self.caches[cache]
        return c.page is page and (addr >= page.va + c.offset or c.bias >= BIAS_FULL)

    def refused_free(self) -> None:
        self._count("invalid_frees")

    def drain(self, ci: int) -> None:
        c = self.caches[ci]
        if c.page is None:
            return
        self._put(c.page, c.bias)
        c.forget()
        self._count("drains")

    # ---- invariants -----------------------------------------------------------------

    def check_self(self) -> None:
        """The model's own invariants: live fragments inside live pages, never overlapping;
        page refcount == owning cache's bias + live fragments."""
        spans = sorted((f.addr, f.addr + f.size) for f in self.frags.values())
        for (_, end), (start, _) in zip(spans, spans[1:]):
            if end > start:
                raise ModelMismatch("model bug: fragments overlap at 0x%x" % start)
        outstanding: dict = {}
        for f in self.frags.values():
            if self.pages.get(f.page.va) is not f.page or not f.page.holds(f.addr + f.size - 1):
                raise ModelMismatch("model bug: fragment 0x%x outside its live page" % f.addr)
            outstanding[f.page.va] = outstanding.get(f.page.va, 0) + 1
        biases = {c.page.va: c.bias for c in self.caches if c.page is not None}
        batched: dict = {}
        for page, count in self.batches.values():
            if page is not None:
                batched[page.va] = batched.get(page.va, 0) + count
        for va, page in self.pages.items():
            want = biases.get(va, 0) + outstanding.get(va, 0) + batched.get(va, 0)
            if page.refcount != want:
                raise ModelMismatch("model bug: page 0x%x refcount %d != bias %d + %d fragments "
                                    "+ %d batched drops" % (va, page.refcount, biases.get(va, 0),
                                                            outstanding.get(va, 0),
                                                            batched.get(va, 0)))
