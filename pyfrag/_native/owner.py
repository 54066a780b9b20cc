# SPDX-License-Identifier: GPL-2.0-only
"""The one base class of the objects that own a native handle (FragCache, SharedArena).

Contract:
- `_own(handle, release, *args)` takes ownership: release(handle, *args)
  runs exactly once, under the owner's lock: by close(), at interpreter
  exit, or when the object is collected (weakref.finalize, which holds no
  reference to the object).
- Every call into C on the handle is a call in flight: `_enter()` checks
  that the object may be used here (`_check_usable`: open, plus what a
  subclass adds, such as the owner thread), counts the call and returns the
  handle; `_leave()` ends it; `_call(func, *args)` is func(handle, *args)
  between the two. The lock (reentrant) is held only to count.
- close() is refused with FragError ("re-entered") on a thread that holds
  the lock, has a call in flight or is closing already: a signal handler, a
  __del__ or a gc callback that ran in the middle of such a call, which
  would wait for itself. Otherwise it waits for another thread's close to
  end, applies the subclass's `_check_close`, marks the object closed (later
  calls raise `_closed_error()`), waits for the calls in flight (waits of
  0.05 s: the backstop for a wakeup lost to an asynchronous exception), runs
  `_before_release()` and releases. If a step raises, the object is usable
  again while it still owns the handle, and the exception propagates.
  Closing twice is fine.
- At interpreter exit every owner still open is closed the same way, from
  one atexit hook registered after weakref's own (so it runs first; the
  finalizers' own exit run is off), without `_check_close`: daemon threads
  may still be inside calls, which it waits for. An owner that cannot close
  then gets `_exit_failed()` and stays as it is.
- `not_copyable` is the __copy__/__reduce__ of objects that own native
  memory: TypeError.
"""
from __future__ import annotations

import atexit
import threading
import weakref

from .errors import FragError

_get_ident = threading.get_ident
_live = weakref.WeakSet()  # owners still open, for the exit hook
_registry_lock = threading.Lock()
_exit_hook: list = []  # [hook] once registered


def _close_all_at_exit() -> None:
    with _registry_lock:
        owners = list(_live)
    for owner in owners:
        try:
            owner._close_at_exit()
        except Exception:  # noqa: BLE001 - exiting: the memory goes with the process
            pass


def _release(lock, release, handle, *args) -> None:
    """The finalizer: no reference to the owner object."""
    with lock:
        release(handle, *args)


def reentered(what: str) -> FragError:
    return FragError("%s re-entered from inside a call on it in the same thread (a signal "
                     "handler, __del__ or gc callback that ran in the middle of that call); "
                     "close it after the call returns" % what)


def not_copyable(self, *args):
    raise TypeError("a %s owns native memory and cannot be copied or pickled (bytes(frag) "
                    "copies a fragment's contents)" % type(self).__name__)


class NativeOwner:
    """An object owning one native handle; see the module docstring."""

    # -- what subclasses say --
    def _closed_error(self) -> FragError:
        return FragError("%s is closed" % type(self).__name__)

    def _close_what(self) -> str:
        """How re-entry messages name close()."""
        return "%s.close()" % type(self).__name__

    def _check_usable(self) -> None:
        """Raise unless the handle may be used from this thread now."""
        if not self._open:
            raise self._closed_error()

    def _check_close(self) -> None:
        """Raise unless this thread may close the object (it is still open)."""

    def _before_release(self) -> None:
        """Last step of a close, calls in flight done, lock held; raising keeps it open."""

    def _exit_failed(self) -> None:
        """At exit, after a close that raised."""

    # -- ownership --
    def _own(self, handle, release, *args) -> None:
        self._handle = handle
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)  # wakes a close waiting for calls
        self._open = True
        self._calls = 0
        self._callers: dict = {}  # thread ident -> its calls in flight
        self._closing = None  # ident of the thread closing the object
        # scratch ctypes arrays of the bulk calls (pyfrag.cache.take_scratch, pyfrag.burst),
        # made on first use; set here so that the object keeps its fast attribute layout
        # (reaching for __dict__ would cost every later attribute access)
        self._scratch = self._recv_arrays = None
        self._finalizer = weakref.finalize(self, _release, self._lock, release, handle, *args)
        self._finalizer.atexit = False  # _close_all_at_exit closes it, under the lock
        with _registry_lock:
            if not _exit_hook:  # registered after weakref's own exit hook: runs before it
                _exit_hook.append(atexit.register(_close_all_at_exit))
            _live.add(self)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def _checked_handle(self):
        self._check_usable()
        return self._handle

    @property
    def _as_parameter_(self):
        # lets the object be passed to the C functions directly (ctypes wraps a FragError
        # raised here in ctypes.ArgumentError; pyfrag itself passes handles, in flight)
        return self._checked_handle()

    # -- calls in flight --
    def _count_in_locked(self) -> None:
        self._calls += 1
        callers, me = self._callers, _get_ident()
        callers[me] = callers.get(me, 0) + 1

    def _leave_locked(self) -> None:
        callers, me = self._callers, _get_ident()
        left = callers[me] - 1
        if left:
            callers[me] = left
        else:
            del callers[me]
        self._calls -= 1
        if not self._calls and not self._open:
            self._idle.notify_all()

    def _enter(self):
        """Count a call in flight (close() waits for it); the handle."""
        with self._lock:
            self._check_usable()
            self._count_in_locked()
        return self._handle

    def _leave(self) -> None:
        with self._lock:
            self._leave_locked()

    def _call(self, func, *args):
        """func(handle, *args) as a call in flight."""
        handle = self._enter()
        try:
            return func(handle, *args)
        finally:
            self._leave()

    # -- closing --
    def close(self) -> None:
        """Release the handle once the calls in flight are done. Closing twice is fine."""
        me = _get_ident()
        if self._lock._is_owned() or me in self._callers or self._closing == me:
            raise reentered(self._close_what())  # it would wait for itself
        with self._lock:
            if self._wait_for_other_close():
                self._check_close()
                self._shut_locked(me)

    def _wait_for_other_close(self) -> bool:
        """(lock held) Wait while another thread closes; whether there is anything to close."""
        while self._closing is not None:
            self._idle.wait(0.05)
        return self._finalizer.alive

    def _shut_locked(self, me: int) -> None:
        self._open, self._closing = False, me  # later calls raise
        try:
            while self._calls:  # calls in flight finish first
                self._idle.wait(0.05)  # (the timeout: a wakeup lost to an async exception)
            self._before_release()
            self._finalizer()
        except BaseException:
            self._open = self._finalizer.alive  # still owned: usable again
            raise
        finally:
            self._closing = None
            self._idle.notify_all()

    def _close_at_exit(self) -> None:
        try:
            with self._lock:
                if self._wait_for_other_close():
                    self._shut_locked(_get_ident())
        except Exception:  # noqa: BLE001 - reported through the hook
            self._exit_failed()

    def __enter__(self):
        self._checked_handle()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    __copy__ = __deepcopy__ = __reduce_ex__ = __reduce__ = not_copyable
