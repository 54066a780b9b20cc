# SPDX-License-Identifier: GPL-2.0-only
"""Runs the C test programs (native/tests/*.c) that reach where ctypes cannot:
real threads freeing each other's fragments, options set before init, exact
page accounting. SCons builds them for the mode in PYFRAG_TEST_MODE
(release by default; CI also runs asan and tsan). The ones that inject faults
(they include pyfrag_debug.h) need a library with fault injection, which the
release build leaves out: under release they run from the debug build."""
import os
import pathlib
import subprocess

import pytest

from conftest import MODE, scons_build

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "native" / "tests").glob("test_*.c"))
PROGRAMS = [p.stem for p in SOURCES]
FAULT_PROGRAMS = {p.stem for p in SOURCES if '#include "pyfrag_debug.h"' in p.read_text()}


@pytest.fixture(scope="session")
def native_tests():
    """Build the C tests once per session; {program: its folder}."""
    built = pathlib.Path(scons_build("tests")) / "tests"
    folders = {p: built for p in PROGRAMS}
    if MODE == "release":
        debug = pathlib.Path(scons_build("tests", "debug")) / "tests"
        folders.update({p: debug for p in FAULT_PROGRAMS})
    return folders


def test_fault_programs_are_found():
    # the split above must see the fault tests, or release would skip them silently
    assert {"test_faults", "test_hostile", "test_shared"} <= FAULT_PROGRAMS


@pytest.mark.parametrize("program", PROGRAMS)
def test_c_program(native_tests, program):
    env = dict(os.environ)
    env.setdefault("TSAN_OPTIONS", "halt_on_error=1")
    env.setdefault("ASAN_OPTIONS", "halt_on_error=1")
    # LD_PRELOAD of a sanitizer runtime (for Python) must not leak into these programs
    env.pop("LD_PRELOAD", None)
    run = subprocess.run([str(native_tests[program] / program)], env=env, capture_output=True,
                         text=True, timeout=300)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert "not ok" not in run.stdout, report
    assert "Sanitizer" not in run.stderr, report
    assert run.stdout.rstrip().endswith(" 0 failed"), report
