# SPDX-License-Identifier: GPL-2.0-only
"""The shared arenas on this machine, found by their files (for `pyfrag info`).

Contract: arena_files() lists every "pyfrag.<name>" file on a hugetlbfs mount
of 2 MiB pages and in /dev/shm, the places pyfrag_shared.h puts them, with
size, mode and owner, and the layout version its header says (None when the
file cannot be read, or is still being created, or is not an arena); a file
removed while it looks is left out. It only
looks: nothing is attached, so nothing is reaped or counted. A file whose
creator died before removing it keeps its memory (hugetlb pages come out of
the pool) until `pyfrag.SharedArena.unlink(name)` removes it.
"""
from __future__ import annotations

import os
import pwd
import struct
from dataclasses import dataclass

MAGIC = 0x4853474152465950  # PF_SHARED_MAGIC: "PYFRAGSH"
PREFIX = "pyfrag."


@dataclass(frozen=True)
class ArenaFile:
    name: str
    path: str
    kind: str            # "hugetlb" (a hugetlbfs mount) or "shmem" (/dev/shm)
    bytes: int
    mode: int
    owner: str
    layout_version: int | None


def _places() -> list[tuple[str, str]]:
    places = []
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) >= 4 and fields[2] == "hugetlbfs" and (
                        "pagesize=" not in fields[3] or "pagesize=2M" in fields[3]):
                    places.append((fields[1], "hugetlb"))
    except OSError:
        pass
    places.append(("/dev/shm", "shmem"))
    return places


def _layout_version(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return None
    if len(head) < 12:
        return None
    magic, version = struct.unpack("=QI", head)
    return version if magic == MAGIC else None


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def arena_files() -> list[ArenaFile]:
    found = []
    for directory, kind in _places():
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if not entry.name.startswith(PREFIX) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed since the listing: an arena that is gone
                continue
            found.append(ArenaFile(name=entry.name[len(PREFIX):], path=entry.path, kind=kind,
                                   bytes=st.st_size, mode=st.st_mode & 0o777,
                                   owner=_owner(st.st_uid),
                                   layout_version=_layout_version(entry.path)))
    return found
