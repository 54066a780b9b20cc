# SPDX-License-Identifier: GPL-2.0-only
"""Typed handles: a pf_cache_t * and a pf_shared_t * are distinct ctypes pointer types.

Contract: `CacheHandle` and `ArenaHandle` are POINTER types to opaque
structs; the signature table declares every function that takes or returns
one with its own type, so passing an arena where a cache is expected (or
an int, or None) is a ctypes.ArgumentError ("TypeError: expected ...")
before C is called, never a call on the wrong object. A NULL handle is
false. `address(handle)` is the handle's value as an int (for repr and
messages). Importing this module loads nothing.
"""
from __future__ import annotations

import ctypes


class pf_cache(ctypes.Structure):  # noqa: N801 - the C name
    """Opaque: only ever behind a CacheHandle."""
    _fields_: list = []


class pf_shared(ctypes.Structure):  # noqa: N801 - the C name
    """Opaque: only ever behind an ArenaHandle."""
    _fields_: list = []


CacheHandle = ctypes.POINTER(pf_cache)
ArenaHandle = ctypes.POINTER(pf_shared)


def address(handle) -> int:
    """The pointer's value (0 for NULL)."""
    return ctypes.cast(handle, ctypes.c_void_p).value or 0
