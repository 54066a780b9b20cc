#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Run an unmodified program with its mallocs on pyfrag: pyfrag.run(cmd, stats=True).

The program is a Python child that builds and drops 200 000 small objects and
checks its own result. It runs three times: without pyfrag (to learn the right
result), with pyfrag preloaded, and with pyfrag preloaded and
PYTHONMALLOC=malloc. CPython brings its own allocator (pymalloc) for objects up
to 512 bytes, so on the second run pyfrag sees only the interpreter's larger
blocks; the third run turns pymalloc off and every object goes through malloc,
and so through pyfrag. stats=True makes the library print its counters on
stderr as the child exits: compare the "small (page_frag)" counts of the two.

The same from a shell:
    pyfrag run --stats -- env PYTHONMALLOC=malloc python3 -c '...'

Contract: the child's output and pyfrag's summary pass through (stdout and
stderr); one line per run follows on stdout; exits 0 when every run exited 0
with the right result, 1 otherwise.

    PYTHONPATH=. python3 examples/run_under_preload.py
"""
import subprocess
import sys

import pyfrag

CHILD = """
import sys
words = {str(i): [i, str(i * i)] for i in range(200000)}
total = sum(len(v[1]) for v in words.values())
del words
print("child: checksum", total, flush=True)
sys.exit(0 if len(sys.argv) < 2 or total == int(sys.argv[1]) else 1)
"""


def main() -> int:
    child = [sys.executable, "-c", CHILD]
    reference = subprocess.run(child, capture_output=True, text=True, check=True).stdout
    expected = reference.split()[-1]
    print("without pyfrag: checksum %s" % expected, flush=True)
    runs = (("pyfrag, pymalloc on", child + [expected]),
            ("pyfrag, PYTHONMALLOC=malloc", ["env", "PYTHONMALLOC=malloc"] + child + [expected]))
    codes = []
    for label, cmd in runs:
        code = pyfrag.run(cmd, stats=True)  # LD_PRELOAD=libpyfrag.so PYFRAG_STATS=1 cmd
        codes.append(code)
        print("%s: exit %d" % (label, code), flush=True)
    return 0 if codes == [0] * len(runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
