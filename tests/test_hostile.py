# SPDX-License-Identifier: GPL-2.0-only
"""Hostile input to the Python API and the command line: never a crash, never a
corrupted fragment, a clear exception (or exit 2 and a message) instead.

Already covered in test_python_api.py, not repeated here: negative, zero,
huge and wrongly typed sizes and alignments (test_bad_size_rejected_before_c,
test_bad_alignment_rejected_before_c, test_c_refuses_bad_arguments_too), use
after close (test_use_after_close_raises), a FragCache used from another
thread (test_cache_used_from_another_thread_raises), a second free()
(test_double_free_raises), racing frees (test_racing_frees_of_one_fragment_free_it_once),
a foreign address given to C (test_foreign_address_is_refused_by_c). The C API
side is native/tests/test_hostile.c.
"""
from __future__ import annotations

import copy
import ctypes
import errno
import os
import pickle

import pytest

import pyfrag
from conftest import run_cli, run_python
from pyfrag.options import get_option


@pytest.fixture
def neighbours(cache):
    """Two fragments around the one under attack; their bytes must survive."""
    before = cache.alloc(64)
    target = cache.alloc(64)
    after = cache.alloc(64)
    before[:] = b"\xaa" * 64
    target[:] = b"\x55" * 64
    after[:] = b"\xcc" * 64
    yield target
    assert bytes(before) == b"\xaa" * 64 and bytes(after) == b"\xcc" * 64
    for frag in (before, target, after):
        if not frag.freed:
            frag.free()


def test_free_after_drain(lib, plain_cache):
    """A drained cache gives its page up; the fragment keeps it alive until freed."""
    cache = plain_cache
    frag = cache.alloc(100)
    frag[:] = b"x" * 100
    address = frag.address
    cache.drain()
    assert cache.info().page == 0
    assert bytes(frag) == b"x" * 100  # still valid memory
    page = frag.page()
    assert page.in_use and page.refcount == 1  # the fragment's reference only
    frag.free()
    assert not pyfrag.page_info(address).in_use  # the last reference took the page back
    with pytest.raises(ValueError) as caught:  # C refuses a second free of that address
        lib.pf_free(address)
    assert caught.value.errno == errno.EINVAL


def test_fragment_and_cache_cannot_be_copied_or_pickled(cache, neighbours):
    """A copy would be a second owner: its free() would free the fragment twice."""
    for obj in (cache, neighbours):
        for make in (copy.copy, copy.deepcopy, pickle.dumps):
            with pytest.raises(TypeError, match="cannot be copied or pickled"):
                make(obj)
    assert neighbours.page().refcount == cache.info().bias + 3


def test_out_of_range_and_mistyped_item_access(neighbours):
    frag = neighbours
    for key in (64, -65, 2**63, -(2**63), 2**64):
        with pytest.raises(IndexError):
            frag[key]
        with pytest.raises(IndexError):
            frag[key] = 1
    with pytest.raises(ValueError):
        frag[::0]
    for value in (256, -1):
        with pytest.raises(ValueError):
            frag[0] = value
    for value in ("a", None, 1.5, b"ab"):
        with pytest.raises(TypeError):
            frag[0] = value
    for value in (b"x" * 65, b"x" * 63, b""):
        with pytest.raises(ValueError):
            frag[:] = value
    with pytest.raises(TypeError):
        frag[0:2] = None
    with pytest.raises(TypeError):
        frag["0"]
    assert bytes(frag) == b"\x55" * 64
    assert frag[60:1000] == b"\x55" * 4 and frag[1000:2000] == b""


def test_bad_option_names_and_values(lib):
    limit = get_option("PYFRAG_LIMIT")
    for name in (5, None, b"PYFRAG_LIMIT", ["PYFRAG_LIMIT"]):
        with pytest.raises(TypeError, match="option name"):
            pyfrag.set_option(name, 1)
    for name in ("NOPE", "pyfrag_limit", "", "PYFRAG_LIMIT\x00"):
        with pytest.raises(ValueError):
            pyfrag.set_option(name, 1)
    for value in (-1, "12Q", None, "", 1.5, "1 M", 2**70, "0x10", "1\x00junk"):
        with pytest.raises(ValueError):
            pyfrag.set_option("PYFRAG_LIMIT", value)
    with pytest.raises(ValueError):
        pyfrag.set_option("PYFRAG_HUGEPAGES", "maybe")
    with pytest.raises(pyfrag.FragError) as caught:
        pyfrag.set_option("PYFRAG_ARENA", "1G")  # fixed once the arena exists
    assert caught.value.errno == errno.EBUSY
    assert get_option("PYFRAG_LIMIT") == limit


def test_page_info_of_nonsense_addresses(lib):
    for address in (0, 1, 2**64 - 1, ctypes.addressof(ctypes.c_int())):
        with pytest.raises(ValueError):
            pyfrag.page_info(address)
    for address in (-1, 2**64, 2**70, -(2**64)):  # no pointer at all
        with pytest.raises(ValueError, match="not a pointer"):
            pyfrag.page_info(address)
    for address in (None, "0", 1.0):  # not an int: a TypeError, as for sizes
        with pytest.raises(TypeError):
            pyfrag.page_info(address)


def test_handles_are_typed(lib, cache):
    """A cache where an arena is expected (or the other way round, or an int) is refused by
    ctypes before C runs: each handle has its own pointer type."""
    name = "hostile-handles-%d" % os.getpid()
    with pyfrag.SharedArena(name, create=True, size=2 << 20, backing="4k") as arena:
        for call, wrong in ((lib.pf_cache_drain, arena), (lib.pf_shared_reap, cache),
                            (lib.pf_cache_drain, cache.info().page), (lib.pf_shared_reap, 4096)):
            with pytest.raises(ctypes.ArgumentError, match="TypeError: expected LP_pf_"):
                call(wrong)
        lib.pf_cache_drain(cache)  # the right objects pass
        assert lib.pf_shared_reap(arena) == 0
        assert cache.info().page == 0 and arena.stats().processes == 1


def test_garbage_in_the_environment_falls_back_to_defaults():
    """Bad option values in the environment are ignored (defaults), never fatal."""
    code = """
    import pyfrag
    from pyfrag.options import get_option
    with pyfrag.FragCache() as cache:
        cache.alloc(1500).free()
    print(get_option("PYFRAG_LIMIT"), get_option("PYFRAG_HUGEPAGES"), get_option("PYFRAG_RETAIN"))
    """
    proc = run_python(code, env={"PYFRAG_LIMIT": "lots", "PYFRAG_HUGEPAGES": "banana",
                                 "PYFRAG_RETAIN": "-3", "PYFRAG_ARENA": "12Q"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "0", "1"]


def test_too_large_arena_size_is_clamped_not_fatal():
    code = """
    import pyfrag
    from pyfrag.options import get_option
    for _ in range(2):
        with pyfrag.FragCache() as cache:
            cache.alloc(1500).free()
    print(get_option("PYFRAG_ARENA"))
    """
    proc = run_python(code, env={"PYFRAG_ARENA": "100T"})  # page numbers are 32-bit: 16 TiB at most
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str((0xFFFFFFFF >> 9) << 21)]


# ---- the command line -------------------------------------------------------------------

BAD_COMMAND_LINES = [
    ([], "a command is required"),
    (["bogus"], "invalid choice"),
    (["info", "--json", "a", "b"], "unrecognized arguments"),
    (["stress", "--duration", "-1"], "--duration"),
    (["stress", "--duration", "soon"], "--duration"),
    (["stress", "--workers", "0"], "--workers"),
    (["stress", "--workers", "1e9"], "--workers"),
    (["stress", "--pairs", "1.5"], "--pairs"),
    (["stress", "--sizes", "0"], "--sizes"),
    (["stress", "--sizes", "5-3"], "--sizes"),
    (["stress", "--sizes", "99999"], "--sizes"),
    (["stress", "--sizes", "/nonexistent/sizes.txt"], "--sizes"),
    (["stress", "--workload", "nope"], "--workload"),
    (["stress", "--ops", "5", "--duration", "3"], "not allowed with"),
    (["stress", "--seed", "-3"], "--seed"),
    (["stress", "--interval", "0"], "--interval"),
    (["stress", "--fault-crash", "300"], "--fault-crash"),
    (["stress", "--json", "/nonexistent/dir/out.json", "--ops", "1"], "does not exist"),
    (["run"], "CMD"),
    (["run", "--"], "CMD"),
    (["run", "--hugepages", "nope", "--", "true"], "--hugepages"),
    (["run", "--limit", "12Q", "--", "true"], "--limit"),
    (["run", "--limit", "-5", "--", "true"], "--limit"),
    (["run", "--limit", "99999999999T", "--", "true"], "--limit"),
]


@pytest.mark.parametrize("argv, says", BAD_COMMAND_LINES, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else None)
def test_bad_command_lines_exit_2_with_a_message(argv, says):
    proc = run_cli(*argv, timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "error:" in proc.stderr and says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_of_a_missing_program_is_127(lib):
    proc = run_cli("run", "--", "/nonexistent/program")
    assert proc.returncode == 127
    assert "command not found" in proc.stderr and "Traceback" not in proc.stderr
