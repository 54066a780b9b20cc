# SPDX-License-Identifier: GPL-2.0-only
"""Datagrams in bursts: one recvmmsg into fresh fragments, one sendmmsg from fragments.

Contract:
- `sock` is a datagram socket object (socket.socket, or anything with
  fileno(); SOCK_DGRAM or SOCK_SEQPACKET when it says its .type, else
  ValueError); a closed one (fileno() -1) raises OSError(EBADF).
- recv_burst(owner, sock, n, size, addresses) makes one native call
  (pf_recv_burst, or pf_shared_recv_burst when the owner is a SharedArena:
  SharedFragments to hand to other processes) per attempt, under the
  owner's lock, never blocking
  there: it asks with MSG_DONTWAIT and, when nothing waits and the socket
  blocks (timeout None, or > 0), waits for it with poll() outside the lock
  and asks again. A non-blocking socket (timeout 0) that is empty raises
  BlockingIOError; a timeout that runs out raises TimeoutError. Other
  socket errors raise OSError with the kernel's errno; no memory raises
  MemoryError. Fragments no datagram filled are freed in C, so none is
  ever left allocated unseen by Python.
- Each returned fragment is exactly as long as its datagram (bytes past
  `size` are dropped, as recv_into does); with addresses=True each item is
  (fragment, address), the address as socket.recvfrom gives it for
  AF_INET, AF_INET6 and AF_UNIX (raw bytes for other families).
- send_burst(sock, frags, address) sends each fragment as one datagram,
  1..PF_BURST_MAX per native call (more are sent in several), to `address`
  or the connected peer; fragments may belong to any caches and arenas: the
  lock of each owner is held while C reads them, so none can be freed
  under it (a freed one raises FragError before anything is sent). A
  blocking socket sends them all; a non-blocking one returns how many went
  (BlockingIOError if none could).
"""
from __future__ import annotations

import _socket
import ctypes
import errno as _errno
import os
import select
import socket
import sys
import time
from contextlib import ExitStack

from ._native import loader
from ._native.signatures import last_error
from .cache import FragCache, Fragment, _hot, _new, check_int, check_size, make_fragments

BURST_MAX = 256  # PF_BURST_MAX
_DONTWAIT = int(socket.MSG_DONTWAIT)
SOCKADDR_STORAGE = 128  # sizeof(struct sockaddr_storage)
_DATAGRAM_KINDS = (socket.SOCK_DGRAM, socket.SOCK_SEQPACKET)


# ---- sockets ------------------------------------------------------------------------

_RAW_TYPE = _socket.socket.__dict__["type"].__get__  # the int, without socket.py's enum


def _fileno(sock) -> int:
    if type(sock) is socket.socket:  # the usual case, without the checks' calls
        kind = _RAW_TYPE(sock)
        if (kind & 0xF) in _DATAGRAM_KINDS:
            fd = sock.fileno()
            if fd >= 0:
                return fd
    kind = _RAW_TYPE(sock) if isinstance(sock, _socket.socket) else getattr(sock, "type", None)
    if isinstance(kind, int) and (kind & 0xF) not in _DATAGRAM_KINDS:
        raise ValueError("bursts are for datagram sockets (SOCK_DGRAM, SOCK_SEQPACKET), not %s"
                         % getattr(kind, "name", kind))
    try:
        fd = sock.fileno()
    except AttributeError:
        raise TypeError("a socket (with fileno()) is needed, not %s"
                        % type(sock).__name__) from None
    if type(fd) is not int:
        fd = check_int(fd, "fileno()")
    if fd < 0:
        raise OSError(_errno.EBADF, "the socket is closed")
    return fd


def _timeout(sock):
    """None: wait forever; 0: never wait; else seconds."""
    if type(sock) is socket.socket:
        return sock.gettimeout()
    get = getattr(sock, "gettimeout", None)
    return get() if get is not None else None


def _wait(fd: int, events: int, deadline) -> None:
    """Wait for fd to be ready (TimeoutError past the deadline, None: none)."""
    poller = select.poll()
    poller.register(fd, events)
    while True:
        if deadline is None:
            ready = poller.poll()
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            ready = poller.poll(max(1, int(left * 1000 + 0.999)))
        if ready:
            return


def _socket_error(name: str) -> Exception:
    err = ctypes.get_errno()
    if err in (_errno.ENOMEM, _errno.E2BIG, 0):
        return last_error(_hot.cdll, name)
    return OSError(err, "%s: %s" % (name, os.strerror(err)))


def _check_count(n) -> int:
    if type(n) is not int:
        n = check_int(n, "n")
    if not 1 <= n <= BURST_MAX:
        raise ValueError("a burst is 1..%d datagrams, not %d" % (BURST_MAX, n))
    return n


# ---- addresses --------------------------------------------------------------------

def _decode_address(raw: bytes):
    """A struct sockaddr as socket.recvfrom gives it."""
    if len(raw) < 2:
        return None
    family = int.from_bytes(raw[:2], sys.byteorder)
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET6:
        return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), int.from_bytes(raw[2:4], "big"),
                int.from_bytes(raw[4:8], "big"), int.from_bytes(raw[24:28], sys.byteorder))
    if family == socket.AF_UNIX:
        path = raw[2:]
        if not path:
            return None
        if path[0] == 0:
            return path  # an abstract name, as bytes
        return os.fsdecode(path.split(b"\0", 1)[0])
    return raw


def _encode_address(sock, address) -> bytes:
    """struct sockaddr bytes for a send to `address` from `sock`'s family."""
    family = getattr(sock, "family", socket.AF_INET)
    if family == socket.AF_UNIX:
        path = address if isinstance(address, bytes) else os.fsencode(address)
        return socket.AF_UNIX.to_bytes(2, sys.byteorder) + path + (b"" if path[:1] == b"\0"
                                                                     else b"\0")
    if family not in (socket.AF_INET, socket.AF_INET6):
        raise ValueError("send_burst() to an address supports AF_INET, AF_INET6 and AF_UNIX")
    host, port = address[0], check_int(address[1], "port")
    info = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, 0,
                              socket.AI_NUMERICSERV)[0][4]
    packed = socket.inet_pton(family, info[0])
    head = int(family).to_bytes(2, sys.byteorder) + port.to_bytes(2, "big")
    if family == socket.AF_INET:
        return head + packed + bytes(8)
    flow = address[2] if len(address) > 2 else 0
    scope = address[3] if len(address) > 3 else info[3]
    return head + flow.to_bytes(4, "big") + packed + scope.to_bytes(4, sys.byteorder)


# ---- receiving ---------------------------------------------------------------------

class _RecvArrays:
    """Scratch arrays of one cache for pf_recv_burst (used under the cache's lock)."""

    def __init__(self):
        self.frags = (ctypes.c_void_p * BURST_MAX)()
        self.lens = (ctypes.c_uint32 * BURST_MAX)()
        self.names = ctypes.create_string_buffer(SOCKADDR_STORAGE * BURST_MAX)
        self.namelens = (ctypes.c_uint32 * BURST_MAX)()


def recv_burst(cache, sock, n=32, size=2048, addresses=False) -> list:
    fd = _fileno(sock)
    if type(n) is not int or not 0 < n <= BURST_MAX:
        n = _check_count(n)
    if type(size) is not int or not 0 < size <= 32768:
        size = check_size(size)
    deadline = 0  # (unknown until the socket is found empty)
    lock = cache._lock
    while True:
        lock.acquire()
        try:
            cache._check_usable()
            arrays = cache._recv_arrays
            if arrays is None:
                arrays = cache._recv_arrays = _RecvArrays()
            frag_addresses, lens = arrays.frags, arrays.lens
            names = arrays.names if addresses else None
            namelens = arrays.namelens if addresses else None
            shared = not isinstance(cache, FragCache)
            receive = _hot.shared_recv_burst if shared else _hot.recv_burst
            got = receive(cache._handle, fd, size, n, _DONTWAIT, frag_addresses, lens, names,
                          namelens)
            if got > 0:
                try:
                    kind = type(cache)._fragment_type if shared else Fragment
                    if got == 1:  # (make_fragments' lists and call cost more than the object)
                        frag = _new(kind)
                        frag._cache, frag._address, frag._size = cache, frag_addresses[0], lens[0]
                        frag._room, frag._live, frag._access = size, True, None
                        frags = [frag]
                    else:
                        frags = make_fragments(kind, cache, frag_addresses[:got], lens[:got],
                                               size)
                    if not addresses:
                        return frags
                    raw = names.raw
                    return [(frag, _decode_address(raw[i * SOCKADDR_STORAGE:
                                                       i * SOCKADDR_STORAGE + namelens[i]]))
                            for i, frag in enumerate(frags)]
                except BaseException:  # (a KeyboardInterrupt): nothing reached the caller
                    _hot.free_bulk(None, frag_addresses, None, got)
                    raise
            error = _socket_error("pf_recv_burst")
        finally:
            lock.release()
        if deadline == 0:
            timeout = _timeout(sock)
            deadline = None if timeout is None else time.monotonic() + timeout
        if getattr(error, "errno", None) != _errno.EAGAIN or timeout == 0:
            raise error
        _wait(fd, select.POLLIN, deadline)


# ---- sending -----------------------------------------------------------------------

def _owners(frags) -> list:
    """The distinct owners (caches, arenas) of the fragments, in a fixed lock order."""
    owners = {}
    for i, frag in enumerate(frags):
        if not isinstance(frag, Fragment):
            raise TypeError("send_burst() sends fragments; item %d is %s"
                            % (i, type(frag).__name__))
        owners[id(frag._cache)] = frag._cache
    return [owners[key] for key in sorted(owners)]


def _send_some(fd, frags, name, owners) -> int:
    """One sendmmsg of frags (<= BURST_MAX) with every owner's lock held; -1 on EAGAIN."""
    count = len(frags)
    addresses = (ctypes.c_void_p * count)()
    lens = (ctypes.c_uint32 * count)()
    with ExitStack() as locks:
        for owner in owners:
            locks.enter_context(owner._lock)
        for i, frag in enumerate(frags):
            frag._check_live_locked()
            addresses[i], lens[i] = frag._address, frag._size
        sent = _hot.send_burst(fd, addresses, lens, count, name, len(name or b""),
                               socket.MSG_DONTWAIT)
        if sent >= 0:
            return sent
        error = _socket_error("pf_send_burst")
    if getattr(error, "errno", None) == _errno.EAGAIN:
        return -1
    raise error


def send_burst(sock, frags, address=None) -> int:
    """Send fragments as datagrams (see the module docstring); how many were sent."""
    _hot.bind(loader.lib())
    fd = _fileno(sock)
    frags = list(frags)
    owners = _owners(frags)
    name = None if address is None else _encode_address(sock, address)
    timeout = _timeout(sock)
    deadline = None if timeout is None else time.monotonic() + timeout
    done = 0
    while done < len(frags):
        sent = _send_some(fd, frags[done:done + BURST_MAX], name, owners)
        if sent < 0:
            if timeout == 0:
                if done:
                    return done
                raise BlockingIOError(_errno.EAGAIN, "pf_send_burst: the socket's buffer is full")
            _wait(fd, select.POLLOUT, deadline)
            continue
        done += sent
    return done
