# SPDX-License-Identifier: GPL-2.0-only
"""matplotlib for the commands that draw (`stress --plot`, `bench --plot`): optional.

Contract: load_pyplot() returns matplotlib.pyplot on the Agg backend (no
display needed), or None when matplotlib is not installed (the extra `plot`).
"""


def load_pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
