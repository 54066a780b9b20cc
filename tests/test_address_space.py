# SPDX-License-Identifier: GPL-2.0-only
"""Address space: what an address-space limit and PYFRAG_ARENA do to a preloaded program.

- Under `ulimit -v 200000` (RLIMIT_AS, as batch schedulers and containers set)
  python3, sort, gzip and md5sum give byte-identical output with and without
  the preload: the arena is reserved in regions sized to what the limit
  leaves, not as one 64 GiB block.
- Under `ulimit -v 4000000` a 2.5 GiB malloc succeeds and can be written to,
  as on glibc: a further region is reserved for it (the first one's
  never-used tail is given back to make room).
- Where pyfrag cannot serve a request (here: PYFRAG_ARENA, the cap on its
  address space, used up) the program still gets the memory from libc; the
  degradation is said once on stderr and counted (libc_allocs).
- A parseable but too large PYFRAG_ARENA is clamped, not fatal (issue 13,
  item 8): `PYFRAG_ARENA=32T ls /` works and the option reads what it got.

Sanitizer runtimes map terabytes of shadow memory and cannot start under an
address-space limit at all, so the limit tests run in release and debug builds only.
"""
from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import textwrap

import pytest

from conftest import MODE, REPO_ROOT, run_python
from test_preload import PYTHON, plain_env, programs, pyfrag_env, split_stats  # noqa: F401 (fixture)

needs_plain_runtime = pytest.mark.skipif(
    MODE in ("asan", "tsan"), reason="a sanitizer runtime cannot start under ulimit -v")

WARNING = "pyfrag: warning:"


def run_limited(argv, env, kib=None, stdin=None, timeout=300):
    """argv with RLIMIT_AS set to kib KiB (as `ulimit -v kib` does), bytes in and out."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (kib * 1024, kib * 1024))
    return subprocess.run(argv, env=env, input=stdin, capture_output=True, timeout=timeout,
                          preexec_fn=limit if kib else None)


def both(argv, kib=None, stdin=None, **options):
    """(glibc run, pyfrag run) of argv under the same limit; both must exit 0."""
    base = run_limited(argv, plain_env(), kib, stdin)
    mine = run_limited(argv, pyfrag_env(stats=True, **options), kib, stdin)
    report = "glibc rc %d: %s\npyfrag rc %d: %s" % (
        base.returncode, base.stderr.decode(errors="replace")[-2000:],
        mine.returncode, mine.stderr.decode(errors="replace")[-2000:])
    assert base.returncode == 0, report
    assert mine.returncode == 0, report
    return base, mine


def summary(stderr: bytes) -> str:
    text = stderr.decode(errors="replace")
    assert "pyfrag stats (" in text, "no pyfrag summary: the preload did not take\n" + text
    return text


LINES = b"".join(b"%08d %s\n" % ((i * 7919) % 100003, b"x" * (i % 70)) for i in range(40000))

PYTHON_WORK = textwrap.dedent("""
    import hashlib, json, collections
    words = ["w%05d" % (i * 7919 % 50021) for i in range(100000)]
    counts = collections.Counter(words)
    blob = json.dumps(sorted(counts.items())).encode()
    chunks = [bytes(i % 5000) for i in range(3000)]
    print(len(counts), len(blob), hashlib.sha256(blob + b"".join(chunks)).hexdigest())
""")


@needs_plain_runtime
@pytest.mark.parametrize("argv, stdin", [
    ([PYTHON, "-c", PYTHON_WORK], None),
    (["sort"], LINES),
    (["gzip", "-c", "-9"], LINES),
    (["md5sum"], LINES),
], ids=["python3", "sort", "gzip", "md5sum"])
def test_programs_run_under_ulimit_v_200000(argv, stdin):
    base, mine = both(argv, kib=200000, stdin=stdin)
    assert mine.stdout == base.stdout
    text = summary(mine.stderr)
    assert WARNING not in text, text  # 200 MB is plenty: pyfrag served it all itself


@needs_plain_runtime
def test_a_2_5_gib_block_under_ulimit_v_4000000(programs):
    argv = [str(programs / "big_alloc"), "2560"]
    base, mine = both(argv, kib=4000000)
    assert base.stdout == mine.stdout == b"ok 2560\n"
    text = summary(mine.stderr)
    assert "large (chunk runs) 1" in text, text  # pyfrag's own chunk run, not libc's block
    assert WARNING not in text, text


def test_degradation_is_said_once_and_counted():
    # a cap of two chunks (the reserve's and one) is used up at once: the rest must come from libc
    base, mine = both([PYTHON, "-c", PYTHON_WORK], arena="4M")
    assert mine.stdout == base.stdout
    text = summary(mine.stderr)
    assert text.count(WARNING) == 1, text
    degraded = int(re.search(r"from libc \(degraded\) (\d+)", text).group(1))
    assert degraded > 0, text
    assert re.search(r"regions 1, reserved 4194304,", text), text


DEGRADED_CALLS = textwrap.dedent("""
    import ctypes, pyfrag
    libc = ctypes.CDLL(None)
    vp, size = ctypes.c_void_p, ctypes.c_size_t
    for name, res, args in (("malloc", vp, [size]), ("realloc", vp, [vp, size]), ("free", None, [vp]),
                            ("malloc_usable_size", size, [vp])):
        getattr(libc, name).restype, getattr(libc, name).argtypes = res, args
    before = pyfrag.stats()
    blocks = [libc.malloc(1 << 20) for _ in range(8)]  # 8 MiB: past the 4 MiB cap, so libc's
    for i, p in enumerate(blocks):
        ctypes.memset(p, i, 1 << 20)
    grown = [libc.realloc(p, 3 << 20) for p in blocks]
    kept = [ctypes.string_at(p + (1 << 20) - 1, 1) == bytes([i]) for i, p in enumerate(grown)]
    usable = [libc.malloc_usable_size(p) >= 3 << 20 for p in grown]
    for p in grown:
        libc.free(p)
    after = pyfrag.stats()
    print(all(kept), all(usable), after.libc_allocs - before.libc_allocs >= 8,
          after.libc_frees - before.libc_frees >= 8, after.foreign_frees)
""")


def test_degraded_blocks_are_freed_and_resized_by_libc():
    # inside this preloaded interpreter, pyfrag.stats() is the preloaded library's own
    env = dict(pyfrag_env(arena="4M"), PYTHONPATH=REPO_ROOT)
    done = subprocess.run([PYTHON, "-c", DEGRADED_CALLS], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True", "True", "0"], done.stdout + done.stderr
    assert done.stderr.count(WARNING) == 1, done.stderr


def test_arena_counters_in_process():
    code = """
    import pyfrag
    pyfrag.FragCache().close()
    print(pyfrag.stats().arena_cap_bytes, pyfrag.stats().arena_regions)
    """
    proc = run_python(code, env={"PYFRAG_ARENA": "1G"})
    assert proc.returncode == 0, proc.stderr
    cap, regions = map(int, proc.stdout.split())
    assert cap == 1 << 30 and regions == 1


# ---- item 8: PYFRAG_ARENA too large ---------------------------------------------------------

def test_too_large_arena_is_clamped_for_a_preloaded_program():
    base, mine = both(["ls", "/"], arena="32T")
    assert mine.stdout == base.stdout
    text = summary(mine.stderr)
    assert WARNING not in text, text


def test_too_large_arena_reads_back_clamped():
    code = """
    import pyfrag
    from pyfrag.options import get_option
    with pyfrag.FragCache() as cache:
        cache.alloc(1500).free()
    print(get_option("PYFRAG_ARENA"), pyfrag.stats().arena_cap_bytes)
    """
    proc = run_python(code, env={"PYFRAG_ARENA": "32T"})
    assert proc.returncode == 0, proc.stderr
    top = (0xFFFFFFFF >> 9) << 21  # what 32-bit page numbers reach: 16 TiB less one chunk
    value, cap = map(int, proc.stdout.split())
    assert value == top and cap <= top


@pytest.mark.parametrize("fault", ["fault_meta", "fault_reserve"])
def test_errno_is_kept_when_init_fails_and_libc_serves(programs, fault_library, fault):
    # pyfrag cannot initialise (no metadata, or no address space for the arena): every call
    # goes to libc, and the failed init (retried every 256th call) must not leave ENOMEM behind
    argv = [str(programs / "errno_kept")]
    base = subprocess.run(argv, env=plain_env(), capture_output=True, timeout=60)
    mine = subprocess.run(argv, env=pyfrag_env(fault_library, **{fault: 1}), capture_output=True,
                          timeout=60)
    assert base.stdout == b"ok 6000\n", base.stdout
    assert mine.stdout == base.stdout, mine.stdout + mine.stderr
    assert mine.returncode == 0
    assert mine.stderr.decode().count(WARNING) == 1, mine.stderr
