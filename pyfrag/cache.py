# SPDX-License-Identifier: GPL-2.0-only
"""FragCache (one page_frag cache) and Fragment (a zero-copy byte buffer).

Contract:
- A FragCache belongs to the thread that made it: any other thread using it
  gets FragError, and so does any use after close(). A forgotten cache is
  destroyed when collected (weakref.finalize, no reference to the object).
- Bad sizes (not an int, < 1, > 32768) and alignments (not a power of two,
  < 1, > 32768) raise ValueError before C is called; exhaustion raises
  MemoryError.
- A Fragment may outlive its cache and be freed from any thread; free()
  takes the cache's fast path only on the owner thread while the cache is
  open, and pf_free() otherwise. A second free() raises FragError.
- Memory safety rule: Python code can reach a fragment's bytes only while it
  is allocated. free() releases every memoryview that frag.view() handed out;
  if anything still holds the bytes (an export of such a view, a slice of it,
  its `.obj`, or on Python >= 3.12 a live `memoryview(frag)`), free() raises
  FragError and the fragment stays allocated: drop or release the holder and
  call free() again. Fragments never freed are leaked, like malloc: their
  address may have been handed to C, so nothing frees them behind your back.
- Neither a FragCache nor a Fragment can be copied or pickled (TypeError): a
  copy would be a second owner of the same C object, and a deep copy of a
  Fragment a private buffer whose free() would free the real fragment again.
"""
from __future__ import annotations

import ctypes
import operator
import sys
import threading
import weakref
from dataclasses import dataclass

from . import _lib
from ._lib import FragError

FRAG_MAX = 32768  # PF_FRAG_PAGE_SIZE: the largest fragment and alignment
PAGE_IN_USE = 1
PAGE_RESERVE = 2

_free_lock = threading.Lock()


def _as_int(value, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError("%s must be an int, not bool" % what)
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError("%s must be an int, not %s" % (what, type(value).__name__)) from None


def check_size(size) -> int:
    size = _as_int(size, "fragment size")
    if not 1 <= size <= FRAG_MAX:
        raise ValueError("fragment size must be 1..%d bytes, not %d" % (FRAG_MAX, size))
    return size


def check_align(align) -> int:
    align = _as_int(align, "alignment")
    if not 1 <= align <= FRAG_MAX or align & (align - 1):
        raise ValueError("alignment must be a power of two in 1..%d, not %d" % (FRAG_MAX, align))
    return align


@dataclass(frozen=True)
class CacheInfo:
    """pf_cache_query: the cache's current frag page."""
    page: int          # address of the current frag page, 0 if none
    page_size: int     # its size in bytes (32768, or 4096 after a fallback)
    offset: int        # bytes used
    bias: int          # page references the cache still owns
    pfmemalloc: bool   # the page came from the emergency reserve


@dataclass(frozen=True)
class PageInfo:
    """pf_page_query: the page-allocator block holding an address."""
    head: int
    size: int
    order: int
    refcount: int
    in_use: bool
    reserve: bool


def _destroy(destroy, handle: int) -> None:
    destroy(handle)


def _not_copyable(self, *args):
    raise TypeError("a %s owns native memory and cannot be copied or pickled (bytes(frag) "
                    "copies a fragment's contents)" % type(self).__name__)


class FragCache:
    """One page_frag cache, owned by the thread that created it."""

    def __init__(self):
        cdll = _lib.lib()
        handle = cdll.pf_cache_create()
        self._handle = handle
        self._owner = threading.get_ident()
        self._finalizer = weakref.finalize(self, _destroy, cdll.pf_cache_destroy, handle)

    # -- state --
    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    @property
    def owner_thread(self) -> int:
        """threading.get_ident() of the thread the cache belongs to."""
        return self._owner

    def _usable_here(self) -> bool:
        return self._finalizer.alive and threading.get_ident() == self._owner

    def _checked_handle(self) -> int:
        if not self._finalizer.alive:
            raise FragError("FragCache is closed")
        if threading.get_ident() != self._owner:
            raise FragError("FragCache belongs to thread %d, used from thread %d; a cache is used "
                            "only by its thread (fragments may be freed anywhere)"
                            % (self._owner, threading.get_ident()))
        return self._handle

    @property
    def _as_parameter_(self) -> int:
        # lets a FragCache be passed to the C functions directly (ctypes wraps a
        # FragError raised here in ctypes.ArgumentError; pyfrag passes handles)
        return self._checked_handle()

    # -- operations --
    def alloc(self, size, align=None) -> Fragment:
        """A fragment of `size` bytes (1..32768), aligned to `align` if given."""
        size = check_size(size)
        align = None if align is None else check_align(align)
        handle = self._checked_handle()
        cdll = _lib.lib()
        if align is None:
            address = cdll.pf_cache_alloc(handle, size)
        else:
            address = cdll.pf_cache_alloc_align(handle, size, align)
        return Fragment(self, address, size)

    def drain(self) -> None:
        """Give the current frag page back (its fragments keep it alive)."""
        _lib.lib().pf_cache_drain(self._checked_handle())

    def info(self) -> CacheInfo:
        raw = _lib.CacheInfo()
        _lib.lib().pf_cache_query(self._checked_handle(), ctypes.byref(raw))
        return CacheInfo(raw.page, raw.page_size, raw.offset, raw.bias, bool(raw.pfmemalloc))

    def close(self) -> None:
        """Destroy the cache; outstanding fragments stay valid. Closing twice is fine."""
        if self._finalizer.alive:
            self._checked_handle()
            self._finalizer()

    def __enter__(self) -> FragCache:
        self._checked_handle()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "handle=0x%x" % self._handle
        return "<FragCache %s owner=%d>" % (state, self._owner)

    __copy__ = __deepcopy__ = __reduce_ex__ = __reduce__ = _not_copyable


def page_info(address: int) -> PageInfo:
    """What the page allocator knows about the block holding `address`."""
    raw = _lib.PageInfo()
    _lib.lib().pf_page_query(address, ctypes.byref(raw))
    return PageInfo(raw.head, raw.size, raw.order, raw.refcount,
                    bool(raw.flags & PAGE_IN_USE), bool(raw.flags & PAGE_RESERVE))


class Fragment:
    """`size` bytes at `address`, from `cache`; see the module docstring for the rules."""

    __slots__ = ("_cache", "_address", "_size", "_base", "_views", "_exports", "__weakref__")

    def __init__(self, cache: FragCache, address: int, size: int):
        self._cache = cache
        self._address = address
        self._size = size
        self._base = (ctypes.c_char * size).from_address(address)  # None once freed
        self._views: list = []  # weakrefs to the memoryviews view() handed out
        self._exports = 0  # live memoryview(frag) exports (Python >= 3.12)

    @property
    def address(self) -> int:
        return self._address

    @property
    def size(self) -> int:
        return self._size

    @property
    def cache(self) -> FragCache:
        return self._cache

    @property
    def freed(self) -> bool:
        return self._base is None

    def _checked_base(self):
        base = self._base
        if base is None:
            raise FragError("fragment at 0x%x was freed" % self._address)
        return base

    def _new_view(self) -> memoryview:
        with memoryview(self._checked_base()) as raw:
            return raw.cast("B")

    # -- buffer access --
    def view(self) -> memoryview:
        """A writable zero-copy memoryview of the bytes; free() releases it."""
        view = self._new_view()
        self._views = [ref for ref in self._views if ref() is not None]
        self._views.append(weakref.ref(view))
        return view

    if sys.version_info >= (3, 12):
        def __buffer__(self, flags: int) -> memoryview:
            view = self._new_view()
            self._exports += 1
            return view

        def __release_buffer__(self, view: memoryview) -> None:
            self._exports -= 1
            view.release()

    def __len__(self) -> int:
        return self._size

    def __bytes__(self) -> bytes:
        self._checked_base()
        return ctypes.string_at(self._address, self._size)

    def __getitem__(self, key):
        with self._new_view() as view:
            item = view[key]
            if isinstance(item, memoryview):
                with item:
                    return item.tobytes()
            return item

    def __setitem__(self, key, value) -> None:
        with self._new_view() as view:
            view[key] = value

    # -- freeing --
    def _release_views(self, verb: str) -> None:
        views, self._views = self._views, []
        for ref in views:
            view = ref()
            if view is None:
                continue
            try:
                view.release()
            except BufferError:
                self._views.append(ref)
                raise FragError("cannot %s fragment at 0x%x: a buffer obtained from its view() "
                                "is still held (release it first)"
                                % (verb, self._address)) from None

    def _check_exports(self, verb: str) -> None:
        if self._exports:
            raise FragError("cannot %s fragment at 0x%x: %d memoryview(frag) still held; release "
                            "them (mv.release() or `with memoryview(frag) as mv:`) first"
                            % (verb, self._address, self._exports))
        self._release_views(verb)

    def _give_up(self, verb: str, release) -> None:
        """End Python's access to the bytes, then call release(); undone if either fails."""
        with _free_lock:
            # Claim first: from here on no thread can make a new view of the bytes,
            # and one caught making a view holds a reference the check below sees.
            base, self._base = self._checked_base(), None
            try:
                self._check_exports(verb)
                # Every Python path to the bytes holds a reference to base (a slice of
                # a view keeps the view's buffer, and so base, alive): only our local
                # and getrefcount's argument may remain.
                if sys.getrefcount(base) > 2:
                    raise FragError("cannot %s fragment at 0x%x: something derived from its "
                                    "view (a slice, memoryview(view), view.obj) is still alive; "
                                    "drop it first" % (verb, self._address))
                release()
            except BaseException:
                self._base = base
                raise

    def _release_memory(self) -> None:
        cache = self._cache
        if cache._usable_here():
            _lib.lib().pf_cache_free(cache._handle, self._address, self._size)
        else:
            _lib.lib().pf_free(self._address)

    def free(self) -> None:
        """Give the fragment back; any thread may call this, once."""
        self._give_up("free", self._release_memory)

    def page(self) -> PageInfo:
        """page_info() of the frag page holding this fragment."""
        self._checked_base()
        return page_info(self._address)

    def __enter__(self) -> Fragment:
        self._checked_base()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._base is not None:
            self.free()

    def __repr__(self) -> str:
        state = " freed" if self._base is None else ""
        return "<Fragment 0x%x size=%d%s>" % (self._address, self._size, state)

    __copy__ = __deepcopy__ = __reduce_ex__ = __reduce__ = _not_copyable
