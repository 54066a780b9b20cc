# SPDX-License-Identifier: GPL-2.0-only
"""The shipping library is the allocator and nothing else.

The release libpyfrag.so (the one programs get under LD_PRELOAD) exports
exactly the public API of pyfrag.h and pyfrag_shared.h plus the libc
allocation names and C++'s operator new and delete; the stress loops are in libpyfrag_stress.so beside it, and
fault injection exists only in the debug, asan and tsan builds: a
PYFRAG_FAULT_* variable changes nothing under the release library.
"""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from conftest import REPO_ROOT, run_cli, scons_build

INCLUDE = os.path.join(REPO_ROOT, "native", "include")
# What a preloaded malloc must interpose: the whole malloc family glibc exports.
LIBC_NAMES = {"malloc", "free", "calloc", "realloc", "reallocarray", "cfree", "free_sized",
              "free_aligned_sized", "posix_memalign", "aligned_alloc", "memalign", "valloc",
              "pvalloc", "malloc_usable_size"}
# C++'s replaceable operator new and delete, every form (the adaptive route sees new's caller).
CXX_NAMES = {"_Znwm", "_Znam", "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t",
             "_ZnwmSt11align_val_t", "_ZnamSt11align_val_t",
             "_ZnwmSt11align_val_tRKSt9nothrow_t", "_ZnamSt11align_val_tRKSt9nothrow_t",
             "_ZdlPv", "_ZdaPv", "_ZdlPvm", "_ZdaPvm", "_ZdlPvRKSt9nothrow_t",
             "_ZdaPvRKSt9nothrow_t", "_ZdlPvSt11align_val_t", "_ZdaPvSt11align_val_t",
             "_ZdlPvmSt11align_val_t", "_ZdaPvmSt11align_val_t",
             "_ZdlPvSt11align_val_tRKSt9nothrow_t", "_ZdaPvSt11align_val_tRKSt9nothrow_t"}
FAULT_SYMBOLS = {"pf_debug_fault_set", "pf_debug_fault_get", "pf_debug_fault_name",
                 "pf_debug_fail_commit", "pf_debug_shared_hold_lock"}


def declared(header: str) -> set[str]:
    """The functions a public header declares with PF_API."""
    with open(os.path.join(INCLUDE, header)) as f:
        return set(re.findall(r"PF_API\b[^;(]*?\b(pf_\w+)\s*\(", f.read()))


def exported(path: str) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def release():
    """build/release, built now (whatever library the rest of the run tests)."""
    return scons_build("lib", "release")


@pytest.fixture(scope="module")
def debug():
    """build/debug, built now: a library with fault injection."""
    return scons_build("lib", "debug")


def test_headers_declare_what_the_package_uses():
    api = declared("pyfrag.h") | declared("pyfrag_shared.h")
    assert {"pf_alloc", "pf_free", "pf_cache_create", "pf_shared_create", "pf_stats_get"} <= api
    assert declared("pyfrag_debug.h") == FAULT_SYMBOLS


def test_release_library_exports_the_api_and_libc_names_only(release):
    names = exported(os.path.join(release, "libpyfrag.so"))
    api = declared("pyfrag.h") | declared("pyfrag_shared.h")
    interposed = LIBC_NAMES | CXX_NAMES
    assert names == api | interposed, (sorted(names - api - interposed),
                                        sorted((api | interposed) - names))


def test_stress_library_exports_the_stress_api_only(release):
    names = exported(os.path.join(release, "libpyfrag_stress.so"))
    assert names == declared("pyfrag_stress.h")


def test_debug_library_has_fault_injection(debug):
    names = exported(os.path.join(debug, "libpyfrag.so"))
    assert FAULT_SYMBOLS <= names
    assert not names & declared("pyfrag_stress.h")


# A program that commits chunks: sort allocates for its input (written below).
SORT = ["sort", "-n", os.path.join(REPO_ROOT, "build", "release", "sort-input.txt")]


@pytest.fixture(scope="module", autouse=True)
def sort_input(release):
    with open(SORT[-1], "w") as f:
        f.writelines("%d line %d\n" % (n * 7919 % 20011, n) for n in range(20000))


def run_stats(library: str, argv: list[str], fault: bool):
    # neither library here is a sanitizer build: a sanitizer runtime the run preloads stays out
    env = {"PYFRAG_LIBRARY": library, "LD_PRELOAD": ""}
    if fault:
        env["PYFRAG_FAULT_COMMIT"] = "1"
    return run_cli("run", "--stats", "--", *argv, env=env)


def summary_field(stderr: str, name: str) -> int:
    match = re.search(r"\b%s (\d+)" % re.escape(name), stderr)
    assert match, stderr
    return int(match.group(1))


@pytest.mark.parametrize("argv", [["true"], SORT], ids=["true", "sort"])
def test_fault_variables_change_nothing_in_release(release, argv):
    library = os.path.join(release, "libpyfrag.so")
    plain = run_stats(library, argv, fault=False)
    faulted = run_stats(library, argv, fault=True)
    assert plain.returncode == faulted.returncode == 0, faulted.stderr
    assert plain.stdout == faulted.stdout
    assert summary_field(faulted.stderr, "commit failures") == 0
    assert summary_field(faulted.stderr, "commits") == summary_field(plain.stderr, "commits")
    if argv is SORT:
        assert summary_field(faulted.stderr, "commits") > 0, faulted.stderr


def test_the_same_variable_fails_commits_in_the_debug_build(debug):
    # the control: the check above could fail, a library with fault injection obeys it
    library = os.path.join(debug, "libpyfrag.so")
    faulted = run_stats(library, SORT, fault=True)
    assert faulted.returncode == 0, faulted.stderr  # libc serves what pyfrag cannot
    assert summary_field(faulted.stderr, "commit failures") > 0, faulted.stderr
