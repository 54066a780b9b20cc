# SPDX-License-Identifier: GPL-2.0-only
"""`python -m pyfrag`: the pyfrag command (see pyfrag.cli)."""
from pyfrag.cli import main; raise SystemExit(main())  # noqa: E702
