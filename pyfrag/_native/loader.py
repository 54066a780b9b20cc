# SPDX-License-Identifier: GPL-2.0-only
"""Find, load and check libpyfrag.so, and the tool libraries beside it.

Contract:
- Nothing is loaded at import time. `lib()` loads the library on first use
  (thread-safe), from the first of: $PYFRAG_LIBRARY (if set, only that), the
  package folder, build/release/ under the repository root (`candidates()`;
  `find()` is the first that exists, without loading it).
- On load it declares every function (pyfrag._native.signatures), checks
  pf_abi_version() == ABI_VERSION and the stats struct (size and version),
  then runs the checks registered with `on_load()`. Any mismatch raises
  LibraryError saying which file, what, and what to do.
- `tool_library(name)` loads a tool library (libpyfrag_stress.so) from the
  folder of the loaded libpyfrag.so, after it, so that its own reference to
  libpyfrag.so resolves to the copy already loaded and both share one
  allocator; `declare_extra()` declares its functions.
"""
from __future__ import annotations

import ctypes
import os
import threading
from ctypes import c_uint32, c_uint64

from . import signatures
from .errors import LibraryError

ABI_VERSION = 2
STATS_VERSION = 4
LIBRARY_NAME = "libpyfrag.so"
ENV_LIBRARY = "PYFRAG_LIBRARY"

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # pyfrag/
REPO_ROOT = os.path.dirname(PACKAGE_DIR)

HOW_TO_FIX = (
    "run `scons` at the repository root (it builds pyfrag/libpyfrag.so), "
    "or `pip install .`, or set PYFRAG_LIBRARY to the path of a built libpyfrag.so"
)

_loaded = None  # the CDLL once every check passed
_path: str | None = None
_stats_struct = None
_load_lock = threading.Lock()
_load_checks = []
_tools: dict = {}


def on_load(check) -> None:
    """Run check(cdll, path) at load time (before anyone uses the library)."""
    _load_checks.append(check)


# ---- finding ---------------------------------------------------------------------

def candidates() -> list[str]:
    """Where the library is looked for, in order."""
    explicit = os.environ.get(ENV_LIBRARY)
    if explicit:
        return [os.path.abspath(explicit)]
    return [os.path.join(PACKAGE_DIR, LIBRARY_NAME),
            os.path.join(REPO_ROOT, "build", "release", LIBRARY_NAME)]


def find() -> str:
    """The first candidate that exists (not loaded); LibraryError if none does."""
    paths = candidates()
    for path in paths:
        if os.path.isfile(path):
            return path
    where = ("PYFRAG_LIBRARY=%s" % paths[0]) if os.environ.get(ENV_LIBRARY) else ", ".join(paths)
    raise LibraryError("cannot find %s (looked at: %s); %s" % (LIBRARY_NAME, where, HOW_TO_FIX))


# ---- checking --------------------------------------------------------------------

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
    try:
        cdll = ctypes.CDLL(path, use_errno=True)
    except OSError as exc:
        raise LibraryError("cannot load %s: %s; %s" % (path, exc, HOW_TO_FIX)) from None
    try:
        signatures.declare(cdll)
    except AttributeError as exc:
        raise LibraryError("%s lacks a pyfrag function (%s); %s"
                           % (path, exc, HOW_TO_FIX)) from None
    abi = cdll.pf_abi_version()
    if abi != ABI_VERSION:
        raise LibraryError("%s has ABI version %d, this pyfrag needs %d; %s"
                           % (path, abi, ABI_VERSION, HOW_TO_FIX))
    return cdll


# ---- loading ---------------------------------------------------------------------

def lib():
    """The loaded, checked library (loading it on first call)."""
    global _loaded, _path, _stats_struct
    if _loaded is not None:
        return _loaded
    with _load_lock:
        if _loaded is None:
            path = find()
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


def stats_struct():
    """The pf_stats_t Structure checked at load (loading the library if needed)."""
    lib()
    return _stats_struct


# ---- tool libraries ----------------------------------------------------------------

def tool_library(name: str):
    """
    (CDLL, path) of a tool library (libpyfrag_stress.so) from the folder of
    the loaded libpyfrag.so, loaded once, after it: its own reference to
    libpyfrag.so resolves to the copy already loaded, so both share one allocator.
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


def declare_extra(cdll, table, path: str, what: str) -> None:
    """
    Declare (name, argtypes, restype) functions of a tool library (the stress
    loops'); LibraryError naming the first missing one if it lacks any.
    """
    for name, argtypes, restype in table:
        func = getattr(cdll, name, None)
        if func is None:
            raise LibraryError("%s has no %s (needed for %s): it is older than this package; %s"
                               % (path, name, what, HOW_TO_FIX))
        func.argtypes, func.restype = argtypes, restype
