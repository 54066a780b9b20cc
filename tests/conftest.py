# SPDX-License-Identifier: GPL-2.0-only
"""Shared fixtures for the Python tests.

Contract:
- `lib`: the loaded, checked libpyfrag.so (a missing library is an error,
  not a skip: build it with `scons` first).
- `cache`: a FragCache on the test's thread, closed afterwards.
- `fault_library`: the path of a libpyfrag.so with fault injection
  (pf_debug_*, PYFRAG_FAULT_*; the release library has none): the loaded
  one if it has it (CI's asan pass), else build/debug/libpyfrag.so, built
  once per session. It is for children only (PYFRAG_LIBRARY, LD_PRELOAD):
  a second libpyfrag.so must never be loaded into the pytest process.
- `scons_build(target, mode)`: build with the SCons of the running interpreter
  (`SCONS`), warning-free; returns the mode's build folder.
- `run_python(code, env=None)`: run a snippet in a fresh interpreter with
  this checkout's pyfrag importable, extra environment variables from
  `env` (for options read at init); returns the CompletedProcess (text).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import pyfrag
from pyfrag._native import loader

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the build mode whose native programs the tests run (CI also runs asan and tsan)
MODE = os.environ.get("PYFRAG_TEST_MODE", "release")
# The malloc front's route the preload suites run on (empty: the library's default, adaptive).
ROUTE = os.environ.get("PYFRAG_TEST_ROUTE", "")


# SCons from the interpreter running the tests (the venv the README installs it
# into), never a `scons` found on PATH: a fresh machine has none there.
SCONS = [sys.executable, "-m", "SCons"]


def scons_build(target: str, mode: str = MODE, *options: str) -> str:
    """Build an SCons target of a mode, warning-free; the mode's build folder."""
    build = subprocess.run([*SCONS, "-Q", "mode=" + mode, *options, target], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout + build.stderr
    assert "warning:" not in build.stderr, build.stderr
    return os.path.join(REPO_ROOT, "build", mode)


def run_python(code: str, env: dict | None = None, args=(), timeout: float = 120):
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [REPO_ROOT] + ([full_env["PYTHONPATH"]] if full_env.get("PYTHONPATH") else []))
    full_env.update(env or {})
    return subprocess.run([sys.executable, *args, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def run_cli(*argv: str, env: dict | None = None, timeout: float = 120):
    """`python -m pyfrag ARGV...` in a fresh interpreter (same environment rules)."""
    full_env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "pyfrag", *argv], env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def lib():
    return loader.lib()


@pytest.fixture
def cache(lib):
    with pyfrag.FragCache() as frag_cache:
        yield frag_cache


@pytest.fixture
def plain_cache(lib):
    """A cache without spares (recycle=False): every free() reaches page_frag, for the
    tests that watch page_frag's own counters and pages through Python."""
    with pyfrag.FragCache(recycle=False) as frag_cache:
        yield frag_cache


@pytest.fixture(scope="session")
def fault_library(lib):
    if hasattr(lib, "pf_debug_fault_set"):  # a dlsym on the loaded library, nothing loaded
        return loader.library_path()
    return os.path.join(scons_build("lib", "debug"), "libpyfrag.so")
