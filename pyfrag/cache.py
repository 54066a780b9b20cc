# SPDX-License-Identifier: GPL-2.0-only
"""FragCache (one page_frag cache) and Fragment (a zero-copy byte buffer).

Contract:
- A FragCache belongs to the thread that made it: any other thread using it
  gets FragError, and so does any use after close(). A forgotten cache is
  destroyed when collected, or at interpreter exit (pyfrag._native.owner).
- Sizes and alignments that are not ints (operator.index; bool is refused)
  raise TypeError, and bad values (a size < 1 or > 32768, an alignment not a
  power of two in 1..32768) ValueError, before C is called; exhaustion
  raises MemoryError.
- Each call into C on a FragCache is a call in flight (pyfrag._native.owner):
  close() waits for them and never overlaps one, and later calls raise
  FragError; a close() re-entered from inside a call (a signal handler, a
  __del__) is refused. The cache's lock guards each of its fragments' state
  (freed or not, pins).
- A Fragment may outlive its cache and be freed from any thread; free()
  takes the cache's fast path only on the owner thread while the cache is
  open, and pf_free() otherwise. A second free() raises FragError.
- Memory safety rule: Python code can reach a fragment's bytes only while it
  is allocated. Every access (bytes(), indexing, slicing, item and slice
  assignment, and on Python >= 3.12 each live `memoryview(frag)`) holds a
  pin on the fragment, taken and dropped under the owner's lock, while it
  reads or writes; no Python code of the caller runs while bytes(), an index
  or an assignment holds its pin (keys and values are converted first).
  frag.view() takes no pin: free() releases every memoryview that view()
  handed out, under the same lock. If the fragment is pinned, or
  anything still holds the bytes (an export of such a view, a slice of it,
  its `.obj`), free() raises FragError ("in use") and the fragment stays
  allocated: drop or release the holder (or let the other thread finish)
  and call free() again. Fragments never freed are leaked, like malloc: their
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

from ._native import loader
from ._native.errors import FragError
from ._native.handles import address as handle_address
from ._native.owner import NativeOwner, not_copyable
from ._native.signatures import CacheInfo as _CacheInfo, PageInfo as _PageInfo

FRAG_MAX = 32768  # PF_FRAG_PAGE_SIZE: the largest fragment and alignment
PAGE_IN_USE = 1
PAGE_RESERVE = 2

def check_int(value, what: str) -> int:
    """value as an int (anything with __index__), else TypeError; bool is refused."""
    if isinstance(value, bool):
        raise TypeError("%s must be an int, not bool" % what)
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError("%s must be an int, not %s" % (what, type(value).__name__)) from None


def check_size(size) -> int:
    size = check_int(size, "fragment size")
    if not 1 <= size <= FRAG_MAX:
        raise ValueError("fragment size must be 1..%d bytes, not %d" % (FRAG_MAX, size))
    return size


def check_align(align) -> int:
    align = check_int(align, "alignment")
    if not 1 <= align <= FRAG_MAX or align & (align - 1):
        raise ValueError("alignment must be a power of two in 1..%d, not %d" % (FRAG_MAX, align))
    return align


def _byte_view(base) -> memoryview:
    """A 1-D memoryview of format 'B' over a ctypes c_char array."""
    with memoryview(base) as raw:
        return raw.cast("B")


def _index(value):
    """A slice bound or step as a plain int (or None), converted before any pin is taken."""
    return None if value is None else operator.index(value)


_PLAIN = (int, type(None))
_PLAIN_BUFFERS = (bytes, bytearray, memoryview)  # their buffers run no Python code


def _plain_key(key):
    """key as a slice of ints or an int: no __index__ of the caller runs while pinned."""
    kind = type(key)
    if kind is int:
        return key
    if kind is slice:
        if (type(key.start) in _PLAIN and type(key.stop) in _PLAIN
                and type(key.step) in _PLAIN):
            return key
        return slice(_index(key.start), _index(key.stop), _index(key.step))
    if isinstance(key, slice):
        return slice(_index(key.start), _index(key.stop), _index(key.step))
    try:
        return operator.index(key)
    except TypeError:
        raise TypeError("fragment indices must be integers or slices, not %s"
                        % type(key).__name__) from None


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


class FragCache(NativeOwner):
    """One page_frag cache, owned by the thread that created it."""

    def __init__(self):
        cdll = loader.lib()
        self._owner = threading.get_ident()
        self._own(cdll.pf_cache_create(), cdll.pf_cache_destroy)

    # -- state --
    @property
    def owner_thread(self) -> int:
        """threading.get_ident() of the thread the cache belongs to."""
        return self._owner

    def _usable_here(self) -> bool:
        return self._open and threading.get_ident() == self._owner

    def _check_usable(self) -> None:
        if not self._open:
            raise self._closed_error()
        if threading.get_ident() != self._owner:
            raise FragError("FragCache belongs to thread %d, used from thread %d; a cache is used "
                            "only by its thread (fragments may be freed anywhere)"
                            % (self._owner, threading.get_ident()))

    _check_close = _check_usable  # only the owner thread closes it

    # -- operations --
    def alloc(self, size, align=None) -> Fragment:
        """A fragment of `size` bytes (1..32768), aligned to `align` if given."""
        size = check_size(size)
        align = None if align is None else check_align(align)
        cdll = loader.lib()
        if align is None:
            address = self._call(cdll.pf_cache_alloc, size)
        else:
            address = self._call(cdll.pf_cache_alloc_align, size, align)
        return Fragment(self, address, size)

    def drain(self) -> None:
        """Give the current frag page back (its fragments keep it alive)."""
        self._call(loader.lib().pf_cache_drain)

    def info(self) -> CacheInfo:
        raw = _CacheInfo()
        self._call(loader.lib().pf_cache_query, ctypes.byref(raw))
        return CacheInfo(raw.page, raw.page_size, raw.offset, raw.bias, bool(raw.pfmemalloc))

    def close(self) -> None:
        """Destroy the cache; outstanding fragments stay valid. Closing twice is fine."""
        super().close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "handle=0x%x" % handle_address(self._handle)
        return "<FragCache %s owner=%d>" % (state, self._owner)


def page_info(address) -> PageInfo:
    """What the page allocator knows about the block holding `address`."""
    address = check_int(address, "address")
    if not 0 <= address < 1 << (8 * ctypes.sizeof(ctypes.c_void_p)):
        raise ValueError("address 0x%x is not a pointer" % address)
    raw = _PageInfo()
    loader.lib().pf_page_query(address, ctypes.byref(raw))
    return PageInfo(raw.head, raw.size, raw.order, raw.refcount,
                    bool(raw.flags & PAGE_IN_USE), bool(raw.flags & PAGE_RESERVE))


class Fragment:
    """`size` bytes at `address`, from `cache`; see the module docstring for the rules."""

    __slots__ = ("_cache", "_address", "_size", "_base", "_views", "_pins", "_mv",
                 "__weakref__")

    def __init__(self, cache: FragCache, address: int, size: int):
        self._cache = cache
        self._address = address
        self._size = size
        self._base = (ctypes.c_char * size).from_address(address)  # None once freed
        self._views: list = []  # weakrefs to the memoryviews view() handed out
        # accesses reading or writing the bytes now, plus live memoryview(frag) exports
        # (Python >= 3.12); changed under the owner's lock, and free() refuses while > 0
        self._pins = 0
        self._mv = None  # pyfrag's own 'B' view of the bytes, made by the first pin

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

    # -- pins: what free() respects, taken and dropped under the owner's lock --
    def _access_locked(self):
        """The base, for a new access to the bytes; FragError if they are gone (lock held)."""
        return self._checked_base()

    def _pin(self, export: bool = False) -> None:
        """Take a pin (an export's if `export`); while it is held, self._base and self._mv
        stay. Pinned code keeps no reference to either (free() counts references)."""
        with self._cache._lock:
            if self._base is None:
                self._checked_base()  # raises
            self._pins += 1
            if self._mv is None:
                self._mv = _byte_view(self._base)

    def _unpin(self, export: bool = False) -> None:
        with self._cache._lock:
            self._pins -= 1

    # -- buffer access (pinned code reads self._base and keeps no reference to it) --
    def view(self) -> memoryview:
        """A writable zero-copy memoryview of the bytes; free() releases it."""
        with self._cache._lock:  # registered before the lock drops: free() sees it
            view = _byte_view(self._access_locked())
            self._views = [ref for ref in self._views if ref() is not None]
            self._views.append(weakref.ref(view))
        return view

    if sys.version_info >= (3, 12):
        def __buffer__(self, flags: int) -> memoryview:
            self._pin(export=True)  # until __release_buffer__
            try:
                return _byte_view(self._base)
            except BaseException:
                self._unpin(export=True)
                raise

        def __release_buffer__(self, view: memoryview) -> None:
            view.release()
            self._unpin(export=True)

    def __len__(self) -> int:
        return self._size

    def __bytes__(self) -> bytes:
        self._pin()
        try:
            return self._base.raw
        finally:
            self._unpin()

    def __getitem__(self, key):
        key = _plain_key(key)
        self._pin()
        try:
            item = self._mv[key]
            if type(item) is memoryview:
                with item:
                    return item.tobytes()
            return item
        finally:
            self._unpin()

    def __setitem__(self, key, value) -> None:
        key = _plain_key(key)
        made = None  # a memoryview of the caller's buffer, obtained before the pin
        if type(key) is slice:
            source = value if type(value) in _PLAIN_BUFFERS else memoryview(value)
            if source is not value:
                made = source
        elif type(value) is int:
            source = value
        else:
            try:
                source = operator.index(value)
            except TypeError:
                raise TypeError("a fragment's item is a byte: an int 0..255, not %s"
                                % type(value).__name__) from None
        try:
            self._pin()
            try:
                self._mv[key] = source
            finally:
                self._unpin()
        finally:
            if made is not None:
                made.release()

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

    def _give_up(self, verb: str, release) -> None:
        """End Python's access to the bytes, then call release(); undone if either fails."""
        with self._cache._lock:
            self._give_up_locked(verb, release)

    def _give_up_locked(self, verb: str, release) -> None:
        base = self._checked_base()
        if self._pins:
            raise FragError("cannot %s fragment at 0x%x: its bytes are in use (%d pin%s: a "
                            "memoryview(frag) still held, or another thread reading or writing "
                            "them); release it (mv.release(), or `with memoryview(frag) as mv:`) "
                            "or let the other thread finish, then try again"
                            % (verb, self._address, self._pins, "" if self._pins == 1 else "s"))
        # Claim: from here on no thread can pin the bytes or make a new view of them.
        self._base = None
        mv, self._mv = self._mv, None
        try:
            if mv is not None:
                mv.release()  # never exported: only pinned code used it
                mv = None
            self._release_views(verb)
            # Every other Python path to the bytes holds a reference to base (a slice of
            # a view keeps the view's buffer, and so base, alive): only our local and
            # getrefcount's argument may remain.
            if sys.getrefcount(base) > 2:
                raise FragError("cannot %s fragment at 0x%x: something derived from its "
                                "view (a slice, memoryview(view), view.obj) is still alive; "
                                "drop it first" % (verb, self._address))
            release()
        except BaseException:
            self._base = base
            raise

    def _release_memory(self) -> None:
        # the cache's lock is held: its close cannot run between the check and the call
        cache = self._cache
        if cache._usable_here():
            loader.lib().pf_cache_free(cache._handle, self._address, self._size)
        else:
            loader.lib().pf_free(self._address)

    def free(self) -> None:
        """Give the fragment back; any thread may call this, once."""
        self._give_up("free", self._release_memory)

    def page(self) -> PageInfo:
        """page_info() of the frag page holding this fragment."""
        self._pin()
        try:
            return page_info(self._address)
        finally:
            self._unpin()

    def __enter__(self) -> Fragment:
        self._checked_base()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._base is not None:
            self.free()

    def __repr__(self) -> str:
        state = " freed" if self._base is None else ""
        return "<Fragment 0x%x size=%d%s>" % (self._address, self._size, state)

    __copy__ = __deepcopy__ = __reduce_ex__ = __reduce__ = not_copyable
