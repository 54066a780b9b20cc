# SPDX-License-Identifier: GPL-2.0-only
"""pyfrag: the Linux kernel's page_frag allocator in userspace, through ctypes.

Contract: importing pyfrag never loads libpyfrag.so; the first call that
needs it does (see pyfrag._native.loader for where it is looked for). It
imports the public API only (cache, shared, stats, options, preload), not
the tools (pyfrag.tools) nor the command line (pyfrag.cli), nor psutil.

    import pyfrag
    with pyfrag.FragCache() as cache:
        frag = cache.alloc(1500)
        frag[:4] = b"abcd"
        frag.free()
    print(pyfrag.stats())
"""
__version__ = "0.1.0"

from ._native.errors import FragError, IncompatibleArenaError, LibraryError
from ._native.loader import library_path
from .cache import CacheInfo, FragCache, Fragment, PageInfo, page_info
from .options import Option, options, set_option, thread_flush, trim
from .preload import preload_env, run  # noqa: F401  (LD_PRELOAD launcher)
from .shared import SharedArena, SharedFragment, SharedStats
from .shared_ring import SharedRing
from .stats import HugepageCoverage, SmapsTotals, Stats, hugepage_coverage, smaps_totals, stats

__all__ = [
    "CacheInfo", "FragCache", "FragError", "Fragment", "HugepageCoverage", "IncompatibleArenaError",
    "LibraryError", "Option", "PageInfo", "SharedArena", "SharedFragment", "SharedRing", "SharedStats",
    "SmapsTotals", "Stats", "hugepage_coverage", "library_path",
    "options", "page_info", "set_option", "smaps_totals", "stats", "thread_flush", "trim",
]
