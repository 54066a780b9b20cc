# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag info`: what library is loaded, its options and counters, the machine's hugepages,
the shared arenas on this machine.

Contract: add_parser(subparsers) registers the command; run(args) prints a
text report, or with --json [FILE] one JSON object (stdout by default).
"""
from __future__ import annotations

import dataclasses
import json
import sys

from .. import __version__, shared_files, system
from .._native import loader
# (pyfrag.options and pyfrag.stats are the functions: import from the modules)
from ..options import options as list_options
from ..stats import arena_range, stats as read_stats


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("info", help="show the library, options, hugepages, counters",
                                   description=__doc__.splitlines()[1])
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help="write the report as JSON to FILE (stdout if no FILE)")
    parser.set_defaults(run=run)


def collect() -> dict:
    cdll = loader.lib()
    base, size = arena_range()
    return {
        "version": __version__,
        "library": {"path": loader.library_path(), "version": cdll.pf_version().decode(),
                    "abi": cdll.pf_abi_version()},
        "arena": {"base": base, "size": size},
        "options": [dict(dataclasses.asdict(opt), text=opt.text) for opt in list_options()],
        "hugepages": system.hugepages(),
        "stats": dataclasses.asdict(read_stats()),
        "shared_arenas": [dataclasses.asdict(f) for f in shared_files.arena_files()],
    }


def _mib(n) -> str:
    return "?" if n is None else "%.1f MiB" % (n / 2**20)


def format_text(report: dict) -> str:
    lib, arena, huge = report["library"], report["arena"], report["hugepages"]
    lines = [
        "pyfrag %s" % report["version"],
        "library   %s (version %s, ABI %d)" % (lib["path"], lib["version"], lib["abi"]),
        "arena     0x%x .. 0x%x (first region, %.1f GiB); %d region(s), %.1f GiB reserved, "
        "cap %.1f GiB" % (arena["base"], arena["base"] + arena["size"], arena["size"] / 2**30,
                          report["stats"]["arena_regions"],
                          report["stats"]["arena_reserved_bytes"] / 2**30,
                          report["stats"]["arena_cap_bytes"] / 2**30),
        "hugetlb   %s total, %s free, page size %s"
        % (huge["hugetlb_total"], huge["hugetlb_free"], _mib(huge["hugepage_size"])),
        "THP       enabled=%s defrag=%s" % (huge["thp_enabled"], huge["thp_defrag"]),
        "",
        "options (current value, default: meaning)",
    ]
    for opt in report["options"]:
        lines.append("  %-18s %-10s (default %s: %s)" % (opt["name"], opt["text"], opt["default"],
                                                        opt["doc"]))
    lines += ["", "stats"]
    width = max(len(name) for name in report["stats"])
    lines += ["  %-*s %d" % (width, name, value) for name, value in report["stats"].items()]
    lines += ["", "shared arenas (files; pyfrag.SharedArena.unlink(name) removes one left behind)"]
    for arena in report["shared_arenas"]:
        version = arena["layout_version"]
        lines.append("  %-24s %-7s %9s  %04o %-8s %s  %s" % (
            arena["name"], arena["kind"], _mib(arena["bytes"]), arena["mode"], arena["owner"],
            "layout %d" % version if version is not None else "unreadable or not an arena",
            arena["path"]))
    if not report["shared_arenas"]:
        lines.append("  none")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    report = collect()
    if args.json is None:
        sys.stdout.write(format_text(report))
    elif args.json == "-":
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
            out.write("\n")
    return 0
