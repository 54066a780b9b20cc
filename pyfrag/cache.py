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
- Spares (the kernel's NAPI skb cache, in Python): while the cache is open,
  free() from any thread keeps the fragment, still allocated in page_frag,
  as a spare for the next alloc() of the same size (newest first), up to
  SPARE_COUNT fragments and SPARE_BYTES bytes per size (one at least) and
  SPARE_SIZES sizes (a new size evicts the oldest). So a loop of alloc()
  and free() makes no native call. alloc_many() takes spares when there are
  enough for all n; free_many() and frees past the bounds go to page_frag.
  drain(), close() and the cache's collection give every spare back.
  FragCache(recycle=False) keeps none: every free() reaches page_frag (its
  counters and pages then show each one).
- alloc() from the spares takes no lock: list.pop() hands each spare to one
  taker, and flushes that race it pop one at a time too; a spare is
  allocated in page_frag whatever happens to the cache meanwhile. The
  native calls of alloc(), alloc_many(), recv_burst() and free() run under
  the cache's lock (re-entrant): close() takes the same lock, so it never
  overlaps one, and later calls raise FragError; a close() re-entered from
  inside a call (a signal handler, a __del__) is refused. The other calls
  into C count as calls in flight (pyfrag._native.owner). The cache's lock
  guards each of its fragments' state (freed or not, views, pins) and the
  spares' bounds.
- A Fragment may outlive its cache and be freed from any thread; free()
  keeps it as a spare while the cache is open, else takes the cache's fast
  path on the owner thread and pf_free() on others or once the cache is
  closed. A second free() raises FragError, also after its bytes went to a
  new Fragment (that one is not touched).
- Memory safety rule: Python code can reach a fragment's bytes only while it
  is allocated. bytes(), indexing, slicing and item and slice assignment run
  under the owner's lock, after checking the fragment is live (keys and
  values are converted first, so no Python code of the caller runs there);
  private fragments are read and written through one view over the arena
  that is never handed out, and no ctypes object is made for a fragment
  until view() (or a slice of a fragment outside that view) needs one. On
  Python >= 3.12 each live `memoryview(frag)` holds a pin. frag.view() takes
  no pin: free() releases every memoryview that view() handed out, under
  the same lock. If the fragment is pinned, or anything still holds the
  bytes (an export of such a view, a slice of it, its `.obj`), free() raises
  FragError ("in use") and the fragment stays allocated: drop or release
  the holder and call free() again. Fragments never freed are leaked, like
  malloc: their address may have been handed to C, so nothing frees them
  behind your back.
- alloc_many(n, size) is all or nothing; free_many(frags) checks every
  fragment first (of this cache, live, not in use) and frees none if one
  fails, then frees them all with one native call.
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
from ._native.signatures import Address, last_error, raw

_get_ident = threading.get_ident
_c_void_p = ctypes.c_void_p
_new = object.__new__
_NOT_EXITING = object()  # Fragment.free()'s default: called as free(), not as __exit__

FRAG_MAX = 32768  # PF_FRAG_PAGE_SIZE: the largest fragment and alignment
# The spares a cache keeps for reuse (see FragCache): at most SPARE_SIZES sizes, of each at
# most SPARE_COUNT fragments and SPARE_BYTES bytes (one fragment at least).
SPARE_SIZES = 8
SPARE_COUNT = 64
SPARE_BYTES = 128 << 10
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


_c_uintptr = ctypes.c_uint64 if ctypes.sizeof(ctypes.c_void_p) == 8 else ctypes.c_uint32


class _HotCalls:
    """The library's functions on the per-fragment paths, without errcheck (the callers
    test the result and raise last_error), bound once the library is loaded."""

    cdll = None
    window_base = window_size = 0

    def bind(self, cdll) -> None:
        if self.cdll is cdll:
            return
        self.cache_alloc = raw(cdll, "pf_cache_alloc", Address)
        self.cache_free = raw(cdll, "pf_cache_free", ctypes.c_int)
        self.free = raw(cdll, "pf_free", ctypes.c_int)
        self.alloc_bulk = raw(cdll, "pf_cache_alloc_bulk", ctypes.c_int)
        self.free_bulk = raw(cdll, "pf_cache_free_bulk", ctypes.c_int)
        self.recv_burst = raw(cdll, "pf_recv_burst", ctypes.c_int)
        self.send_burst = raw(cdll, "pf_send_burst", ctypes.c_int)
        # (raw: no argtypes; the callers pass handles, ctypes arrays, bytes or None, and
        # ints below 2**31, which libffi widens to the C parameter's size)
        self.shared_recv_burst = raw(cdll, "pf_shared_recv_burst", ctypes.c_int)
        self.shared_alloc = raw(cdll, "pf_shared_alloc", Address)
        self.shared_alloc_bulk = raw(cdll, "pf_shared_alloc_bulk", ctypes.c_int)
        self.shared_free = raw(cdll, "pf_shared_free", ctypes.c_int)
        # One 'B' view over the private arena's first region: item access and bytes() of a
        # private fragment index it, instead of making a view per fragment. Never handed
        # out; only code holding the fragment's lock, after checking it is live, uses it.
        base, size = _c_uintptr(), ctypes.c_size_t()
        cdll.pf_arena_range(ctypes.byref(base), ctypes.byref(size))
        self.window_base, self.window_size = base.value, size.value
        self.window = _byte_view((ctypes.c_char * size.value).from_address(base.value))
        global _pf_cache_alloc, _pf_cache_free, _pf_free  # one dict lookup each, not two
        _pf_cache_alloc, _pf_cache_free, _pf_free = self.cache_alloc, self.cache_free, self.free
        self.cdll = cdll


_hot = _HotCalls()
_pf_cache_alloc = _pf_cache_free = _pf_free = None  # set by _hot.bind()


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

    def __init__(self, *, recycle: bool = True):
        if type(recycle) is not bool:
            raise TypeError("recycle must be True or False, not %r" % (recycle,))
        cdll = loader.lib()
        _hot.bind(cdll)
        self._window, self._window_base, self._window_size = (
            _hot.window, _hot.window_base, _hot.window_size)
        self._owner = threading.get_ident()
        self._recycle = recycle
        # size -> addresses of freed fragments of that size, newest last. Still allocated
        # in page_frag; only code holding the lock touches it. The finalizer frees them.
        self._spare: dict = {}
        self._own(cdll.pf_cache_create(), _destroy, self._spare, cdll.pf_cache_destroy)

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
        if type(size) is not int or not 0 < size <= FRAG_MAX:
            size = check_size(size)
        if align is not None:
            return Fragment(self, self._call(loader.lib().pf_cache_alloc_align, size,
                                             check_align(align)), size)
        if not self._open or _get_ident() != self._owner:
            self._check_usable()
        # A spare of this size needs no lock: list.pop() hands each spare to one taker (the
        # frees and flushes that race it pop one at a time too), and a spare is allocated
        # in page_frag whatever happens to the cache meanwhile (a close re-entered from a
        # signal handler here leaves a fragment that outlives its cache, as any may).
        spare = self._spare.get(size)
        if spare:
            try:
                address = spare.pop()
            except IndexError:  # another thread's flush took the last one
                return self._alloc_locked(size)
            frag = _new(Fragment)  # Fragment.__init__ inline: a third of the object's cost
            frag._cache, frag._address, frag._size, frag._room = self, address, size, size
            frag._live, frag._access = True, None
            return frag
        return self._alloc_locked(size)

    def _alloc_locked(self, size: int) -> Fragment:
        # One native call, under the lock instead of counted in flight: close() takes the
        # lock (and refuses when this thread holds it), so it can never overlap the call.
        # (acquire/release, not `with`: half the cost.)
        lock = self._lock
        lock.acquire()
        try:
            if not self._open or _get_ident() != self._owner:
                self._check_usable()
            address = _pf_cache_alloc(self._handle, size)  # an Address: no conversion
            if not address:
                raise last_error(_hot.cdll, "pf_cache_alloc")
            return Fragment(self, address.value, size)
        finally:
            lock.release()

    def alloc_many(self, n, size) -> list:
        """n fragments of `size` bytes with one native call: all of them, or an exception."""
        n = check_int(n, "count")
        if n < 0:
            raise ValueError("count must be >= 0, not %d" % n)
        size = check_size(size)
        with self._lock:
            self._check_usable()
            spare = self._spare.get(size)
            if spare and len(spare) >= n:  # from the spares when they have them all
                taken = _take(spare, n)
                try:
                    if len(taken) == n:
                        return make_fragments(Fragment, self, taken, size)
                except BaseException:  # (a KeyboardInterrupt): nothing reached the caller
                    self._spare_return(size, taken)
                    raise
                self._spare_return(size, taken)  # a racing flush took some
            arrays = take_scratch(self, n)
            try:
                if _hot.alloc_bulk(self._handle, size, n, arrays[0]):
                    raise last_error(_hot.cdll, "pf_cache_alloc_bulk")
                return fragments_of(Fragment, self, arrays[0], n, size)
            finally:
                give_scratch(self, arrays)

    def free_many(self, frags) -> None:
        """Free fragments of this cache with one native call (from any thread, once each).
        Checked first: a fragment of another cache or arena (ValueError), one freed already
        or in use (FragError) frees none of them."""
        frags = list(frags)
        count = len(frags)
        with self._lock:
            addresses, sizes = arrays = take_scratch(self, count)
            try:
                claim_all(self, frags, Fragment, "cache", addresses, sizes)
                here = self._open and _get_ident() == self._owner
                # every fragment is tried; a failure says which errno, and they stay freed
                if _hot.free_bulk(self._handle if here else None, addresses, sizes, count):
                    raise last_error(_hot.cdll, "pf_cache_free_bulk")
            finally:
                give_scratch(self, arrays)

    def recv_burst(self, sock, n=32, size=2048, *, addresses=False) -> list:
        """Up to n datagrams from `sock` (a datagram socket, or anything with fileno()) with
        one recvmmsg: a list of fragments, each as long as its datagram (truncated at
        `size`), or of (fragment, sender address) pairs if `addresses`. Waits as the
        socket's timeout says (BlockingIOError when non-blocking and empty, TimeoutError);
        OSError with errno for the rest. See pyfrag.burst."""
        return _burst.recv_burst(self, sock, n, size, addresses)

    def send_burst(self, sock, frags, address=None) -> int:
        """pyfrag.burst.send_burst(sock, frags, address): fragments of any cache or arena."""
        return _burst.send_burst(sock, frags, address)

    def drain(self) -> None:
        """Give the spares and the current frag page back (its fragments keep it alive)."""
        with self._lock:
            self._check_usable()
            _free_spares(self._spare, self._handle)
        self._call(loader.lib().pf_cache_drain)

    @property
    def recycle(self) -> bool:
        """Whether free() keeps fragments for reuse by alloc() (FragCache(recycle=...))."""
        return self._recycle

    @property
    def spares(self) -> int:
        """How many freed fragments the cache keeps for reuse now."""
        with self._lock:
            return sum(len(spare) for spare in self._spare.values())

    def _spare_list(self, size: int):
        """(lock held, cache open) The spare list for `size`, made now, or None when the
        cache does not recycle. A new size past SPARE_SIZES evicts the oldest list."""
        if not self._recycle:
            return None
        spares = self._spare
        if len(spares) >= SPARE_SIZES:
            oldest = next(iter(spares))
            _free_spares({oldest: spares.pop(oldest)}, self._handle if self._owner ==
                         _get_ident() else None)
        spare = spares[size] = []
        return spare

    def _spare_return(self, size: int, addresses: list) -> None:
        """(lock held) Put addresses taken off the spares back, or free what has no room."""
        spare = self._spare.get(size)
        if spare is None:
            spare = self._spare_list(size)
        for address in addresses:
            if spare is not None and len(spare) < SPARE_COUNT and len(spare) * size < SPARE_BYTES:
                spare.append(address)
            elif _hot.free(_c_void_p(address)):
                raise last_error(_hot.cdll, "pf_free")

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


def _take(spare: list, n: int) -> list:
    """Up to n addresses off the end of `spare`, one pop() each: an address popped here is
    this caller's alone, whoever else pops the list at the same time (alloc() does,
    without the lock)."""
    taken = []
    try:
        while len(taken) < n:
            taken.append(spare.pop())
    except IndexError:
        pass
    return taken


def _free_spares(spares: dict, handle) -> None:
    """Give every spare back to page_frag (through the cache `handle` on its owner thread,
    else pf_free) and empty `spares`."""
    for size, spare in list(spares.items()):
        taken = _take(spare, len(spare))
        count = len(taken)
        if count:
            addresses = (ctypes.c_void_p * count)(*taken)
            sizes = (ctypes.c_uint32 * count)(*([size] * count))
            # every one is tried; a failure would mean a corrupted address: say so
            if _hot.free_bulk(handle, addresses, sizes, count):
                raise last_error(_hot.cdll, "pf_cache_free_bulk")
    spares.clear()


def _destroy(handle, spares: dict, destroy) -> None:
    """The cache's release (under its lock, once): its spares, then the cache."""
    try:
        _free_spares(spares, None)
    finally:
        destroy(handle)


def page_info(address) -> PageInfo:
    """What the page allocator knows about the block holding `address`."""
    address = check_int(address, "address")
    if not 0 <= address < 1 << (8 * ctypes.sizeof(ctypes.c_void_p)):
        raise ValueError("address 0x%x is not a pointer" % address)
    raw = _PageInfo()
    loader.lib().pf_page_query(address, ctypes.byref(raw))
    return PageInfo(raw.head, raw.size, raw.order, raw.refcount,
                    bool(raw.flags & PAGE_IN_USE), bool(raw.flags & PAGE_RESERVE))


class _Access:
    """Python's way to a live fragment's bytes, made by its first access (lock held)."""

    __slots__ = ("base", "mv", "views", "pins")

    def __init__(self, base):
        self.base = base   # the ctypes c_char array over the bytes
        self.mv = None     # pyfrag's own 'B' view, made by the first item access
        self.views = []    # weakrefs to the memoryviews view() handed out
        # live memoryview(frag) exports (Python >= 3.12) and page() calls: free() refuses
        # while > 0
        self.pins = 0


class Fragment:
    """`size` bytes at `address`, from `cache`; see the module docstring for the rules."""

    __slots__ = ("_cache", "_address", "_size", "_room", "_live", "_access", "__weakref__")

    def __init__(self, cache, address: int, size: int, room: int = 0):
        self._cache = cache
        self._address = address
        self._size = size
        self._room = room or size  # bytes allocated (a received datagram may be shorter)
        self._live = True     # allocated, and this object still owns it
        self._access = None   # an _Access once Python reached the bytes

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
        return not self._live

    def _gone_error(self) -> FragError:
        return FragError("fragment at 0x%x was freed" % self._address)

    # -- access to the bytes: each under the owner's lock, which free() takes too --
    def _check_live_locked(self) -> None:
        if not self._live:
            raise self._gone_error()

    def _new_base(self):
        return (ctypes.c_char * self._size).from_address(self._address)

    def _access_locked(self) -> _Access:
        """The _Access, for a new access to the bytes; FragError if they are gone."""
        self._check_live_locked()
        access = self._access
        if access is None:
            access = self._access = _Access(self._new_base())
        return access

    def _mv_locked(self) -> memoryview:
        access = self._access_locked()
        if access.mv is None:
            access.mv = _byte_view(access.base)
        return access.mv

    def _pin(self, export: bool = False) -> None:
        """Take a pin (an export's if `export`): free() refuses until _unpin()."""
        with self._cache._lock:
            self._access_locked().pins += 1

    def _unpin(self, export: bool = False) -> None:
        with self._cache._lock:
            self._access.pins -= 1

    def view(self) -> memoryview:
        """A writable zero-copy memoryview of the bytes; free() releases it."""
        with self._cache._lock:  # registered before the lock drops: free() sees it
            access = self._access_locked()
            view = _byte_view(access.base)
            access.views = [ref for ref in access.views if ref() is not None]
            access.views.append(weakref.ref(view))
        return view

    if sys.version_info >= (3, 12):
        def __buffer__(self, flags: int) -> memoryview:
            self._pin(export=True)  # until __release_buffer__
            try:
                return _byte_view(self._access.base)
            except BaseException:
                self._unpin(export=True)
                raise

        def __release_buffer__(self, view: memoryview) -> None:
            view.release()
            self._unpin(export=True)

    def __len__(self) -> int:
        return self._size

    # The copies run under the lock: no Python code of the caller runs there (keys and
    # values are converted first), and free() cannot overlap them.
    def _window_start(self):
        """Where the bytes start in the owner's _window (one view over its whole memory,
        never handed out), or -1 outside it. Only for code holding the owner's lock, after
        _check_live_locked()."""
        owner = self._cache
        start = self._address - owner._window_base
        if 0 <= start and start + self._size <= owner._window_size:
            return start
        return -1

    def __bytes__(self) -> bytes:
        owner = self._cache
        with owner._lock:
            self._check_live_locked()
            start = self._window_start()
            if start >= 0:
                with owner._window[start:start + self._size] as part:
                    return part.tobytes()
            return self._access_locked().base.raw

    def __getitem__(self, key):
        if type(key) is int:
            size = self._size
            index = key + size if key < 0 else key
            owner = self._cache
            lock = owner._lock
            lock.acquire()
            try:
                if not self._live or not owner._open:  # (a private fragment outlives its cache)
                    self._check_live_locked()
                start = self._address - owner._window_base  # _window_start() inline
                if 0 <= start and start + size <= owner._window_size:
                    if not 0 <= index < size:
                        raise IndexError("fragment index out of range")
                    return owner._window[start + index]
            finally:
                lock.release()
        key = _plain_key(key)
        with self._cache._lock:
            item = self._mv_locked()[key]
            if type(item) is memoryview:
                with item:
                    return item.tobytes()
            return item

    def __setitem__(self, key, value) -> None:
        # (one byte: __getitem__'s steps, inline in both, as a shared helper would be one
        # more Python call per byte)
        if type(key) is int and type(value) is int:
            size = self._size
            index = key + size if key < 0 else key
            owner = self._cache
            lock = owner._lock
            lock.acquire()
            try:
                if not self._live or not owner._open:  # (a private fragment outlives its cache)
                    self._check_live_locked()
                start = self._address - owner._window_base  # _window_start() inline
                if 0 <= start and start + size <= owner._window_size:
                    if not 0 <= index < size:
                        raise IndexError("fragment index out of range")
                    owner._window[start + index] = value  # ValueError unless 0..255
                    return
            finally:
                lock.release()
        key = _plain_key(key)
        made = None  # a memoryview of the caller's buffer, obtained before the lock
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
            with self._cache._lock:
                self._mv_locked()[key] = source
        finally:
            if made is not None:
                made.release()

    # -- freeing --
    def _release_views(self, access: _Access, verb: str) -> None:
        views, access.views = access.views, []
        for ref in views:
            view = ref()
            if view is None:
                continue
            try:
                view.release()
            except BufferError:
                access.views.append(ref)
                raise FragError("cannot %s fragment at 0x%x: a buffer obtained from its view() "
                                "is still held (release it first)"
                                % (verb, self._address)) from None

    def _end_access_locked(self, verb: str) -> None:
        """End every Python path to the bytes (lock held); FragError, nothing changed, if
        one is still in use."""
        access = self._access
        if access.pins:
            raise FragError("cannot %s fragment at 0x%x: its bytes are in use (%d pin%s: a "
                            "memoryview(frag) still held, or another thread reading or writing "
                            "them); release it (mv.release(), or `with memoryview(frag) as mv:`) "
                            "or let the other thread finish, then try again"
                            % (verb, self._address, access.pins, "" if access.pins == 1 else "s"))
        # Claim: from here on no thread can make a new view of the bytes.
        base, access.base = access.base, None
        self._access = None
        try:
            mv, access.mv = access.mv, None
            if mv is not None:
                mv.release()  # never exported: only code under the lock used it
                mv = None
            self._release_views(access, verb)
            # Every other Python path to the bytes holds a reference to base (a slice of
            # a view keeps the view's buffer, and so base, alive): only our local and
            # getrefcount's argument may remain.
            if sys.getrefcount(base) > 2:
                raise FragError("cannot %s fragment at 0x%x: something derived from its "
                                "view (a slice, memoryview(view), view.obj) is still alive; "
                                "drop it first" % (verb, self._address))
        except BaseException:
            access.base = base
            self._access = access
            raise

    def _give_up_locked(self, verb: str, release) -> None:
        """End Python's access to the bytes, then call release(); undone if release fails."""
        if not self._live:
            raise self._gone_error()
        if self._access is not None:
            self._end_access_locked(verb)
        self._live = False
        try:
            release()
        except BaseException:
            self._live = True
            raise

    def _give_up(self, verb: str, release) -> None:
        with self._cache._lock:
            self._give_up_locked(verb, release)

    def free(self, exc_type=_NOT_EXITING, exc=None, traceback=None) -> None:
        """Give the fragment back; any thread may call this, once. While the cache is open
        it keeps the fragment as a spare for its next alloc() of the same size, if it has
        room (FragCache's contract). It is __exit__ too (one call less per with block):
        its parameters are __exit__'s, and leaving a with block after a free() inside it
        does nothing."""
        cache = self._cache
        lock = cache._lock
        lock.acquire()
        try:
            if not self._live:
                if exc_type is _NOT_EXITING:
                    raise self._gone_error()
                return  # __exit__ of a block that freed the fragment itself
            if self._access is not None:
                self._end_access_locked("free")
            self._live = False
            # (the cache's lock is held, so its close cannot run between the check and the
            # use of its spares or handle)
            if cache._open:
                room = self._room
                spare = cache._spare.get(room)
                if spare is None:
                    spare = cache._spare_list(room)
                if spare is not None:
                    count = len(spare)
                    if count < SPARE_COUNT and count * room < SPARE_BYTES:
                        spare.append(self._address)
                        return
                if _get_ident() == cache._owner:
                    if not _pf_cache_free(cache._handle, _c_void_p(self._address), room):
                        return
                    self._live = True
                    raise last_error(_hot.cdll, "pf_cache_free")
            if _pf_free(_c_void_p(self._address)):
                self._live = True
                raise last_error(_hot.cdll, "pf_free")
        finally:
            lock.release()

    def page(self) -> PageInfo:
        """page_info() of the frag page holding this fragment."""
        with self._cache._lock:
            self._check_live_locked()
            return page_info(self._address)

    def __enter__(self) -> Fragment:
        if not self._live:
            raise self._gone_error()
        return self

    __exit__ = free

    def __repr__(self) -> str:
        state = "" if self._live else " freed"
        return "<Fragment 0x%x size=%d%s>" % (self._address, self._size, state)

    __copy__ = __deepcopy__ = __reduce_ex__ = __reduce__ = not_copyable


def make_fragments(kind, owner, addresses, sizes, room: int = 0) -> list:
    """kind(owner, address, size, room) for each address, its size from `sizes` (an int:
    all the same), made without calling __init__ (a third of each one's cost)."""
    made = []
    append = made.append
    if type(sizes) is int:
        room = room or sizes
        for address in addresses:
            frag = _new(kind)
            frag._cache, frag._address, frag._size, frag._room = owner, address, sizes, room
            frag._live, frag._access = True, None
            append(frag)
    else:
        for address, size in zip(addresses, sizes):
            frag = _new(kind)
            frag._cache, frag._address, frag._size, frag._room = owner, address, size, room or size
            frag._live, frag._access = True, None
            append(frag)
    return made


def fragments_of(kind, owner, out, n: int, sizes) -> list:
    """make_fragments over the first n addresses of the ctypes array `out` (sizes: an int,
    or a ctypes array of as many), all of them or none: if making them is interrupted (a
    KeyboardInterrupt), the n are freed in C first, so none is left allocated unseen."""
    try:
        # (slices: iterating the ctypes arrays themselves costs 4x as much)
        return make_fragments(kind, owner, out[:n], sizes if type(sizes) is int else sizes[:n])
    except BaseException:
        _hot.free_bulk(None, out, None, n)
        raise


SCRATCH = 256  # entries of an owner's scratch arrays


def take_scratch(owner, count: int) -> tuple:
    """(addresses, sizes): ctypes arrays of at least count entries for a bulk call under
    owner's lock (making two costs more than freeing a fragment). The owner's own pair is
    taken off it while in use, so a call re-entered under the same lock (a finalizer's)
    makes its own."""
    arrays = owner._scratch if count <= SCRATCH else None
    if arrays is None:
        size = max(count, SCRATCH)
        return (ctypes.c_void_p * size)(), (ctypes.c_uint32 * size)()
    owner._scratch = None
    return arrays


def give_scratch(owner, arrays: tuple) -> None:
    if len(arrays[0]) == SCRATCH:
        owner._scratch = arrays


def claim_all(owner, frags, fragment_type, what: str, addresses, sizes=None) -> None:
    """free_many's checks, under owner's lock: every fragment is marked freed and its
    address (and size) filled in, or none is (ValueError for one of another owner or
    type, FragError for one freed already or in use)."""
    claimed = []
    try:
        for i, frag in enumerate(frags):
            if type(frag) is not fragment_type or frag._cache is not owner:
                raise ValueError("free_many() takes fragments of this %s; item %d is %r"
                                 % (what, i, frag))
            if not frag._live:
                raise frag._gone_error()
            if frag._access is not None:
                frag._end_access_locked("free")
            frag._live = False
            claimed.append(frag)
            addresses[i] = frag._address
            if sizes is not None:
                sizes[i] = frag._room
    except BaseException:
        for frag in claimed:
            frag._live = True
        raise


from . import burst as _burst  # noqa: E402  (it builds on Fragment)
