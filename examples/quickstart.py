#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Quick start: one FragCache, fragments as zero-copy buffers, freed by hand or by `with`.

Contract: prints what it does, one fact a line, and exits 0; any broken rule
raises (an uncaught exception exits 1). Run it after installing pyfrag, or
from a checkout after `scons`:

    PYTHONPATH=. python3 examples/quickstart.py
"""
import pyfrag


def show_fragments(cache: pyfrag.FragCache) -> int:
    """Allocate, write, read, free one fragment; returns its address."""
    frag = cache.alloc(1500)                   # a 1500-byte fragment of the cache's frag page
    frag[:5] = b"hello"                        # indexing and slicing write the fragment itself
    view = frag.view()                         # a writable memoryview of the same bytes, no copy
    view[5:11] = b" world"
    print("fragment: %d bytes at 0x%x holding %r" % (frag.size, frag.address, frag[:11]))

    info = cache.info()
    print("frag page: %d bytes, %d used, bias %d" % (info.page_size, info.offset, info.bias))
    if info.page_size < 32768:
        print("  (a process's first refill takes a 4 KiB page: no 32 KiB block is split off yet)")

    frag.free()                                # any thread may free it; the view is released
    print("after free: view released = %s" % _released(view))
    try:
        frag.free()
    except pyfrag.FragError as exc:
        print("second free refused: %s" % exc)
    return frag.address


def show_with_block(cache: pyfrag.FragCache, freed_address: int) -> None:
    with cache.alloc(64, align=64) as header:  # freed when the block ends
        header[0] = 0x45
        print("aligned fragment: 0x%x %% 64 = %d" % (header.address, header.address % 64))
        # the newest fragment, freed on the owner thread, gave its bytes back at once
        print("  reuses the bytes of the fragment freed above: %s"
              % (header.address == freed_address))
    print("after the with block: freed = %s" % header.freed)


def _released(view: memoryview) -> bool:
    try:
        len(view)
    except ValueError:
        return True
    return False


def main() -> int:
    before = pyfrag.stats()
    with pyfrag.FragCache() as cache:          # one page_frag cache, for this thread
        address = show_fragments(cache)
        show_with_block(cache, address)
    after = pyfrag.stats()
    print("library counted: allocs %d, frees %d (%d of them on the cache's bias, no atomic)"
          % (after.allocs - before.allocs, after.frees - before.frees,
             after.bias_frees - before.bias_frees))
    print("library: %s" % pyfrag.library_path())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
