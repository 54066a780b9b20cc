# SPDX-License-Identifier: GPL-2.0-only
"""Runs the C test programs (native/tests/*.c) that reach where ctypes cannot:
real threads freeing each other's fragments, options set before init, exact
page accounting. SCons builds them for the mode in PYFRAG_TEST_MODE
(release by default; CI also runs asan and tsan)."""
import os
import pathlib
import subprocess

import pytest

from conftest import scons_build

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROGRAMS = sorted(p.stem for p in (ROOT / "native" / "tests").glob("test_*.c"))


@pytest.fixture(scope="session")
def native_tests():
    """Build the C tests of this mode once per session; their folder."""
    return pathlib.Path(scons_build("tests")) / "tests"


@pytest.mark.parametrize("program", PROGRAMS)
def test_c_program(native_tests, program):
    env = dict(os.environ)
    env.setdefault("TSAN_OPTIONS", "halt_on_error=1")
    env.setdefault("ASAN_OPTIONS", "halt_on_error=1")
    # LD_PRELOAD of a sanitizer runtime (for Python) must not leak into these programs
    env.pop("LD_PRELOAD", None)
    run = subprocess.run([str(native_tests / program)], env=env, capture_output=True,
                         text=True, timeout=300)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert "not ok" not in run.stdout, report
    assert "Sanitizer" not in run.stderr, report
    assert run.stdout.rstrip().endswith(" 0 failed"), report
