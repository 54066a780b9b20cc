# SPDX-License-Identifier: GPL-2.0-only
"""Run unmodified programs with every allocation on pyfrag (LD_PRELOAD).

Contract:
- `library_path()` is the libpyfrag.so that would be loaded (PYFRAG_LIBRARY,
  then the package folder, then the build folder), found without loading it,
  so a sanitizer build can be named too. LibraryError if there is none.
- `preload_env(**options)` is a copy of os.environ (or of `base`) with that
  library first in LD_PRELOAD, before anything already there, and one
  PYFRAG_<NAME> variable per keyword: limit="64M", hugepages="thp",
  stats=True (True/False become 1/0, None removes the variable). When
  LD_PRELOAD already holds a sanitizer runtime (CI preloads libasan for the
  ASan build), pyfrag must still come first to be the malloc, so ASan's own
  "runtime comes first" check is switched off in ASAN_OPTIONS.
- `run(cmd, **options) -> int` runs cmd (a list, no shell) with that
  environment and returns its exit code, or 128 + N when signal N killed it.
- Importing this module loads nothing.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from ._native import loader

_OPTION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SANITIZER_RUNTIME = re.compile(r"(^|/)lib(asan|tsan|hwasan)\.so")


def library_path() -> str:
    """Absolute path of the libpyfrag.so to preload (not loaded here)."""
    if loader.is_loaded():
        return loader.library_path()
    return os.path.abspath(loader.find())


def _option_text(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def preload_env(base: Mapping[str, str] | None = None, **options) -> dict[str, str]:
    """Environment for a child process whose allocations all go to pyfrag."""
    env = dict(os.environ if base is None else base)
    library = library_path()
    existing = [entry for entry in re.split(r"[:\s]+", env.get("LD_PRELOAD", "")) if entry]
    env["LD_PRELOAD"] = ":".join([library] + [e for e in existing if e != library])
    if any(_SANITIZER_RUNTIME.search(entry) for entry in existing):
        asan = env.get("ASAN_OPTIONS", "")
        if "verify_asan_link_order" not in asan:
            env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "verify_asan_link_order=0"
    for name, value in options.items():
        if not _OPTION_NAME.match(name):
            raise ValueError("option names are lower-case words such as limit or hugepages, not %r"
                             % name)
        key = "PYFRAG_" + name.upper()
        if value is None:
            env.pop(key, None)
        else:
            env[key] = _option_text(value)
    return env


def exit_code(returncode: int) -> int:
    """A shell's view of a child's status: 128 + N for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def run(cmd: Sequence[str], **options) -> int:
    """Run cmd with pyfrag preloaded; its exit code (128 + signal if killed)."""
    if isinstance(cmd, (str, bytes)):
        raise TypeError("cmd is a list of arguments, e.g. ['python3', '-c', 'print(1)']")
    import subprocess  # only here: `import pyfrag` stays light
    env = preload_env(**options)
    return exit_code(subprocess.call(list(cmd), env=env))


# ---- reading PYFRAG_STATS=1 summaries ----------------------------------------------------------

_SUMMARY_HEAD = re.compile(r"^pyfrag stats \((?P<program>.*), pid (?P<pid>\d+)\):$")
_SUMMARY_LINE = re.compile(r"^  (?P<section>\S.*?)\s{2,}(?P<items>\S.*)$")
_SUMMARY_ITEM = re.compile(r"^(?P<label>.*?) (?P<value>\d+)$")


def parse_stats_summaries(text: str) -> list[dict]:
    """The summaries PYFRAG_STATS=1 printed into text (one per process that exited), in order.

    Each is {"program": str, "pid": int, "counters": {"section label": int}}, e.g.
    counters["allocations small (page_frag)"]. Lines that are not part of a summary
    (the program's own stderr) are skipped.
    """
    summaries: list[dict] = []
    current = None
    for line in text.splitlines():
        head = _SUMMARY_HEAD.match(line)
        if head:
            current = {"program": head["program"], "pid": int(head["pid"]), "counters": {}}
            summaries.append(current)
            continue
        body = _SUMMARY_LINE.match(line) if current is not None else None
        if not body:
            current = None
            continue
        for item in re.split(r"[,;] ", body["items"]):
            found = _SUMMARY_ITEM.match(item.strip())
            if found:
                current["counters"]["%s %s" % (body["section"], found["label"])] = int(found["value"])
    return summaries
