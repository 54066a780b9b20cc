# SPDX-License-Identifier: GPL-2.0-only
"""The layers of libpyfrag, bottom to top: one folder of native/src each.

Contract: LAYERS is the one list of the layers, read by native/SConscript (what
to build) and by native/check_layers.py (the one-way rule and the README's
table). A file may use (include, call) its own layer and the layers below,
never one above. `builds` says which builds carry the layer: "all", or
"faults" (debug, asan and tsan builds only) or "valgrind" (scons valgrind=1).
"""

LAYERS = [
    # folder, header (None: nothing above uses it), builds, what it owns
    ("sys", "sys/sys.h", "all",
     "the OS table (every mmap/munmap/madvise, shared arenas' file mappings included), failure "
     "reporting and event counters, the option table read from the environment, text "
     "without stdio"),
    ("memory", "memory/memory.h", "all",
     "the private arena (regions, chunks, page metadata), the buddy zone, the private page "
     "allocator with the page lists its callers hand in and the reserve, pools for "
     "pyfrag's own objects"),
    ("page_frag", "page_frag/page_frag.h", "all",
     "the page_frag algorithm over a page-source interface, batched reference drops"),
    ("slab", "slab/slab.h", "all",
     "the compact small-object route: size-class pages with a free list each, per-thread "
     "heaps, remote frees on an atomic list per page, abandoned pages"),
    ("thread", "thread/thread.h", "all",
     "per-thread state, thread exit with give-back hooks, the registry of live caches "
     "and threads, the private page source"),
    ("shared", "shared/shared.h", "all",
     "shared arenas: the named file and its mapping, their zone, process table, cache "
     "slots and page source"),
    ("api", "api/api.h", "all",
     "the public C API: the one initializer, options, stats, queries; memcheck requests "
     "(valgrind=1)"),
    ("malloc", "malloc/malloc.h", "all",
     "malloc-family semantics, the exported libc names, the preload decision, fork, the "
     "exit summary"),
    ("debug", None, "faults",
     "fault injection (pyfrag_debug.h): debug, asan and tsan builds only"),
]

# Files of a layer that only some builds compile (path under native/src: builds).
PARTIAL_FILES = {"api/valgrind.c": "valgrind"}


def names():
    return [layer[0] for layer in LAYERS]
