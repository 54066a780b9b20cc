# SPDX-License-Identifier: GPL-2.0-only
"""The tools behind the command line: stress (pyfrag.tools.stress), bench, plot.

Contract: built on the public API and pyfrag._native; `import pyfrag`
never imports them, and importing them loads neither libpyfrag.so nor
psutil (the calls that need either import it).
"""
