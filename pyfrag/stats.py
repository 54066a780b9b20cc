# SPDX-License-Identifier: GPL-2.0-only
"""Statistics: the library's counters, and what the kernel says about hugepages.

Contract:
- `stats()` is one pf_stats_get snapshot as the frozen dataclass `Stats`,
  whose fields mirror PF_STATS_FIELDS in pyfrag.h, in order. At load time
  the library's field names are checked against them (LibraryError if not).
- `hugepage_coverage()` sums /proc/self/smaps over the mappings that overlap
  the arena (`arena_range()`, pf_arena_range); `smaps_totals(pid)` sums the
  whole process. Sizes are bytes. Hugetlb pages are not part of Rss (the
  kernel reports them apart); AnonHugePages are. Every such total (and
  pyfrag.shared.SharedCoverage) has `resident`, `hugetlb` and `thp` bytes,
  and the shares of `HugeShares` computed from them, one formula for all.
"""
from __future__ import annotations

import ctypes
import dataclasses
import re
from dataclasses import dataclass

from ._native import loader
from ._native.errors import LibraryError
from ._native.signatures import c_uintptr


@dataclass(frozen=True)
class Stats:
    """One snapshot of the library's counters (see PF_STATS_FIELDS in pyfrag.h)."""
    allocs: int
    frees: int
    bias_frees: int
    refills: int
    recycles: int
    abandons: int
    order0_fallbacks: int
    reserve_pages: int
    reserve_returns: int
    drains: int
    invalid_frees: int
    alloc_failures: int
    chunks_hugetlb: int
    chunks_thp: int
    chunks_4k: int
    chunks_empty: int
    chunk_commits: int
    chunk_releases: int
    commit_failures: int
    committed_bytes: int
    peak_committed_bytes: int
    pages_in_use: int
    pages_cached: int
    reserve_free_pages: int
    caches: int
    threads: int
    malloc_small: int
    malloc_medium: int
    malloc_large: int
    malloc_compact: int
    compact_live_bytes: int
    compact_pages: int
    compact_page_bytes: int
    compact_abandoned_pages: int
    frag_pinned_bytes: int
    sites_compact: int
    site_moves_to_compact: int
    site_moves_to_frag: int
    pinned_pages_seen: int
    pin_cap_engaged: int
    foreign_frees: int
    libc_allocs: int
    libc_frees: int
    arena_regions: int
    arena_reserved_bytes: int
    arena_cap_bytes: int


FIELDS = tuple(field.name for field in dataclasses.fields(Stats))


def _check_field_names(cdll, path: str) -> None:
    count = cdll.pf_stats_field_count()
    names = tuple(cdll.pf_stats_field_name(i).decode() for i in range(count))
    if names != FIELDS:
        missing = sorted(set(FIELDS) - set(names))
        extra = sorted(set(names) - set(FIELDS))
        raise LibraryError(
            "%s counts different statistics than this pyfrag package (library lacks %s, has extra "
            "%s%s); rebuild the library from the same checkout as the Python files (%s)"
            % (path, missing or "none", extra or "none",
               ", or orders them differently" if not (missing or extra) else "", loader.HOW_TO_FIX))


loader.on_load(_check_field_names)


def stats_snapshot():
    """One pf_stats_get snapshot as the ctypes struct checked at load."""
    snapshot = loader.stats_struct()()
    loader.lib().pf_stats_get(ctypes.byref(snapshot), ctypes.sizeof(snapshot))
    return snapshot


def stats() -> Stats:
    """A snapshot of every counter."""
    snapshot = stats_snapshot()
    return Stats(*(getattr(snapshot, name) for name in FIELDS))


def field_docs() -> dict[str, str]:
    """The library's one-line meaning of each counter."""
    cdll = loader.lib()
    return {name: cdll.pf_stats_field_doc(i).decode() for i, name in enumerate(FIELDS)}


# ---- /proc/<pid>/smaps ----------------------------------------------------------

_MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) ")
_FIELD = re.compile(r"^(\w+):\s+(\d+) kB$")
_KEYS = {"Size": "size", "Rss": "rss", "Private_Hugetlb": "private_hugetlb",
         "Shared_Hugetlb": "shared_hugetlb", "AnonHugePages": "anon_huge_pages"}


class HugeShares:
    """Resident bytes and their shares on 2 MiB pages: the one formula, whatever the
    mappings, for smaps totals with `rss`, `private_hugetlb` and `shared_hugetlb` fields and
    a `thp` property (which of their bytes are transparent hugepages)."""

    @property
    def resident(self) -> int:
        """Every resident byte: rss plus hugetlb pages (which rss leaves out)."""
        return self.rss + self.private_hugetlb + self.shared_hugetlb

    @property
    def hugetlb(self) -> int:
        return self.private_hugetlb + self.shared_hugetlb

    def _fraction(self, part: int) -> float:
        return part / self.resident if self.resident else 0.0

    @property
    def hugetlb_fraction(self) -> float:
        return self._fraction(self.hugetlb)

    @property
    def thp_fraction(self) -> float:
        return self._fraction(self.thp)

    @property
    def huge_fraction(self) -> float:
        """Share of the resident bytes on 2 MiB pages of either kind (0 when none resident)."""
        return self._fraction(self.hugetlb + self.thp)


@dataclass(frozen=True)
class SmapsTotals(HugeShares):
    """Bytes summed over some mappings of /proc/<pid>/smaps."""
    size: int = 0              # virtual size of the mappings
    rss: int = 0               # resident, hugetlb excluded
    private_hugetlb: int = 0
    shared_hugetlb: int = 0
    anon_huge_pages: int = 0   # transparent hugepages (part of rss)

    @property
    def thp(self) -> int:
        return self.anon_huge_pages

    def __sub__(self, other: SmapsTotals) -> SmapsTotals:
        return SmapsTotals(*(getattr(self, f) - getattr(other, f) for f in _KEYS.values()))


@dataclass(frozen=True)
class HugepageCoverage(SmapsTotals):
    """SmapsTotals of the arena's mappings, with the arena's range."""
    base: int = 0
    arena_size: int = 0


def _sum_smaps(pid, keep, keys=None) -> dict[str, int]:
    """Sum the fields (smaps name -> our name; default _KEYS) of the mappings [start, end) for
    which keep(start, end)."""
    keys = _KEYS if keys is None else keys
    sums = dict.fromkeys(keys.values(), 0)
    counting = False
    with open("/proc/%s/smaps" % pid) as smaps:
        for line in smaps:
            mapping = _MAPPING.match(line)
            if mapping:
                counting = keep(int(mapping.group(1), 16), int(mapping.group(2), 16))
                continue
            if counting:
                field = _FIELD.match(line)
                if field and field.group(1) in keys:
                    sums[keys[field.group(1)]] += int(field.group(2)) * 1024
    return sums


def smaps_totals(pid="self") -> SmapsTotals:
    """Totals over every mapping of the process (diff two of them to see a change)."""
    return SmapsTotals(**_sum_smaps(pid, lambda start, end: True))


def arena_range() -> tuple[int, int]:
    """(base, size) of the arena's first region; reserves it if that has not happened yet."""
    base, size = c_uintptr(), ctypes.c_size_t()
    loader.lib().pf_arena_range(ctypes.byref(base), ctypes.byref(size))
    return base.value, size.value


def hugepage_coverage() -> HugepageCoverage:
    """What the kernel reports for the mappings inside pyfrag's arena."""
    base, size = arena_range()
    limit = base + size
    sums = _sum_smaps("self", lambda start, end: start < limit and end > base)
    return HugepageCoverage(base=base, arena_size=size, **sums)
