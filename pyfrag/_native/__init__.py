# SPDX-License-Identifier: GPL-2.0-only
"""The ctypes layer: everything that touches libpyfrag.so directly.

Contract: one job per module, and importing any of them loads nothing.
- errors: the exceptions and the errno -> exception mapping;
- handles: the typed pointers of a cache and of a shared arena;
- signatures: the one table of C signatures, and the C structs it names;
- loader: finding, loading and checking the library (and the tool
  libraries beside it);
- owner: the base class of the objects that own a native handle.
The public API (pyfrag.cache, pyfrag.shared, ...) is built on these.
"""
