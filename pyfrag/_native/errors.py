# SPDX-License-Identifier: GPL-2.0-only
"""pyfrag's exceptions, and the one mapping from a C errno to the exception a call raises.

Contract: `error_for(err, message)` is the exception for a failed call with
errno `err`: EINVAL/E2BIG -> ValueError, ENOMEM -> MemoryError, ENOENT ->
FileNotFoundError, EEXIST -> FileExistsError, EACCES/EPERM ->
PermissionError, EPROTO -> IncompatibleArenaError (a FragError), anything
else -> FragError; each carries `.errno`, and `message` (the library's own
sentence) as its text. Importing this module loads nothing.
"""
from __future__ import annotations

import errno as _errno


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
