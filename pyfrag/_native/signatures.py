# SPDX-License-Identifier: GPL-2.0-only
"""The one table of libpyfrag.so's C signatures, and the C structs it names.

Contract:
- `SIGNATURES` lists every function pyfrag calls: (name, argtypes, restype,
  check). Handles are typed (pyfrag._native.handles). `check` says how a
  failure shows: POINTER (NULL), STATUS (-1), OFFSET (UINT64_MAX), or None
  (the call cannot fail). `raw(cdll, name, restype)` is the same function
  without errcheck and without argtypes (ctypes' argument conversion is
  most of a call's cost), for the per-fragment and burst calls: their
  arguments are made by pyfrag itself, and they test the result and raise
  `last_error(cdll, name)` themselves.
- `declare(cdll)` sets argtypes, restype and errcheck of every function on
  a loaded library; AttributeError names the first one it lacks. A checked
  call that fails raises pyfrag._native.errors.error_for(errno, text)
  with the library's sentence (pf_last_error_message), the function's name
  and the errno's symbol, read from that same library.
- Importing this module loads nothing.
"""
from __future__ import annotations

import ctypes
import errno as _errno
import os
from ctypes import (POINTER, c_char_p, c_int, c_longlong, c_size_t, c_uint, c_uint32, c_uint64,
                    c_void_p)

from .errors import error_for
from .handles import ArenaHandle, CacheHandle

c_uintptr = c_uint64 if ctypes.sizeof(c_void_p) == 8 else c_uint32


class PageInfo(ctypes.Structure):
    """pf_page_info_t (pf_page_query)."""
    _fields_ = [("head", c_uintptr), ("size", c_uint32), ("order", c_uint32),
                ("refcount", ctypes.c_int32), ("flags", c_uint32)]


class CacheInfo(ctypes.Structure):
    """pf_cache_info_t (pf_cache_query)."""
    _fields_ = [("page", c_uintptr), ("page_size", c_uint32), ("offset", c_uint32),
                ("bias", c_uint32), ("pfmemalloc", c_uint32)]


POINTER_, STATUS, OFFSET = "pointer", "status", "offset"  # how a failed call shows
_FAILED = {STATUS: lambda result: result == -1,
           OFFSET: lambda result: result == 2**64 - 1,  # UINT64_MAX
           POINTER_: lambda result: not result}

SIGNATURES = [
    # name, argtypes, restype, check
    ("pf_version", [], c_char_p, None),
    ("pf_abi_version", [], c_int, None),
    ("pf_init", [], c_int, STATUS),
    ("pf_arena_range", [POINTER(c_uintptr), POINTER(c_size_t)], c_int, STATUS),
    ("pf_cache_create", [], CacheHandle, POINTER_),
    ("pf_cache_destroy", [CacheHandle], None, None),
    ("pf_cache_alloc", [CacheHandle, c_size_t], c_void_p, POINTER_),
    ("pf_cache_alloc_align", [CacheHandle, c_size_t, c_size_t], c_void_p, POINTER_),
    ("pf_cache_free", [CacheHandle, c_void_p, c_size_t], c_int, STATUS),
    ("pf_cache_drain", [CacheHandle], None, None),
    # bursts: Python checks every argument and reads errno itself (raw())
    ("pf_cache_alloc_bulk", [CacheHandle, c_size_t, c_size_t, c_void_p], c_int, STATUS),
    ("pf_cache_free_bulk", [CacheHandle, c_void_p, c_void_p, c_size_t], c_int, STATUS),
    ("pf_recv_burst", [CacheHandle, c_int, c_size_t, c_uint, c_int, c_void_p, c_void_p,
                       c_void_p, c_void_p], c_int, STATUS),
    ("pf_shared_recv_burst", [ArenaHandle, c_int, c_size_t, c_uint, c_int, c_void_p, c_void_p,
                              c_void_p, c_void_p], c_int, STATUS),
    ("pf_send_burst", [c_int, c_void_p, c_void_p, c_uint, c_void_p, c_uint32, c_int], c_int,
     STATUS),
    ("pf_alloc", [c_size_t], c_void_p, POINTER_),
    ("pf_alloc_align", [c_size_t, c_size_t], c_void_p, POINTER_),
    ("pf_thread_cache", [], CacheHandle, POINTER_),
    ("pf_thread_flush", [], None, None),
    ("pf_free", [c_void_p], c_int, STATUS),
    ("pf_trim", [], c_size_t, None),
    ("pf_option_set", [c_char_p, c_char_p], c_int, STATUS),
    ("pf_option_get", [c_char_p], c_longlong, STATUS),
    ("pf_option_name", [c_size_t], c_char_p, None),
    ("pf_option_default", [c_size_t], c_char_p, None),
    ("pf_option_doc", [c_size_t], c_char_p, None),
    ("pf_stats_get", [c_void_p, c_size_t], c_int, STATUS),
    ("pf_stats_field_count", [], c_size_t, None),
    ("pf_stats_field_name", [c_size_t], c_char_p, None),
    ("pf_stats_field_doc", [c_size_t], c_char_p, None),
    ("pf_page_query", [c_void_p, POINTER(PageInfo)], c_int, STATUS),
    ("pf_cache_query", [CacheHandle, POINTER(CacheInfo)], c_int, STATUS),
    # shared arenas (pyfrag_shared.h)
    ("pf_shared_create", [c_char_p, c_size_t, c_uint, c_int, c_char_p], ArenaHandle, POINTER_),
    ("pf_shared_attach", [c_char_p, c_char_p], ArenaHandle, POINTER_),
    ("pf_shared_detach", [ArenaHandle], c_int, STATUS),
    ("pf_shared_unlink", [c_char_p, c_char_p], c_int, STATUS),
    ("pf_shared_alloc", [ArenaHandle, c_size_t], c_void_p, POINTER_),
    ("pf_shared_alloc_align", [ArenaHandle, c_size_t, c_size_t], c_void_p, POINTER_),
    ("pf_shared_free", [ArenaHandle, c_void_p], c_int, STATUS),
    ("pf_shared_alloc_bulk", [ArenaHandle, c_size_t, c_size_t, c_void_p], c_int, STATUS),
    ("pf_shared_offset", [ArenaHandle, c_void_p], c_uint64, OFFSET),
    ("pf_shared_address", [ArenaHandle, c_uint64], c_void_p, POINTER_),
    ("pf_shared_reap", [ArenaHandle], c_size_t, None),
    ("pf_shared_thread_flush", [ArenaHandle], None, None),
    ("pf_shared_path", [ArenaHandle], c_char_p, None),
    ("pf_shared_stats", [ArenaHandle, c_void_p, c_size_t], c_int, STATUS),
    ("pf_shared_stats_field_count", [], c_size_t, None),
    ("pf_shared_stats_field_name", [c_size_t], c_char_p, None),
    ("pf_shared_stats_field_doc", [c_size_t], c_char_p, None),
    # rings in a shared arena (put/get/wait raw(): pyfrag.shared_ring reads errno)
    ("pf_shared_ring_create", [ArenaHandle, c_char_p, c_uint32], c_void_p, POINTER_),
    ("pf_shared_ring_attach", [ArenaHandle, c_char_p], c_void_p, POINTER_),
    ("pf_shared_ring_capacity", [ArenaHandle, c_void_p], c_int, STATUS),
    ("pf_shared_ring_count", [ArenaHandle, c_void_p], c_int, STATUS),
    ("pf_shared_ring_put", [ArenaHandle, c_void_p, c_void_p, c_void_p, c_uint], c_int, STATUS),
    ("pf_shared_ring_get", [ArenaHandle, c_void_p, c_void_p, c_void_p, c_uint], c_int, STATUS),
    ("pf_shared_ring_wait", [ArenaHandle, c_void_p, c_int, c_longlong], c_int, STATUS),
    ("pf_last_error", [], c_int, None),
    ("pf_last_error_message", [], c_char_p, None),
]


def last_error(cdll, name: str) -> Exception:
    """The exception for the failed call `name` that just returned (read errno first)."""
    err = ctypes.get_errno()  # read first: the next ctypes call overwrites it
    message = cdll.pf_last_error_message()
    err = err or cdll.pf_last_error() or _errno.EIO
    text = message.decode(errors="replace") if message else os.strerror(err)
    return error_for(err, "%s: %s [%s]" % (name, text, _errno.errorcode.get(err, str(err))))


def _errcheck(cdll, failed):
    """The errcheck raising the library's error for a result that `failed`."""
    def check(result, func, args):
        if failed(result):
            raise last_error(cdll, func.__name__)
        return result
    return check


_TABLE = {row[0]: row for row in SIGNATURES}


class Address(c_void_p):
    """restype of raw() allocators: ctypes returns the instance itself (no int conversion),
    and the instance goes back to C as it is."""


def raw(cdll, name: str, restype):
    """`name` with no argtypes and no errcheck, for the per-fragment calls: every argument
    is made by pyfrag itself (a handle, an Address or c_void_p, an int checked before)."""
    _TABLE[name]  # declared in SIGNATURES like every other function (KeyError if not)
    func = cdll[name]  # indexing makes a new function object; cdll.name stays checked
    func.restype = restype
    return func


def declare(cdll) -> None:
    """Declare every function of SIGNATURES on cdll (AttributeError if it lacks one)."""
    checks = {kind: _errcheck(cdll, failed) for kind, failed in _FAILED.items()}
    for name, argtypes, restype, check in SIGNATURES:
        func = getattr(cdll, name)
        func.argtypes = argtypes
        func.restype = restype
        if check is not None:
            func.errcheck = checks[check]
