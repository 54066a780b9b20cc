# SPDX-License-Identifier: GPL-2.0-only
"""Check that libpyfrag's layers depend one way, and print the picture.

Usage: python native/check_layers.py [--objects DIR] [--report FILE]

Contract:
- The layers are native/layers.py's LAYERS, bottom to top, one folder of
  native/src each. Every folder is a layer and every layer a folder.
- Includes: a file may include the public headers (native/include), its own
  layer's files and the headers of layers below; a layer's own header only
  the public headers and headers of layers below. Nothing else: no "../",
  no header of a layer above.
- Calls: with --objects (the build folder holding src/<layer>/*.os), every
  pf_/pf__ symbol an object leaves undefined must be defined by an object of
  its own layer or one below. The edges found are printed with a count and
  an example symbol each.
- native/README.md's layer table lists the layers in this order, each with
  exactly the files its folder holds.
- The components beside the library (native/stress, native/dpdk) use the public
  headers only.
- Prints the layers, their files and the edges; exit 0 if every rule held,
  1 with each violation named otherwise. --report writes the same text.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

NATIVE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, NATIVE)
from layers import LAYERS  # noqa: E402

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
PUBLIC = set(os.listdir(os.path.join(NATIVE, "include")))
README_ROW = re.compile(r"^\|\s*`?(\w+)/?`?\s*\|\s*([^|]*)\|", re.M)


def layer_files(src: str) -> dict[str, list[str]]:
    return {folder: sorted(f for f in os.listdir(os.path.join(src, folder))
                           if f.endswith((".c", ".h")))
            for folder, *_ in LAYERS if os.path.isdir(os.path.join(src, folder))}


def check_folders(src: str, problems: list[str]) -> None:
    folders = {d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d))}
    order = [layer[0] for layer in LAYERS]
    for extra in sorted(folders - set(order)):
        problems.append("native/src/%s/ is not a layer in native/layers.py" % extra)
    for missing in [f for f in order if f not in folders]:
        problems.append("layer %s has no folder native/src/%s/" % (missing, missing))
    stray = [f for f in os.listdir(src) if os.path.isfile(os.path.join(src, f))]
    for name in sorted(stray):
        problems.append("native/src/%s is in no layer's folder" % name)
    for folder, header, *_ in LAYERS:
        if header and not os.path.isfile(os.path.join(src, header)):
            problems.append("layer %s: its header %s is missing" % (folder, header))


def check_includes(src: str, files: dict[str, list[str]], problems: list[str]) -> None:
    rank = {layer[0]: i for i, layer in enumerate(LAYERS)}
    headers = {layer[1]: layer[0] for layer in LAYERS if layer[1]}
    for folder, names in files.items():
        for name in names:
            path = folder + "/" + name
            with open(os.path.join(src, path)) as f:
                includes = INCLUDE.findall(f.read())
            is_layer_header = path in headers
            for inc in includes:
                if inc in PUBLIC:
                    continue
                target = inc.split("/")[0] if "/" in inc else None
                if target not in rank or ".." in inc:
                    problems.append('%s includes "%s": neither a public header nor a layer\'s'
                                    % (path, inc))
                elif rank[target] > rank[folder]:
                    problems.append('%s includes "%s": %s is above %s'
                                    % (path, inc, target, folder))
                elif is_layer_header and target == folder:
                    problems.append('%s, the %s layer\'s header, includes "%s" of its own layer'
                                    % (path, folder, inc))


def object_symbols(objects: str):
    """{layer: {object: (defined, undefined)}} from nm over DIR/src/<layer>/*.os."""
    result = {}
    for folder, *_ in LAYERS:
        where = os.path.join(objects, "src", folder)
        if not os.path.isdir(where):
            continue
        for name in sorted(os.listdir(where)):
            if not name.endswith((".os", ".o")):
                continue
            out = subprocess.run(["nm", os.path.join(where, name)], capture_output=True,
                                 text=True, check=True).stdout
            defined, undefined = set(), set()
            for line in out.splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] == "U":
                    undefined.add(parts[1])
                elif len(parts) == 3 and parts[1] in "TDBRVWC":
                    defined.add(parts[2])
            result.setdefault(folder, {})[folder + "/" + name] = (defined, undefined)
    return result


def check_calls(objects: str, problems: list[str]) -> dict:
    rank = {layer[0]: i for i, layer in enumerate(LAYERS)}
    symbols = object_symbols(objects)
    owner = {}
    for folder, objs in symbols.items():
        for obj, (defined, _) in objs.items():
            for sym in defined:
                owner[sym] = (folder, obj)
    edges: dict[tuple[str, str], set[str]] = {}
    for folder, objs in symbols.items():
        for obj, (_, undefined) in objs.items():
            for sym in sorted(undefined):
                if not sym.startswith("pf_") or sym not in owner:
                    continue
                target, where = owner[sym]
                if target == folder:
                    continue
                edges.setdefault((folder, target), set()).add(sym)
                if rank[target] > rank[folder]:
                    problems.append("%s calls %s, defined in %s: %s is above %s"
                                    % (obj, sym, where, target, folder))
    if not symbols:
        problems.append("no objects under %s/src/<layer>/: build first" % objects)
    return edges


def check_readme(files: dict[str, list[str]], problems: list[str]) -> None:
    with open(os.path.join(NATIVE, "README.md")) as f:
        text = f.read()
    rows = [(m.group(1), m.group(2)) for m in README_ROW.finditer(text)
            if m.group(1) in files or m.group(1) in {layer[0] for layer in LAYERS}]
    listed = [name for name, _ in rows]
    order = [layer[0] for layer in LAYERS]
    if listed != order:
        problems.append("native/README.md's layer table lists %s; the folders are %s"
                        % (listed, order))
    for name, cell in rows:
        said = sorted(re.findall(r"`([\w.]+\.[ch])`", cell))
        if name in files and said != files[name]:
            problems.append("native/README.md: row %s lists %s, the folder holds %s"
                            % (name, said, files[name]))


BESIDE = ("stress", "dpdk")  # the components beside the library: public API only


def check_stress(problems: list[str]) -> None:
    for folder in BESIDE:
        where = os.path.join(NATIVE, folder)
        local = {n for n in os.listdir(where) if os.path.isfile(os.path.join(where, n))}
        for name in sorted(local):
            with open(os.path.join(where, name)) as f:
                for inc in INCLUDE.findall(f.read()):
                    if inc not in PUBLIC and inc not in local:
                        problems.append('%s/%s includes "%s": the %s library uses the '
                                        "public API only" % (folder, name, inc, folder))


def report(files, edges, objects) -> str:
    lines = ["layers, bottom to top (native/layers.py; each uses only those below):"]
    for i, (folder, header, builds, _doc) in enumerate(LAYERS, 1):
        note = "" if builds == "all" else "  [%s builds only]" % builds
        lines.append("  %d %-10s %s%s" % (i, folder, " ".join(files.get(folder, [])), note))
    if objects is not None:
        lines.append("edges, from the objects' undefined symbols (layer -> layer below: count, e.g.):")
        rank = {layer[0]: i for i, layer in enumerate(LAYERS)}
        for (a, b), syms in sorted(edges.items(), key=lambda e: (rank[e[0][0]], -rank[e[0][1]])):
            arrow = "->" if rank[b] < rank[a] else "=> UPWARD"
            lines.append("  %-10s %s %-10s %3d  %s" % (a, arrow, b, len(syms), sorted(syms)[0]))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", help="build folder with src/<layer>/*.os (e.g. build/release)")
    parser.add_argument("--src", default=os.path.join(NATIVE, "src"))
    parser.add_argument("--report", help="also write the report to this file")
    args = parser.parse_args(argv)
    problems: list[str] = []
    check_folders(args.src, problems)
    files = layer_files(args.src)
    check_includes(args.src, files, problems)
    edges = check_calls(args.objects, problems) if args.objects else {}
    check_readme(files, problems)
    check_stress(problems)
    text = report(files, edges, args.objects)
    if problems:
        text += "layer check FAILED:\n" + "".join("  %s\n" % p for p in problems)
    else:
        text += "layer check ok: %d layers, %d files, %d edges, every one downward\n" % (
            len(LAYERS), sum(len(v) for v in files.values()), len(edges))
    sys.stdout.write(text)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
