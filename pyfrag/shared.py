# SPDX-License-Identifier: GPL-2.0-only
"""Shared arenas (pyfrag_shared.h): fragments allocated in one process and freed in another.

Contract:
- `SharedArena(name, create=True, ...)` creates the arena (its backing file
  "pyfrag.<name>") and attaches to it; `SharedArena(name)` attaches to an
  existing one. It is a context manager; close() detaches, and the creator
  (by default: `remove_on_close` defaults to `create`) also removes the
  name, while attached processes keep their mapping. A forgotten arena is
  closed when collected (weakref.finalize, no reference to the object).
- Bad arguments raise before C is called: TypeError for a wrong type (sizes,
  alignments, offsets, addresses and the mode are ints by operator.index;
  bool is refused), ValueError for a bad value. C
  failures raise with errno and the library's sentence: FileNotFoundError
  (ENOENT), FileExistsError (EEXIST), PermissionError (EACCES),
  MemoryError (ENOMEM), IncompatibleArenaError (EPROTO, a FragError),
  ValueError (EINVAL) and FragError for the rest. Any use after close()
  raises FragError (closing twice is fine).
- Any thread may use an arena: the library gives each thread of each process
  its own cache per arena. Every call into C on the arena holds its lock
  (the per-fragment and bulk calls: alloc, free, alloc_many, free_many, the
  rings' put and get) or counts as in flight (pyfrag._native.owner), and so
  does every pinned access to one of its fragments' bytes: close() first
  marks the arena closed under the lock, so that later calls and accesses
  raise FragError, then waits for those in flight before it unmaps; so does interpreter exit, for the arenas still open. A failed __init__ leaves nothing
  behind: it detaches, and removes the file if this call created it.
- `SharedFragment` is a `pyfrag.Fragment` (the same buffer rules: pins,
  views released by free(), no copy, no pickle) whose
  free() may run in any process that has the arena open, plus `.offset` and
  `send()`: send() ends this process's ownership without freeing and returns
  (offset, length) for another process, which calls `arena.receive(offset,
  length)` to get its own SharedFragment (and frees that), or
  `arena.free_offset(offset)`.
- close() first ends Python's access to every fragment of this arena object
  still allocated (releasing their views; FragError, arena left open, if a
  view's export or a memoryview(frag) is still held): after the unmap no
  Python path may reach the memory. Such fragments stay allocated in the arena (other processes may
  still use them); each view's buffer keeps the arena object alive, so the
  finalizer never unmaps under a live view.
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import re
import threading
import weakref
from dataclasses import dataclass

from ._native import loader
from ._native.errors import FragError, IncompatibleArenaError, LibraryError  # noqa: F401
from ._native.owner import NativeOwner
from ._native.signatures import last_error
from .cache import (FRAG_MAX, _NOT_EXITING, Fragment, _byte_view, _c_void_p, _hot, _new,
                    check_align, check_int, check_size, claim_all, fragments_of, give_scratch,
                    take_scratch)
from .stats import HugeShares, _sum_smaps

STATS_VERSION = 1  # PF_SHARED_STATS_VERSION
LAYOUT_VERSION = 4  # PF_SHARED_LAYOUT_VERSION
NAME_MAX = 48
BACKINGS = {"auto": 0, "hugetlb": 1, "thp": 2, "4k": 3}
BACKING_NAMES = {value: name for name, value in BACKINGS.items()}
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\Z")


# ---- statistics ------------------------------------------------------------------

@dataclass(frozen=True)
class SharedStats:
    """One pf_shared_stats snapshot (see PF_SHARED_STATS_FIELDS in pyfrag_shared.h)."""
    layout_version: int
    backing: int
    base: int
    map_bytes: int
    data_bytes: int
    pages_total: int
    pages_free: int
    pages_in_use: int
    reserve_free_pages: int
    processes: int
    caches: int
    allocs: int
    frees: int
    refills: int
    recycles: int
    abandons: int
    order0_fallbacks: int
    reserve_pages: int
    reserve_returns: int
    drains: int
    invalid_frees: int
    alloc_failures: int
    attaches: int
    detaches: int
    reaped_processes: int
    reaped_caches: int
    lost_pages: int
    lock_recoveries: int

    @property
    def backing_name(self) -> str:
        return BACKING_NAMES.get(self.backing, str(self.backing))


FIELDS = tuple(f.name for f in dataclasses.fields(SharedStats))
_struct = None
_struct_lock = threading.Lock()


def _stats_struct(cdll):
    """The ctypes pf_shared_stats_t built from the library's field names (checked once)."""
    global _struct
    with _struct_lock:
        if _struct is None:
            names = tuple(cdll.pf_shared_stats_field_name(i).decode()
                          for i in range(cdll.pf_shared_stats_field_count()))
            if names != FIELDS:
                raise LibraryError(
                    "%s counts different shared-arena statistics than this pyfrag package "
                    "(library lacks %s, has extra %s); rebuild the library from the same "
                    "checkout as the Python files (%s)"
                    % (loader.library_path(), sorted(set(FIELDS) - set(names)) or "none",
                       sorted(set(names) - set(FIELDS)) or "none", loader.HOW_TO_FIX))
            fields = [("size", ctypes.c_uint32), ("version", ctypes.c_uint32)]
            fields += [(name, ctypes.c_uint64) for name in names]
            _struct = type("pf_shared_stats_t", (ctypes.Structure,), {"_fields_": fields})
    return _struct


def field_docs() -> dict[str, str]:
    """The library's one-line meaning of each shared-arena counter."""
    cdll = loader.lib()
    return {name: cdll.pf_shared_stats_field_doc(i).decode() for i, name in enumerate(FIELDS)}


# ---- argument checks (before C) ------------------------------------------------------

def check_name(name) -> bytes:
    if not isinstance(name, str):
        raise TypeError("an arena name must be a str, not %s" % type(name).__name__)
    if not 1 <= len(name) <= NAME_MAX or not _NAME.match(name):
        raise ValueError("bad arena name %r: 1 to %d letters, digits, '.', '_' or '-', not "
                         "starting with '.'" % (name, NAME_MAX))
    return name.encode()


def _check_directory(directory):
    if directory is None:
        return None
    if not isinstance(directory, (str, bytes, os.PathLike)):
        raise TypeError("directory must be a path, not %s" % type(directory).__name__)
    encoded = os.fsencode(directory)
    if not encoded or b"\0" in encoded:
        raise ValueError("directory must be a non-empty path without NUL bytes")
    return encoded


def _check_create_args(create, size, mode, backing):
    if size is not None:
        if not create:
            raise ValueError("size is for create=True (an attach takes the arena's size)")
        if check_int(size, "size") < 1:
            raise ValueError("size must be >= 1 byte (it is rounded up to 2 MiB), not %d" % size)
    if not 1 <= check_int(mode, "mode") <= 0o777:
        raise ValueError("mode must be permission bits 0o001..0o777, not %s" % oct(mode))
    if not isinstance(backing, str):
        raise TypeError("backing must be a str, not %s" % type(backing).__name__)
    if backing not in BACKINGS:
        raise ValueError("backing must be one of %s, not %r" % (", ".join(BACKINGS), backing))


# ---- what the kernel says -----------------------------------------------------------

_SMAPS_KEYS = {"Rss": "rss", "Shared_Hugetlb": "shared_hugetlb",
               "Private_Hugetlb": "private_hugetlb", "ShmemPmdMapped": "shmem_pmd_mapped",
               "FilePmdMapped": "file_pmd_mapped"}


@dataclass(frozen=True)
class SharedCoverage(HugeShares):
    """Bytes of an arena's mapping in one process, from /proc/PID/smaps."""
    rss: int = 0               # resident, hugetlb excluded (shmem THP included)
    shared_hugetlb: int = 0
    private_hugetlb: int = 0
    shmem_pmd_mapped: int = 0  # shmem transparent hugepages mapped by a PMD
    file_pmd_mapped: int = 0

    @property
    def thp(self) -> int:
        return self.shmem_pmd_mapped + self.file_pmd_mapped


# ---- the arena --------------------------------------------------------------------

def _close_handle(handle, detach, unlink, name, directory) -> None:
    """Detach, then remove the name if asked (unlink is None otherwise); no object reference."""
    detach(handle)
    if unlink is not None:
        try:
            unlink(name, directory)
        except FileNotFoundError:
            pass  # someone removed it already


def _undo_init(cdll, handle, create, created, raw_name, raw_dir) -> None:
    """Detach a half-made arena and remove the file if this call created it (not another's)."""
    try:
        cdll.pf_shared_detach(handle)
    except Exception:  # noqa: BLE001 - the caller raises the first failure
        pass
    if not create:
        return
    try:
        if created is None:  # the path is unknown: the name is this call's file
            cdll.pf_shared_unlink(raw_name, raw_dir)
            return
        path, device, inode = created
        now = os.stat(path)
        if (now.st_dev, now.st_ino) == (device, inode):
            os.unlink(path)
    except Exception:  # noqa: BLE001 - gone already, or not ours any more
        pass



class SharedArena(NativeOwner):
    """A shared arena, created or attached by name; see the module docstring."""

    def __init__(self, name, *, create=False, size=None, mode=0o600, backing="auto",
                 directory=None, remove_on_close=None):
        raw_name = check_name(name)
        raw_dir = _check_directory(directory)
        _check_create_args(create, size, mode, backing)
        if backing != "auto" and not create:
            raise ValueError("backing is for create=True (an attach takes the arena's backing)")
        remove = bool(create) if remove_on_close is None else bool(remove_on_close)
        cdll = loader.lib()
        _stats_struct(cdll)  # a library with other statistics fails here, before any mapping
        _hot.bind(cdll)  # (alloc and SharedFragment.free call its raw functions)
        if create:
            handle = cdll.pf_shared_create(raw_name, size or 0, mode, BACKINGS[backing], raw_dir)
        else:
            handle = cdll.pf_shared_attach(raw_name, raw_dir)
        self._name = name
        self._directory = directory
        # live SharedFragments of this object that Python made a way to the bytes for (an
        # _Access): close() ends it; the others' bytes are reached only through _window,
        # under the lock, after checking that the arena is open
        self._fragments = weakref.WeakSet()
        self._remove = remove
        created = None  # (path, device, inode) of the file this call created
        try:
            self._path = os.fsdecode(cdll.pf_shared_path(handle) or b"")
            if create:
                made = os.stat(self._path)
                created = (self._path, made.st_dev, made.st_ino)
            first = self._stats_now(cdll, handle)
            self._base, self._map_bytes = first.base, first.map_bytes
            self._backing, self._size = first.backing_name, first.data_bytes
            # one view over the mapping for item access and bytes() (pyfrag.cache:
            # _window_start); released by close before the unmap
            self._window = _byte_view((ctypes.c_char * first.map_bytes).from_address(first.base))
            self._window_base, self._window_size = first.base, first.map_bytes
            # the lock (pyfrag._native.owner) also guards the state of every fragment of
            # this object
            self._own(handle, _close_handle, cdll.pf_shared_detach,
                      cdll.pf_shared_unlink if remove else None, raw_name, raw_dir)
        except BaseException:
            if getattr(self, "_finalizer", None) is not None:
                self._finalizer.detach()  # _undo_init detaches, once
            _undo_init(cdll, handle, create, created, raw_name, raw_dir)
            raise

    # -- state (the rules of pyfrag._native.owner) --
    def _closed_error(self) -> FragError:
        return FragError("shared arena %r is closed" % self._name)

    def _close_what(self) -> str:
        return "close() of shared arena %r" % self._name

    def _before_release(self) -> None:
        for frag in list(self._fragments):
            frag._orphan_locked()  # FragError (arena left open) if a view is exported
        loader.lib().pf_shared_thread_flush(self._handle)
        self._window.release()  # only ever sliced under the lock, each slice released

    def _exit_failed(self) -> None:
        # one that cannot close (a view still exported) stays mapped; its name goes if it would
        if self._remove:
            try:
                SharedArena.unlink(self._name, self._directory)
            except Exception:  # noqa: BLE001 - gone already
                pass

    @property
    def name(self) -> str:
        return self._name

    @property
    def remove_on_close(self) -> bool:
        """Whether close() removes the name (the creator's default)."""
        return self._remove

    @property
    def directory(self):
        return self._directory

    @property
    def path(self) -> str:
        """The backing file (on a hugetlbfs mount, or in /dev/shm)."""
        return self._path

    @property
    def base(self) -> int:
        """The address the arena is mapped at, the same in every process."""
        return self._base

    @property
    def map_bytes(self) -> int:
        """Bytes mapped: the control region and the frag pages."""
        return self._map_bytes

    @property
    def size(self) -> int:
        """Bytes of frag pages."""
        return self._size

    @property
    def backing(self) -> str:
        """"hugetlb", "thp" or "4k"."""
        return self._backing

    # -- fragments --
    _fragment_type = None  # SharedFragment, set below (pyfrag.burst makes them)

    def _fragment(self, address: int, size: int, offset: int) -> SharedFragment:
        # registered in self._fragments by its first access (SharedFragment._access_locked)
        return SharedFragment(self, address, size)

    def alloc(self, size, align=None) -> SharedFragment:
        """A fragment of `size` bytes (1..32768) from this thread's cache, aligned if asked."""
        if type(size) is not int or not 0 < size <= FRAG_MAX:
            size = check_size(size)
        if align is not None:
            address = self._call(loader.lib().pf_shared_alloc_align, size, check_align(align))
            return self._fragment(address, size, address - self._base)
        # FragCache.alloc's lean path: one raw native call under the lock instead of counted
        # in flight (close() takes the lock to mark the arena closed, so it never overlaps
        # the call, and a closed arena is seen here), the fragment made without __init__
        lock = self._lock
        lock.acquire()
        try:
            if not self._open:
                raise self._closed_error()
            address = _hot.shared_alloc(self._handle, size)
            if not address:
                raise last_error(_hot.cdll, "pf_shared_alloc")
            frag = _new(SharedFragment)
            frag._cache, frag._address, frag._size, frag._room = self, address.value, size, size
            frag._live, frag._access = True, None
            return frag
        finally:
            lock.release()

    def alloc_many(self, n, size) -> list:
        """n fragments of `size` bytes with one native call: all of them, or an exception."""
        if type(n) is not int or n < 0:
            n = check_int(n, "count")
            if n < 0:
                raise ValueError("count must be >= 0, not %d" % n)
        if type(size) is not int or not 0 < size <= FRAG_MAX:
            size = check_size(size)
        with self._lock:
            if not self._open:
                raise self._closed_error()
            arrays = take_scratch(self, n)
            try:
                if _hot.shared_alloc_bulk(self._handle, size, n, arrays[0]):
                    raise last_error(_hot.cdll, "pf_shared_alloc_bulk")
                return fragments_of(SharedFragment, self, arrays[0], n, size)
            finally:
                give_scratch(self, arrays)

    def free_many(self, frags) -> None:
        """Free fragments of this arena with one native call. Checked first: a fragment of
        another arena (ValueError), one freed already or in use (FragError) frees none."""
        frags = list(frags)
        count = len(frags)
        with self._lock:
            self._check_usable()
            arrays = take_scratch(self, count)
            try:
                claim_all(self, frags, SharedFragment, "arena", arrays[0])
                # pf_free finds each fragment's arena; every one is tried, and they stay freed
                if _hot.free_bulk(None, arrays[0], None, count):
                    raise last_error(_hot.cdll, "pf_cache_free_bulk")
            finally:
                give_scratch(self, arrays)

    def recv_burst(self, sock, n=32, size=2048, *, addresses=False) -> list:
        """FragCache.recv_burst into fragments of this arena (pyfrag.burst)."""
        from . import burst
        return burst.recv_burst(self, sock, n, size, addresses)

    def send_burst(self, sock, frags, address=None) -> int:
        """pyfrag.burst.send_burst(sock, frags, address)."""
        from . import burst
        return burst.send_burst(sock, frags, address)

    def _check_offset(self, offset) -> int:
        offset = check_int(offset, "offset")
        if offset < 0:
            raise ValueError("offset must be >= 0, not %d" % offset)
        return offset

    def receive(self, offset, length) -> SharedFragment:
        """Take ownership of a fragment another process sent as (offset, length)."""
        length = check_size(length)
        offset = self._check_offset(offset)
        handle = self._enter()
        try:
            address = loader.lib().pf_shared_address(handle, offset)
            if offset + length > self._map_bytes:
                raise ValueError("offset %d + length %d runs past the arena (%d bytes mapped)"
                                 % (offset, length, self._map_bytes))
            return self._fragment(address, length, offset)
        finally:
            self._leave()

    def free_offset(self, offset) -> None:
        """Free the fragment at offset (sent by another process) without making an object."""
        offset = self._check_offset(offset)
        cdll = loader.lib()
        handle = self._enter()
        try:
            cdll.pf_shared_free(handle, cdll.pf_shared_address(handle, offset))
        finally:
            self._leave()

    def offset_of(self, address) -> int:
        """The offset of an address inside the arena's frag pages (ValueError if outside)."""
        return self._call(loader.lib().pf_shared_offset, check_int(address, "address"))

    # -- the whole arena --
    @staticmethod
    def _stats_now(cdll, handle) -> SharedStats:
        struct = _stats_struct(cdll)
        snapshot = struct()
        cdll.pf_shared_stats(handle, ctypes.byref(snapshot), ctypes.sizeof(snapshot))
        if snapshot.size != ctypes.sizeof(struct) or snapshot.version != STATS_VERSION:
            raise LibraryError(
                "%s does not match this pyfrag package: its pf_shared_stats_t has size %d and "
                "version %d, pyfrag expects size %d and version %d; rebuild the library from "
                "the same checkout as the Python files (%s)"
                % (loader.library_path(), snapshot.size, snapshot.version, ctypes.sizeof(struct),
                   STATS_VERSION, loader.HOW_TO_FIX))
        return SharedStats(*(getattr(snapshot, name) for name in FIELDS))

    def stats(self) -> SharedStats:
        """A snapshot of the arena's counters (every process's together)."""
        cdll = loader.lib()
        return self._call(lambda handle: self._stats_now(cdll, handle))

    def reap(self) -> int:
        """Reap the processes that died attached; how many."""
        return self._call(loader.lib().pf_shared_reap)

    def hugepage_coverage(self, pid="self") -> SharedCoverage:
        """What /proc/PID/smaps says about this arena's mapping in process PID."""
        start, end = self._base, self._base + self._map_bytes
        self._checked_handle()
        sums = _sum_smaps(pid, lambda low, high: low < end and high > start, _SMAPS_KEYS)
        return SharedCoverage(**sums)

    def flush(self) -> None:
        """Give this thread's cache for the arena back (thread exit and close do it too)."""
        self._call(loader.lib().pf_shared_thread_flush)

    def close(self) -> None:
        """Detach (and remove the name if remove_on_close). Closing twice is fine."""
        super().close()

    @staticmethod
    def unlink(name, directory=None) -> None:
        """Remove the arena's name (attached processes keep their mapping)."""
        loader.lib().pf_shared_unlink(check_name(name), _check_directory(directory))

    def __repr__(self) -> str:
        state = "closed" if self.closed else "%s at 0x%x" % (self._backing, self._base)
        return "<SharedArena %r %s>" % (self._name, state)


# ---- fragments ----------------------------------------------------------------------

class SharedFragment(Fragment):
    """`size` bytes at `offset` in a SharedArena; a Fragment that can also be sent."""

    # Fragment.__init__(arena, address, size) makes one: the offset is computed, and
    # _gone is set only when the fragment goes other than by free() (unset: "freed")
    __slots__ = ("_gone",)

    @property
    def _offset(self) -> int:
        return self._address - self._cache._base

    @property
    def offset(self) -> int:
        """Where the fragment is, from the arena's base: what to send to another process."""
        return self._address - self._cache._base

    @property
    def _gone_how(self) -> str:
        try:
            return self._gone
        except AttributeError:
            return "freed"

    @property
    def arena(self) -> SharedArena:
        return self._cache

    def _gone_error(self) -> FragError:
        return FragError("fragment at offset %d was %s" % (self._offset, self._gone_how))

    def _new_base(self):
        base = super()._new_base()
        base._arena = self._cache  # a view's buffer keeps the mapping's owner alive
        return base

    def _access_locked(self):
        access = super()._access_locked()
        self._cache._fragments.add(self)  # close() ends this access before the unmap
        return access

    def _check_live_locked(self) -> None:
        # an access needs the mapping: the arena open (close() takes the lock to mark it)
        if not self._cache._open:
            raise self._cache._closed_error()
        if not self._live:
            raise self._gone_error()

    def _pin(self, export: bool = False) -> None:
        arena = self._cache
        with arena._lock:
            self._access_locked().pins += 1
            if not export:  # an access in progress is a call in flight; an export is not
                arena._count_in_locked()

    def _unpin(self, export: bool = False) -> None:
        arena = self._cache
        with arena._lock:
            self._access.pins -= 1
            if not export:
                arena._leave_locked()

    def free(self, exc_type=_NOT_EXITING, exc=None, traceback=None) -> None:
        """Give the fragment back, from any process that has the arena open; once. It is
        __exit__ too, as Fragment.free is (leaving a with block after a free() inside it
        does nothing)."""
        arena = self._cache
        lock = arena._lock
        lock.acquire()
        try:  # the lock is held: close() cannot unmap between the checks and the call
            if not self._live:
                if exc_type is _NOT_EXITING:
                    raise self._gone_error()
                return
            if not arena._open:
                raise arena._closed_error()
            if self._access is not None:
                self._end_access_locked("free")
            self._live = False  # (_gone unset: "freed")
            if _hot.shared_free(arena._handle, _c_void_p(self._address)):
                self._live = True
                raise last_error(_hot.cdll, "pf_shared_free")
        finally:
            lock.release()

    __exit__ = free

    def send(self) -> tuple:
        """Give up ownership without freeing: (offset, length) for another process's receive()."""
        self._give_up("send", lambda: setattr(self, "_gone", "sent"))
        return self._offset, self._size

    def _orphan_locked(self) -> None:
        if self._live:
            self._give_up_locked("close the arena of", lambda: setattr(
                self, "_gone", "left allocated when its arena was closed"))

    def __repr__(self) -> str:
        state = "" if self._live else " " + self._gone_how
        return "<SharedFragment offset=%d size=%d%s>" % (self._offset, self._size, state)


SharedArena._fragment_type = SharedFragment
