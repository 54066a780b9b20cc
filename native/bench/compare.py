#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Compare allocators under the benchmarks in this folder: now `pyfrag bench`.

Kept so that old habits still work; every argument goes to `pyfrag bench`
(pyfrag/tools/bench.py, pyfrag/cli/bench.py), e.g.

    python3 native/bench/compare.py --runs 7 --json FILE
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from pyfrag import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli.main(["bench"] + sys.argv[1:]))
