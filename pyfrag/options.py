# SPDX-License-Identifier: GPL-2.0-only
"""The library's option table, and the calls that tune or trim it at run time.

Contract:
- `options()` lists every row of the C option table (environment name,
  default text, meaning) with its current value (pf_option_get).
- `set_option(name, value)` is pf_option_set: ValueError for an unknown
  name or a bad value, TypeError for a name that is not a str, FragError
  (errno EBUSY) for an option fixed at init.
- `trim()` returns how many empty chunks went back to the OS;
  `thread_flush()` drains the calling thread's default cache and page lists.
"""
from __future__ import annotations

from dataclasses import dataclass

from ._native import loader

HUGEPAGE_MODES = ("auto", "hugetlb", "thp", "off")  # pf_option_get values 0..3
ROUTE_MODES = ("adaptive", "frag", "compact")  # PYFRAG_ROUTE's values 0..2
_WORDS = {"PYFRAG_HUGEPAGES": HUGEPAGE_MODES, "PYFRAG_ROUTE": ROUTE_MODES}


@dataclass(frozen=True)
class Option:
    name: str
    default: str
    doc: str
    value: int

    @property
    def text(self) -> str:
        """The value as one would write it in the environment."""
        words = _WORDS.get(self.name, ())
        if 0 <= self.value < len(words):
            return words[self.value]
        return str(self.value)


def options() -> list[Option]:
    """Every option with its current value, in table order."""
    cdll = loader.lib()
    rows = []
    index = 0
    while True:
        name = cdll.pf_option_name(index)
        if name is None:
            return rows
        rows.append(Option(name.decode(), cdll.pf_option_default(index).decode(),
                           cdll.pf_option_doc(index).decode(), cdll.pf_option_get(name)))
        index += 1


def _name(name) -> bytes:
    if not isinstance(name, str):
        raise TypeError("an option name is a str such as 'PYFRAG_LIMIT', not %s"
                        % type(name).__name__)
    return _c_text(name, "option name")


def _c_text(text: str, what: str) -> bytes:
    if "\0" in text:  # C would read only up to it: another name or value than the one given
        raise ValueError("%s %r contains a NUL character" % (what, text))
    return text.encode()


def get_option(name: str) -> int:
    """The current value of one option (words as their index: hugepage modes 0..3, routes 0..2)."""
    return loader.lib().pf_option_get(_name(name))


def set_option(name: str, value) -> None:
    """Set an option by its environment name, e.g. set_option("PYFRAG_LIMIT", "64M")."""
    if isinstance(value, bool):
        value = int(value)
    loader.lib().pf_option_set(_name(name), _c_text(str(value), "option value"))


def trim() -> int:
    """Flush this thread's page lists; return empty chunks beyond PYFRAG_RETAIN to the OS."""
    return loader.lib().pf_trim()


def thread_flush() -> None:
    """Drain this thread's default cache and give its page lists back."""
    loader.lib().pf_thread_flush()
