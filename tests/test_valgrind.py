# SPDX-License-Identifier: GPL-2.0-only
"""Valgrind understands pyfrag's fragments: `scons valgrind=1` builds a library
whose C API tells memcheck that fragments are heap blocks (native/src/valgrind.c),
so a user's program linked against it gets memcheck's leak, use-after-free,
overrun and uninitialised-value reports for its fragments.

native/tests/valgrind/memcheck_demo.c has one bug per argument; each runs
under memcheck here. Needs valgrind (Debian/Ubuntu package `valgrind`, which
also brings the headers); skipped without it, and in the sanitizer passes
(a sanitizer runtime and valgrind do not mix).
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

from conftest import scons_build

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODE = os.environ.get("PYFRAG_TEST_MODE", "release")
BUILD = ROOT / "build" / "debug-valgrind"
SHIPPED = ROOT / "pyfrag" / "libpyfrag.so"
HEADER_DIRS = ("/usr/include", "/usr/local/include")

pytestmark = [
    pytest.mark.skipif(shutil.which("valgrind") is None,
                       reason="valgrind is not installed (apt-get install valgrind)"),
    pytest.mark.skipif(not any(os.path.exists(os.path.join(d, "valgrind", "memcheck.h"))
                               for d in HEADER_DIRS),
                       reason="valgrind's headers are missing (apt-get install valgrind)"),
    pytest.mark.skipif(MODE != "release", reason="valgrind runs in the plain pass, not under "
                       "a sanitizer (PYFRAG_TEST_MODE=%s)" % MODE),
]


@pytest.fixture(scope="module")
def demo():
    """Build the valgrind=1 variant (its own folder; the shipped library is left alone)."""
    before = SHIPPED.stat().st_mtime_ns if SHIPPED.exists() else None
    scons_build("tests", "debug", "valgrind=1")
    assert (BUILD / "libpyfrag.so").exists()
    after = SHIPPED.stat().st_mtime_ns if SHIPPED.exists() else None
    assert after == before, "a valgrind=1 build must not touch pyfrag/libpyfrag.so"
    return BUILD / "tests" / "valgrind" / "memcheck_demo"


def memcheck(demo, what: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD",)}
    return subprocess.run(["valgrind", "--leak-check=full", "--error-exitcode=99", str(demo), what],
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_valgrind_build_defines_its_hooks(demo):
    nm = subprocess.run(["nm", str(BUILD / "libpyfrag.so")], capture_output=True, text=True)
    assert "pf__vg_alloc" in nm.stdout
    shipped = subprocess.run(["nm", str(SHIPPED)], capture_output=True, text=True)
    assert "pf__vg_alloc" not in shipped.stdout  # the default build has none


def test_clean_program_has_no_errors(demo):
    run = memcheck(demo, "clean")
    assert run.returncode == 0, run.stderr
    assert "ERROR SUMMARY: 0 errors" in run.stderr
    assert "definitely lost" not in run.stderr


def test_leaked_fragment_is_reported(demo):
    run = memcheck(demo, "leak")
    assert run.returncode == 99, run.stderr
    assert "100 bytes in 1 blocks are definitely lost" in run.stderr, run.stderr
    assert "pf_cache_alloc" in run.stderr and "leak (memcheck_demo.c" in run.stderr
    assert "definitely lost: 100 bytes in 1 blocks" in run.stderr


def test_use_after_free_is_reported(demo):
    run = memcheck(demo, "uaf")
    assert run.returncode == 99
    assert "Invalid read of size 1" in run.stderr and "uaf (memcheck_demo.c" in run.stderr


def test_overrun_into_the_page_tail_is_reported(demo):
    run = memcheck(demo, "overrun")
    assert run.returncode == 99
    assert "Invalid write of size 1" in run.stderr
    assert "0 bytes after a block of size 100" in run.stderr


def test_uninitialised_fragment_bytes_are_reported(demo):
    run = memcheck(demo, "uninit")
    assert run.returncode == 99
    assert "depends on uninitialised value" in run.stderr
