# SPDX-License-Identifier: GPL-2.0-only
"""Find, load and declare libpyfrag.so; turn C failures into exceptions.

Contract:
- Nothing is loaded at import time. `lib()` loads the library on first use
  (thread-safe), from the first of: $PYFRAG_LIBRARY (if set, only that), the
  package folder, build/release/ under the repository root.
- On load it checks pf_abi_version() == ABI_VERSION and the stats struct
  (size and version), then runs the checks registered with `on_load()`.
  Any mismatch raises LibraryError saying which file, what, and what to do.
- Every C function is declared once, in `_SIGNATURES`. Calls that fail
  raise: EINVAL/E2BIG -> ValueError, ENOMEM -> MemoryError, ENOENT ->
  FileNotFoundError, EEXIST -> FileExistsError, EACCES/EPERM ->
  PermissionError, EPROTO -> IncompatibleArenaError (a FragError), anything
  else -> FragError; each carries `.errno` and the library's own sentence.
"""
from __future__ import annotations

import ctypes
import errno as _errno
import os
import threading
from ctypes import (POINTER, c_char_p, c_int, c_longlong, c_size_t, c_uint, c_uint32, c_uint64,
                    c_void_p)

ABI_VERSION = 2
STATS_VERSION = 3
LIBRARY_NAME = "libpyfrag.so"
ENV_LIBRARY = "PYFRAG_LIBRARY"

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(PACKAGE_DIR)

HOW_TO_FIX = (
    "run `scons` at the repository root (it builds pyfrag/libpyfrag.so), "
    "or `pip install .`, or set PYFRAG_LIBRARY to the path of a built libpyfrag.so"
)

c_uintptr = c_uint64 if ctypes.sizeof(c_void_p) == 8 else c_uint32


class FragError(Exception):
    """A pyfrag failure that is neither a bad argument nor lack of memory."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.message = message
        self.errno = errno


class LibraryError(FragError):
    """libpyfrag.so could not be found, loaded, or does not match this package."""


class IncompatibleArenaError(FragError):
    """A shared arena was made by a library of another layout or version (EPROTO)."""


class PageInfo(ctypes.Structure):
    _fields_ = [("head", c_uintptr), ("size", c_uint32), ("order", c_uint32),
                ("refcount", ctypes.c_int32), ("flags", c_uint32)]


class CacheInfo(ctypes.Structure):
    _fields_ = [("page", c_uintptr), ("page_size", c_uint32), ("offset", c_uint32),
                ("bias", c_uint32), ("pfmemalloc", c_uint32)]


# ---- errors -------------------------------------------------------------------

_OS_ERRORS = {_errno.ENOENT: FileNotFoundError, _errno.EEXIST: FileExistsError,
              _errno.EACCES: PermissionError, _errno.EPERM: PermissionError}


def error_for(err: int, message: str) -> Exception:
    """The exception a failed call with errno `err` raises."""
    if err in _OS_ERRORS:
        return _OS_ERRORS[err](err, message)  # .errno, .strerror = message
    if err == _errno.EPROTO:
        return IncompatibleArenaError(message, err)
    if err in (_errno.EINVAL, _errno.E2BIG):
        exc: Exception = ValueError(message)
    elif err == _errno.ENOMEM:
        exc = MemoryError(message)
    else:
        return FragError(message, err)
    exc.errno = err  # type: ignore[attr-defined]
    return exc


def _raise_last_error(func):
    err = ctypes.get_errno()  # read first: the next ctypes call overwrites it
    message = _declared.pf_last_error_message()
    err = err or _declared.pf_last_error() or _errno.EIO
    text = message.decode(errors="replace") if message else os.strerror(err)
    name = _errno.errorcode.get(err, str(err))
    raise error_for(err, "%s: %s [%s]" % (func.__name__, text, name))


def _check_pointer(result, func, args):
    if not result:
        _raise_last_error(func)
    return result


def _check_status(result, func, args):
    if result == -1:
        _raise_last_error(func)
    return result


def _check_offset(result, func, args):
    if result == 2**64 - 1:  # UINT64_MAX
        _raise_last_error(func)
    return result


# ---- the C functions ----------------------------------------------------------

_SIGNATURES = [
    # name, argtypes, restype, errcheck
    ("pf_version", [], c_char_p, None),
    ("pf_abi_version", [], c_int, None),
    ("pf_init", [], c_int, _check_status),
    ("pf_arena_range", [POINTER(c_uintptr), POINTER(c_size_t)], c_int, _check_status),
    ("pf_cache_create", [], c_void_p, _check_pointer),
    ("pf_cache_destroy", [c_void_p], None, None),
    ("pf_cache_alloc", [c_void_p, c_size_t], c_void_p, _check_pointer),
    ("pf_cache_alloc_align", [c_void_p, c_size_t, c_size_t], c_void_p, _check_pointer),
    ("pf_cache_free", [c_void_p, c_void_p, c_size_t], c_int, _check_status),
    ("pf_cache_drain", [c_void_p], None, None),
    ("pf_alloc", [c_size_t], c_void_p, _check_pointer),
    ("pf_alloc_align", [c_size_t, c_size_t], c_void_p, _check_pointer),
    ("pf_thread_cache", [], c_void_p, _check_pointer),
    ("pf_thread_flush", [], None, None),
    ("pf_free", [c_void_p], c_int, _check_status),
    ("pf_trim", [], c_size_t, None),
    ("pf_option_set", [c_char_p, c_char_p], c_int, _check_status),
    ("pf_option_get", [c_char_p], c_longlong, _check_status),
    ("pf_option_name", [c_size_t], c_char_p, None),
    ("pf_option_default", [c_size_t], c_char_p, None),
    ("pf_option_doc", [c_size_t], c_char_p, None),
    ("pf_stats_get", [c_void_p, c_size_t], c_int, _check_status),
    ("pf_stats_field_count", [], c_size_t, None),
    ("pf_stats_field_name", [c_size_t], c_char_p, None),
    ("pf_stats_field_doc", [c_size_t], c_char_p, None),
    ("pf_page_query", [c_void_p, POINTER(PageInfo)], c_int, _check_status),
    ("pf_cache_query", [c_void_p, POINTER(CacheInfo)], c_int, _check_status),
    # shared arenas (pyfrag_shared.h)
    ("pf_shared_create", [c_char_p, c_size_t, c_uint, c_int, c_char_p], c_void_p, _check_pointer),
    ("pf_shared_attach", [c_char_p, c_char_p], c_void_p, _check_pointer),
    ("pf_shared_detach", [c_void_p], c_int, _check_status),
    ("pf_shared_unlink", [c_char_p, c_char_p], c_int, _check_status),
    ("pf_shared_alloc", [c_void_p, c_size_t], c_void_p, _check_pointer),
    ("pf_shared_alloc_align", [c_void_p, c_size_t, c_size_t], c_void_p, _check_pointer),
    ("pf_shared_free", [c_void_p, c_void_p], c_int, _check_status),
    ("pf_shared_offset", [c_void_p, c_void_p], c_uint64, _check_offset),
    ("pf_shared_address", [c_void_p, c_uint64], c_void_p, _check_pointer),
    ("pf_shared_reap", [c_void_p], c_size_t, None),
    ("pf_shared_thread_flush", [c_void_p], None, None),
    ("pf_shared_path", [c_void_p], c_char_p, None),
    ("pf_shared_stats", [c_void_p, c_void_p, c_size_t], c_int, _check_status),
    ("pf_shared_stats_field_count", [], c_size_t, None),
    ("pf_shared_stats_field_name", [c_size_t], c_char_p, None),
    ("pf_shared_stats_field_doc", [c_size_t], c_char_p, None),
    ("pf_last_error", [], c_int, None),
    ("pf_last_error_message", [], c_char_p, None),
]


def _ffi(cdll, name, argtypes, restype, errcheck):
    func = getattr(cdll, name)
    func.argtypes = argtypes
    func.restype = restype
    if errcheck is not None:
        func.errcheck = errcheck
    return func


def declare_extra(cdll, signatures, path: str, what: str):
    """
    Declare (name, argtypes, restype) functions of a tool library (the stress
    loops'); LibraryError naming the first missing one if it lacks any.
    """
    for name, argtypes, restype in signatures:
        func = getattr(cdll, name, None)
        if func is None:
            raise LibraryError("%s has no %s (needed for %s): it is older than this package; %s"
                               % (path, name, what, HOW_TO_FIX))
        func.argtypes, func.restype = argtypes, restype


_tools: dict = {}


def tool_library(name: str):
    """
    A tool library (libpyfrag_stress.so) from the folder of the loaded
    libpyfrag.so, loaded once, after it: its own reference to libpyfrag.so
    resolves to the copy already loaded, so both share one allocator.
    """
    lib()
    with _load_lock:
        if name not in _tools:
            path = os.path.join(os.path.dirname(_path), name)
            if not os.path.isfile(path):
                raise LibraryError("cannot find %s beside %s; %s" % (name, _path, HOW_TO_FIX))
            try:
                _tools[name] = (ctypes.CDLL(path, use_errno=True), path)
            except OSError as exc:
                raise LibraryError("cannot load %s: %s; %s" % (path, exc, HOW_TO_FIX)) from None
    return _tools[name]


# ---- finding and loading ------------------------------------------------------

_declared = None  # the CDLL once its functions are declared (used by errcheck)
_loaded = None  # the CDLL once every check passed
_path: str | None = None
_stats_struct = None
_load_lock = threading.Lock()
_load_checks = []


def on_load(check) -> None:
    """Run check(cdll, path) at load time (before anyone uses the library)."""
    _load_checks.append(check)


def candidates() -> list[str]:
    """Where the library is looked for, in order."""
    explicit = os.environ.get(ENV_LIBRARY)
    if explicit:
        return [os.path.abspath(explicit)]
    return [os.path.join(PACKAGE_DIR, LIBRARY_NAME),
            os.path.join(REPO_ROOT, "build", "release", LIBRARY_NAME)]


def _find() -> str:
    paths = candidates()
    for path in paths:
        if os.path.isfile(path):
            return path
    where = ("PYFRAG_LIBRARY=%s" % paths[0]) if os.environ.get(ENV_LIBRARY) else ", ".join(paths)
    raise LibraryError("cannot find %s (looked at: %s); %s" % (LIBRARY_NAME, where, HOW_TO_FIX))


def stats_struct_for(names: list[str]):
    """The ctypes Structure matching pf_stats_t for these counter names."""
    fields = [("size", c_uint32), ("version", c_uint32)] + [(n, c_uint64) for n in names]
    return type("pf_stats_t", (ctypes.Structure,), {"_fields_": fields})


def check_stats_header(path: str, struct, size: int, version: int) -> None:
    """Raise LibraryError unless the library's stats header matches `struct`."""
    expected = ctypes.sizeof(struct)
    if size == expected and version == STATS_VERSION:
        return
    raise LibraryError(
        "%s does not match this pyfrag package: its pf_stats_t has size %d and version %d, "
        "pyfrag expects size %d (%d counters) and version %d; rebuild the library from the "
        "same checkout as the Python files (%s)"
        % (path, size, version, expected, len(struct._fields_) - 2, STATS_VERSION, HOW_TO_FIX))


def _check_stats(cdll, path):
    count = cdll.pf_stats_field_count()
    names = [cdll.pf_stats_field_name(i).decode() for i in range(count)]
    struct = stats_struct_for(names)
    snapshot = struct()
    cdll.pf_stats_get(ctypes.byref(snapshot), ctypes.sizeof(snapshot))
    check_stats_header(path, struct, snapshot.size, snapshot.version)
    return struct


def _open(path: str):
    global _declared
    try:
        cdll = ctypes.CDLL(path, use_errno=True)
    except OSError as exc:
        raise LibraryError("cannot load %s: %s; %s" % (path, exc, HOW_TO_FIX)) from None
    try:
        for row in _SIGNATURES:
            _ffi(cdll, *row)
    except AttributeError as exc:
        raise LibraryError("%s lacks a pyfrag function (%s); %s" % (path, exc, HOW_TO_FIX)) from None
    _declared = cdll
    abi = cdll.pf_abi_version()
    if abi != ABI_VERSION:
        raise LibraryError("%s has ABI version %d, this pyfrag needs %d; %s"
                           % (path, abi, ABI_VERSION, HOW_TO_FIX))
    return cdll


def lib():
    """The loaded, checked library (loading it on first call)."""
    global _loaded, _path, _stats_struct
    if _loaded is not None:
        return _loaded
    with _load_lock:
        if _loaded is None:
            path = _find()
            cdll = _open(path)
            struct = _check_stats(cdll, path)
            for check in _load_checks:
                check(cdll, path)
            _path, _stats_struct = path, struct
            _loaded = cdll
    return _loaded


def is_loaded() -> bool:
    return _loaded is not None


def library_path() -> str:
    """Absolute path of the loaded libpyfrag.so (loading it if needed)."""
    lib()
    return _path  # type: ignore[return-value]


def stats_snapshot():
    """One pf_stats_get snapshot as the checked ctypes struct."""
    cdll = lib()
    snapshot = _stats_struct()
    cdll.pf_stats_get(ctypes.byref(snapshot), ctypes.sizeof(snapshot))
    return snapshot


def arena_range() -> tuple[int, int]:
    """(base, size) of the arena; reserves it if that has not happened yet."""
    base, size = c_uintptr(), c_size_t()
    lib().pf_arena_range(ctypes.byref(base), ctypes.byref(size))
    return base.value, size.value
