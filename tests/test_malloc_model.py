# SPDX-License-Identifier: GPL-2.0-only
"""The malloc front's model check (tests/malloc_model.py) on every route.

Each run is a Python process under LD_PRELOAD whose malloc family is
pyfrag's; the state machine in it drives malloc, calloc, realloc, memalign
and free across two threads against a model of live blocks and the pages
they pin. The adaptive route runs twice: as shipped, and with a pinning cap
and age so small that sites and the cap move back and forth during the run.
PYFRAG_MODEL_EXAMPLES sets the examples per run (default 150).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from test_preload import pyfrag_env

MODEL = os.path.join(REPO_ROOT, "tests", "malloc_model.py")


@pytest.mark.parametrize("route, options", [
    ("adaptive", {}),
    ("adaptive", {"pin_max": "64K", "pin_age": "1"}),
    ("frag", {}),
    ("compact", {}),
], ids=["adaptive", "adaptive-churning", "frag", "compact"])
def test_malloc_model(route, options):
    env = dict(pyfrag_env(route=route, **options), PYTHONPATH=REPO_ROOT)
    done = subprocess.run([sys.executable, MODEL], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-6000:]
    assert done.stdout.strip().endswith("model ok")
