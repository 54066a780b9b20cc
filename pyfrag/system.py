# SPDX-License-Identifier: GPL-2.0-only
"""What the machine offers for hugepages, read from /proc and /sys (no library needed).

Contract: `hugepages()` returns a dict that is safe to print or dump as JSON;
a file that cannot be read gives None for its values, never an exception.
"""
from __future__ import annotations

THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
THP_DEFRAG = "/sys/kernel/mm/transparent_hugepage/defrag"
MEMINFO = "/proc/meminfo"
_MEMINFO_KEYS = ("HugePages_Total", "HugePages_Free", "HugePages_Rsvd", "Hugepagesize")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def selected_mode(text: str | None) -> str | None:
    """The bracketed word of a sysfs choice list: 'always [madvise] never' -> 'madvise'."""
    for word in (text or "").split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return None


def meminfo_hugepages(text: str | None) -> dict[str, int | None]:
    """HugePages_* counts and Hugepagesize (in bytes) from /proc/meminfo text."""
    values: dict[str, int | None] = dict.fromkeys(_MEMINFO_KEYS)
    for line in (text or "").splitlines():
        key, _, rest = line.partition(":")
        if key in values:
            fields = rest.split()
            number = int(fields[0])
            values[key] = number * 1024 if fields[1:] == ["kB"] else number
    return values


def hugepages() -> dict:
    """hugetlb pool counts and the transparent hugepage modes."""
    info = meminfo_hugepages(_read(MEMINFO))
    return {
        "hugetlb_total": info["HugePages_Total"],
        "hugetlb_free": info["HugePages_Free"],
        "hugetlb_reserved": info["HugePages_Rsvd"],
        "hugepage_size": info["Hugepagesize"],
        "thp_enabled": selected_mode(_read(THP_ENABLED)),
        "thp_defrag": selected_mode(_read(THP_DEFRAG)),
    }
