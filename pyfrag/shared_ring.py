# SPDX-License-Identifier: GPL-2.0-only
"""SharedRing: a named single-producer single-consumer ring of fragments inside a SharedArena.

Contract:
- `SharedRing(arena, name, create=True, capacity=1024)` makes the ring in
  the arena (capacity a power of two in 2..2048; FileExistsError if the
  name is taken, FragError ENOSPC past 8 rings); `SharedRing(arena, name)`
  finds it by name in any process that has the arena open
  (FileNotFoundError if there is none). The ring lives as long as the arena;
  a SharedRing object is usable while its arena is open (FragError after).
- put(frag) hands a SharedFragment of this arena over: no copy, no pickle;
  the fragment is then "put in a ring" for this process (it may not be
  used or freed here any more), and get() in the consumer returns it as a
  SharedFragment that the consumer frees. A fragment of another arena, or
  not a SharedFragment, raises ValueError; a freed one, or one whose bytes
  are in use here (the rules of free()), FragError.
- Blocking as queue.Queue: block=True waits (timeout None: no limit),
  block=False or a timeout that runs out raises queue.Full / queue.Empty.
  put_many(frags) puts them all in order (blocking), or as many as fit
  (block=False: how many; queue.Full if none fit); the rest stay the
  caller's. get_many(n) returns 1..n fragments (blocking) or 0..n.
  Waiting happens in C outside every lock (other threads go on), in slices
  of at most 50 ms, so a close() of the arena from another thread ends a
  blocked get() or put() with FragError within one slice; each wait polls
  the ring for up to 20 us before it sleeps (pf_shared_ring_wait).
- One producer process and one consumer process at a time (threads of one
  process are serialized by the arena's lock): another live process's put
  (get) raises FragError (EBUSY); once that process died its role can be
  taken over, and the entries it left in the ring stay there. Waiting on a
  ring whose other side died raises BrokenPipeError once nothing is left
  to get (or no room to put).
"""
from __future__ import annotations

import ctypes
import errno as _errno
import queue
import time

from ._native import loader
from ._native.errors import FragError
from ._native.signatures import last_error, raw
from .cache import _hot, _new, check_int, fragments_of
from .shared import SharedArena, SharedFragment, check_name

CAPACITY_MAX = 2048  # PF_SHARED_RING_MAX_SLOTS
BATCH = 256  # entries per native call in put_many/get_many
WAIT_SLICE = 0.05  # seconds of one native wait: a close() waits for no longer


class _Calls:
    cdll = None

    def bind(self, cdll) -> None:
        if self.cdll is not cdll:
            # raw: no argtypes (pyfrag passes the handles, ctypes arrays and small ints)
            self.put = raw(cdll, "pf_shared_ring_put", ctypes.c_int)
            self.get = raw(cdll, "pf_shared_ring_get", ctypes.c_int)
            self.wait = raw(cdll, "pf_shared_ring_wait", ctypes.c_int)
            self.cdll = cdll


_calls = _Calls()


def _check_capacity(capacity) -> int:
    capacity = check_int(capacity, "capacity")
    if not 2 <= capacity <= CAPACITY_MAX or capacity & (capacity - 1):
        raise ValueError("capacity must be a power of two in 2..%d, not %d"
                         % (CAPACITY_MAX, capacity))
    return capacity


def _unclaim(frags) -> None:
    """Fragments claimed for a put that did not take them: live again, as before."""
    for frag in frags:
        frag._live = True
        del frag._gone


def _deadline(block, timeout):
    """None: wait forever; a monotonic time; or 0 for no wait at all."""
    if not block:
        return 0
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError("timeout must be >= 0 or None")
    return time.monotonic() + timeout


class SharedRing:
    """A ring of fragments in `arena`, created or found by name; see the module docstring."""

    def __init__(self, arena: SharedArena, name, *, create=False, capacity=1024):
        if not isinstance(arena, SharedArena):
            raise TypeError("a SharedRing lives in a SharedArena, not %s" % type(arena).__name__)
        raw_name = check_name(name)
        capacity = _check_capacity(capacity)
        cdll = loader.lib()
        _calls.bind(cdll)
        handle = arena._enter()
        try:
            if create:
                ring = cdll.pf_shared_ring_create(handle, raw_name, capacity)
            else:
                ring = cdll.pf_shared_ring_attach(handle, raw_name)
            self._capacity = cdll.pf_shared_ring_capacity(handle, ring)
        finally:
            arena._leave()
        self._arena = arena
        self._name = name
        self._ring = ctypes.c_void_p(ring)
        self._frags = (ctypes.c_void_p * BATCH)()  # scratch, used under the arena's lock
        self._lens = (ctypes.c_uint32 * BATCH)()

    @property
    def name(self) -> str:
        return self._name

    @property
    def arena(self) -> SharedArena:
        return self._arena

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        """Entries in the ring now (a snapshot)."""
        return self._arena._call(loader.lib().pf_shared_ring_count, self._ring)

    def __repr__(self) -> str:
        return "<SharedRing %r in %r capacity=%d>" % (self._name, self._arena.name,
                                                       self._capacity)

    # -- waiting (outside every lock) --
    def _wait(self, for_put: bool, deadline) -> None:
        """Wait (in slices of at most WAIT_SLICE s, so that a close() from another thread
        is not held up longer) until the ring may have changed; queue.Full/Empty past the
        deadline, BrokenPipeError when the other side died."""
        full = queue.Full if for_put else queue.Empty
        if deadline == 0:
            raise full()
        left = WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())
        handle = self._arena._enter()
        try:
            failed = _calls.wait(handle, self._ring, int(for_put),
                                  ctypes.c_longlong(max(0, int(left * 1e9))))
            err = ctypes.get_errno() if failed else 0
        finally:
            self._arena._leave()
        if err == _errno.ETIMEDOUT:
            if deadline is not None and time.monotonic() >= deadline:
                raise full()
            return  # a slice ended: the caller tries again (and sees a close)
        if err == _errno.EPIPE:
            raise BrokenPipeError(err, "SharedRing %r: the process on the other side died"
                                  % self._name)
        if failed:
            raise last_error(_calls.cdll, "pf_shared_ring_wait")

    # -- putting --
    def _put_some(self, frags) -> int:
        """One native put of frags (<= BATCH) under the arena's lock: how many went."""
        arena = self._arena
        with arena._lock:
            if not arena._open:
                raise arena._closed_error()
            claimed = []
            addresses, lens, claim = self._frags, self._lens, claimed.append
            try:
                for i, frag in enumerate(frags):
                    if type(frag) is not SharedFragment or frag._cache is not arena:
                        raise ValueError("a ring of arena %r takes SharedFragments of that "
                                         "arena; item %d is %r" % (arena.name, i, frag))
                    if not frag._live:
                        raise frag._gone_error()
                    if frag._access is not None:
                        frag._end_access_locked("put in a ring")
                    frag._live = False
                    frag._gone = "put in a ring"  # (undone below for those that stay)
                    claim(frag)
                    addresses[i] = frag._address
                    lens[i] = frag._size
                put = _calls.put(arena._handle, self._ring, self._frags, self._lens, len(frags))
                error = last_error(_calls.cdll, "pf_shared_ring_put") if put < 0 else None
            except BaseException:
                _unclaim(claimed)
                raise
            if put < len(claimed):
                _unclaim(claimed[max(put, 0):])  # did not fit, or the put failed: the caller's
        if error is not None:
            raise error
        return put

    def _put_one(self, frag) -> bool:
        """_put_some for one fragment, without its lists (put()'s path): whether it went."""
        arena = self._arena
        lock = arena._lock
        lock.acquire()
        try:
            if not arena._open:
                raise arena._closed_error()
            if type(frag) is not SharedFragment or frag._cache is not arena:
                raise ValueError("a ring of arena %r takes SharedFragments of that arena, "
                                 "not %r" % (arena.name, frag))
            if not frag._live:
                raise frag._gone_error()
            if frag._access is not None:
                frag._end_access_locked("put in a ring")
            addresses, lens = self._frags, self._lens
            addresses[0], lens[0] = frag._address, frag._size
            put = None
            try:
                frag._live = False  # claimed before the call, as _put_some does
                frag._gone = "put in a ring"
                put = _calls.put(arena._handle, self._ring, addresses, lens, 1)
            finally:
                if put != 1:  # full, failed, or interrupted before the call: the caller's
                    _unclaim((frag,))
            if put < 0:
                raise last_error(_calls.cdll, "pf_shared_ring_put")
            return put == 1
        finally:
            lock.release()

    def put(self, frag, block=True, timeout=None) -> None:
        """Hand one fragment to the consumer (queue.Full if it cannot go in time)."""
        deadline = _deadline(block, timeout)
        while not self._put_one(frag):
            self._wait(True, deadline)

    def put_nowait(self, frag) -> None:
        self.put(frag, False)

    def put_many(self, frags, block=True, timeout=None) -> int:
        """Put the fragments in order; how many went (all, when blocking)."""
        frags = list(frags)
        deadline = _deadline(block, timeout)
        done = 0
        while done < len(frags):
            put = self._put_some(frags if not done and len(frags) <= BATCH
                                 else frags[done:done + BATCH])
            done += put
            if not put and done < len(frags):
                if deadline == 0 and done:
                    return done
                self._wait(True, deadline)
        return done

    # -- getting --
    def _get_some(self, n: int) -> list:
        arena = self._arena
        with arena._lock:
            arena._check_usable()
            got = _calls.get(arena._handle, self._ring, self._frags, self._lens, n)
            if got < 0:
                raise last_error(_calls.cdll, "pf_shared_ring_get")
            return fragments_of(SharedFragment, arena, self._frags, got, self._lens)

    def _get_one(self):
        """_get_some(1) without its lists (get()'s path): the fragment, or None."""
        # (the lock-and-check prologue is _put_one's, inline in both: a shared helper
        # would be one more Python call per packet)
        arena = self._arena
        lock = arena._lock
        lock.acquire()
        try:
            if not arena._open:
                raise arena._closed_error()
            addresses, lens = self._frags, self._lens
            got = _calls.get(arena._handle, self._ring, addresses, lens, 1)
            if got != 1:
                if got < 0:
                    raise last_error(_calls.cdll, "pf_shared_ring_get")
                return None
            try:
                frag = _new(SharedFragment)
                frag._cache, frag._address = arena, addresses[0]
                frag._size = frag._room = lens[0]
                frag._live, frag._access = True, None
                return frag
            except BaseException:  # (a KeyboardInterrupt): nothing reached the caller
                _hot.free_bulk(None, addresses, None, 1)
                raise
        finally:
            lock.release()

    def get(self, block=True, timeout=None) -> SharedFragment:
        """The next fragment (queue.Empty if none comes in time); the caller frees it."""
        deadline = _deadline(block, timeout)
        while True:
            frag = self._get_one()
            if frag is not None:
                return frag
            self._wait(False, deadline)

    def get_nowait(self) -> SharedFragment:
        return self.get(False)

    def get_many(self, n=32, block=True, timeout=None) -> list:
        """Up to n fragments: at least one when blocking (queue.Empty on timeout)."""
        n = check_int(n, "n")
        if not 1 <= n <= BATCH:
            raise ValueError("get_many takes 1..%d at a time, not %d" % (BATCH, n))
        deadline = _deadline(block, timeout)
        while True:
            frags = self._get_some(n)
            if frags or deadline == 0:
                return frags
            self._wait(False, deadline)

    def __reduce__(self):
        raise TypeError("a SharedRing cannot be pickled: find it by name in the other process, "
                        "SharedRing(arena, name)")

    __reduce_ex__ = __copy__ = __deepcopy__ = lambda self, *args: self.__reduce__()
