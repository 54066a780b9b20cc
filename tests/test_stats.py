# SPDX-License-Identifier: GPL-2.0-only
"""Loading and checking the library, statistics, options, and smaps-based hugepage coverage."""
from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

import pyfrag
from conftest import run_python
from pyfrag import system
from pyfrag._native import loader
from pyfrag._native.errors import LibraryError
from pyfrag.stats import (FIELDS, HugepageCoverage, SmapsTotals, arena_range, field_docs,
                          stats_snapshot)

MiB = 1 << 20


# ---- loading ---------------------------------------------------------------------------

def test_library_path_is_absolute_and_is_the_mapped_file(lib):
    path = pyfrag.library_path()
    assert os.path.isabs(path) and os.path.isfile(path)
    assert os.path.basename(path) == "libpyfrag.so"
    with open("/proc/self/maps") as maps:
        assert path in maps.read()


def test_import_does_not_load_the_library():
    proc = run_python("""
        import pyfrag, pyfrag.cli
        from pyfrag._native import loader
        mapped = lambda: "libpyfrag" in open("/proc/self/maps").read()
        print(mapped(), loader.is_loaded())
        pyfrag.stats()
        print(mapped(), loader.is_loaded())
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False", "True", "True"]


def test_import_stays_light():
    """`import pyfrag` is the public API only; the command line adds no tool or psutil."""
    proc = run_python("""
        import sys
        loaded = lambda prefix: sorted(m for m in sys.modules if m.startswith(prefix))
        import pyfrag
        print(loaded("pyfrag.tools"), loaded("pyfrag.cli"), loaded("psutil"))
        import pyfrag.cli
        print(loaded("pyfrag.tools.stress.harness"), loaded("psutil"))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[] [] []", "[] []"]


def test_pyfrag_library_env_picks_the_file(lib, tmp_path):
    copy = tmp_path / "libpyfrag.so"
    shutil.copy(pyfrag.library_path(), copy)
    proc = run_python("import pyfrag; print(pyfrag.library_path())",
                      env={"PYFRAG_LIBRARY": str(copy)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(copy)


def test_missing_library_says_what_to_do(tmp_path):
    missing = tmp_path / "nowhere" / "libpyfrag.so"
    proc = run_python("""
        import pyfrag
        try:
            pyfrag.stats()
        except pyfrag.LibraryError as exc:
            print(exc)
    """, env={"PYFRAG_LIBRARY": str(missing)})
    assert proc.returncode == 0, proc.stderr
    for needed in (str(missing), "scons", "pip install .", "PYFRAG_LIBRARY"):
        assert needed in proc.stdout


def test_not_a_library_is_a_library_error(tmp_path):
    bogus = tmp_path / "libpyfrag.so"
    bogus.write_text("not an ELF file\n")
    proc = run_python("""
        import pyfrag
        try:
            pyfrag.FragCache()
        except pyfrag.LibraryError as exc:
            print(exc)
    """, env={"PYFRAG_LIBRARY": str(bogus)})
    assert proc.returncode == 0, proc.stderr
    assert "cannot load %s" % bogus in proc.stdout and "scons" in proc.stdout


@pytest.mark.parametrize("size_delta, version", [(8, loader.STATS_VERSION),
                                                 (-8, loader.STATS_VERSION),
                                                 (0, loader.STATS_VERSION + 1)])
def test_stats_header_mismatch_is_explained(size_delta, version):
    struct = loader.stats_struct_for(list(FIELDS))
    size = ctypes.sizeof(struct) + size_delta
    with pytest.raises(LibraryError) as caught:
        loader.check_stats_header("/some/libpyfrag.so", struct, size, version)
    message = str(caught.value)
    for needed in ("/some/libpyfrag.so", "size %d" % size, "version %d" % version, "rebuild",
                   "scons"):
        assert needed in message
    loader.check_stats_header("/some/libpyfrag.so", struct, ctypes.sizeof(struct),
                              loader.STATS_VERSION)  # match: no error


def test_stats_field_names_are_checked():
    class FakeTable:  # stands for the library's name table, nothing else
        def __init__(self, names):
            self.names = names

        def pf_stats_field_count(self):
            return len(self.names)

        def pf_stats_field_name(self, i):
            return self.names[i].encode()

    from pyfrag.stats import _check_field_names
    _check_field_names(FakeTable(list(FIELDS)), "/x/libpyfrag.so")
    renamed = list(FIELDS[:-1]) + ["thread_count"]
    with pytest.raises(LibraryError, match=r"lacks \['%s'\].*extra \['thread_count'\]" % FIELDS[-1]):
        _check_field_names(FakeTable(renamed), "/x/libpyfrag.so")
    with pytest.raises(LibraryError, match="orders them differently"):
        _check_field_names(FakeTable(list(reversed(FIELDS))), "/x/libpyfrag.so")


# ---- stats -------------------------------------------------------------------------------

def test_stats_fields_match_the_library(lib):
    names = [lib.pf_stats_field_name(i).decode() for i in range(lib.pf_stats_field_count())]
    assert names == [f.name for f in dataclasses.fields(pyfrag.Stats)]
    assert stats_snapshot().size == 8 + 8 * len(names)
    snapshot = pyfrag.stats()
    assert all(isinstance(getattr(snapshot, n), int) for n in names)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.allocs = 0


def test_stats_count_what_happens(plain_cache):
    cache = plain_cache
    before = pyfrag.stats()
    frags = [cache.alloc(100) for _ in range(10)]
    middle = pyfrag.stats()
    for frag in frags:
        frag.free()
    after = pyfrag.stats()
    assert middle.allocs - before.allocs == 10
    assert after.frees - middle.frees == 10
    assert middle.committed_bytes >= 2 * MiB and middle.pages_in_use >= 1


def test_field_docs_cover_every_counter(lib):
    docs = field_docs()
    assert list(docs) == list(FIELDS) and all(docs.values())


# ---- options -------------------------------------------------------------------------------

def test_option_table(lib):
    table = {opt.name: opt for opt in pyfrag.options()}
    for name in ("PYFRAG_HUGEPAGES", "PYFRAG_RETAIN", "PYFRAG_LIMIT", "PYFRAG_RESERVE",
                 "PYFRAG_ARENA"):
        assert name in table and table[name].doc
    assert table["PYFRAG_ARENA"].default == "64G"
    assert table["PYFRAG_RESERVE"].default == "64K"
    assert table["PYFRAG_HUGEPAGES"].text in ("auto", "hugetlb", "thp", "off")


def test_set_option_round_trip(lib):
    original = lib.pf_option_get(b"PYFRAG_LIMIT")
    try:
        pyfrag.set_option("PYFRAG_LIMIT", "64M")
        assert {o.name: o.value for o in pyfrag.options()}["PYFRAG_LIMIT"] == 64 * MiB
        pyfrag.set_option("PYFRAG_LIMIT", 3 * MiB)
        assert lib.pf_option_get(b"PYFRAG_LIMIT") == 3 * MiB
    finally:
        pyfrag.set_option("PYFRAG_LIMIT", original)
    assert lib.pf_option_get(b"PYFRAG_LIMIT") == original


def test_set_option_errors(lib):
    arena_range()  # the arena exists: fixed options are frozen now
    with pytest.raises(ValueError) as unknown:
        pyfrag.set_option("PYFRAG_NO_SUCH_THING", "1")
    assert unknown.value.errno == errno.EINVAL and "unknown option" in str(unknown.value)
    with pytest.raises(ValueError, match="parse"):
        pyfrag.set_option("PYFRAG_LIMIT", "banana")
    with pytest.raises(pyfrag.FragError) as busy:
        pyfrag.set_option("PYFRAG_ARENA", "1G")
    assert busy.value.errno == errno.EBUSY and "EBUSY" in str(busy.value)


def test_options_read_from_the_environment():
    proc = run_python("""
        import pyfrag
        print({o.name: o.text for o in pyfrag.options()})
    """, env={"PYFRAG_LIMIT": "64M", "PYFRAG_HUGEPAGES": "off", "PYFRAG_RETAIN": "3",
              "PYFRAG_ARENA": "1G"})
    assert proc.returncode == 0, proc.stderr
    values = eval(proc.stdout)
    assert values["PYFRAG_LIMIT"] == str(64 * MiB)
    assert values["PYFRAG_HUGEPAGES"] == "off"
    assert values["PYFRAG_RETAIN"] == "3"
    assert values["PYFRAG_ARENA"] == str(1 << 30)


def test_trim_gives_empty_chunks_back():
    proc = run_python("""
        import pyfrag
        with pyfrag.FragCache() as cache:
            frags = [cache.alloc(32768) for _ in range(256)]  # 8 MiB: several chunks
            peak = pyfrag.stats().committed_bytes
            for frag in frags:
                frag.free()
        pyfrag.thread_flush()
        released = pyfrag.trim()
        s = pyfrag.stats()
        print(peak, s.committed_bytes, s.chunk_releases, released)
    """, env={"PYFRAG_RETAIN": "0"})
    assert proc.returncode == 0, proc.stderr
    peak, committed, releases, released = map(int, proc.stdout.split())
    assert peak >= 8 * MiB
    assert released >= 0 and releases >= 3
    assert committed <= 2 * MiB  # at most the chunk holding the reserve stays


# ---- smaps -----------------------------------------------------------------------------------

def test_hugepage_coverage_sees_the_arena():
    proc = run_python("""
        import json, pyfrag, dataclasses
        from pyfrag.stats import arena_range
        with pyfrag.FragCache() as cache:
            frags = [cache.alloc(32768) for _ in range(128)]  # 4 MiB
            for frag in frags:
                frag[:] = b"\\x5a" * 32768
            cov = pyfrag.hugepage_coverage()
            s = pyfrag.stats()
            print(json.dumps(dict(dataclasses.asdict(cov), range=arena_range(),
                                  fractions=[cov.hugetlb_fraction, cov.thp_fraction,
                                             cov.huge_fraction],
                                  hugetlb_chunks=s.chunks_hugetlb, committed=s.committed_bytes)))
            for frag in frags:
                frag.free()
    """)
    assert proc.returncode == 0, proc.stderr
    cov = json.loads(proc.stdout)
    assert [cov["base"], cov["arena_size"]] == cov["range"]
    assert cov["size"] >= cov["committed"] >= 4 * MiB
    resident = cov["rss"] + cov["private_hugetlb"] + cov["shared_hugetlb"]
    assert resident >= 4 * MiB  # every byte written is resident in the arena
    assert cov["anon_huge_pages"] <= cov["rss"]
    assert (cov["private_hugetlb"] > 0) == (cov["hugetlb_chunks"] > 0)
    assert all(0.0 <= f <= 1.0 for f in cov["fractions"])


def test_smaps_totals_of_another_process():
    child = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); "
                              "time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "up\n"
        totals = pyfrag.smaps_totals(child.pid)
    finally:
        child.kill()
        child.wait()
    assert isinstance(totals, SmapsTotals) and totals.rss > MiB and totals.size > totals.rss


def test_coverage_fractions_without_memory():
    empty = HugepageCoverage()
    assert empty.resident == 0 and empty.huge_fraction == 0.0
    half = HugepageCoverage(rss=4 * MiB, anon_huge_pages=2 * MiB)
    assert half.thp_fraction == 0.5 and half.hugetlb_fraction == 0.0


# ---- the machine -------------------------------------------------------------------------------

def test_system_parsers():
    assert system.selected_mode("always [madvise] never\n") == "madvise"
    assert system.selected_mode("") is None and system.selected_mode(None) is None
    info = system.meminfo_hugepages("MemTotal: 1 kB\nHugePages_Total:       4\n"
                                    "HugePages_Free:  3\nHugepagesize:    2048 kB\n")
    assert info == {"HugePages_Total": 4, "HugePages_Free": 3, "HugePages_Rsvd": None,
                    "Hugepagesize": 2 * MiB}


def test_system_hugepages_reads_this_machine():
    info = system.hugepages()
    assert isinstance(info["hugetlb_total"], int) and info["hugepage_size"] >= 4096
    assert info["thp_enabled"] in ("always", "madvise", "never", None)

