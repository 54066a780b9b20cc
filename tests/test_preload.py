# SPDX-License-Identifier: GPL-2.0-only
"""LD_PRELOAD=libpyfrag.so under unmodified programs.

- The malloc family's contract (native/tests/preload/malloc_conformance.c)
  holds on glibc and under pyfrag alike; misuse aborts with a clear message.
- Real programs (python3, sqlite3, git, gcc, perl, sort, a threaded C
  program) give the same stdout and exit code with and without the preload,
  and pyfrag's exit summary shows it served their allocations.
- 10,000 short-lived threads leave RSS bounded; fork while threads allocate
  neither deadlocks nor breaks the child; calls before pyfrag's constructor
  work.
- `pyfrag run` and pyfrag.preload_env/run.

The library is pyfrag.preload.library_path() (PYFRAG_LIBRARY in CI's ASan
run, which also preloads libasan: preload_env keeps pyfrag first so that it
stays the malloc, and turns ASan's first-in-line check off). The helper
programs are built by SCons for PYFRAG_TEST_MODE, never instrumented.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO_ROOT, ROUTE, run_cli, run_python, scons_build
from pyfrag import preload

ROOT = pathlib.Path(REPO_ROOT)
PYTHON = os.path.realpath(sys.executable)
STATS_HEADER = re.compile(r"^pyfrag stats \((?P<prog>[^,]*), pid \d+\):$")
SUMMARY_LINES = 6  # after its header: allocations, routes, frees, frag pages, chunks, memory
SMALL_ALLOCS = re.compile(r"allocations\s+small \(page_frag\) (\d+), compact \(slab\) (\d+), "
                          r"medium \(page runs\) (\d+)")


@pytest.fixture(scope="session")
def programs():
    """The preload helper programs of this mode, built once; their folder."""
    return pathlib.Path(scons_build("tests")) / "tests" / "preload"


def plain_env(**extra) -> dict:
    """The environment of the baseline run: glibc's malloc, no sanitizer runtime."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYFRAG_") or k == "PYFRAG_LIBRARY"}
    env.pop("LD_PRELOAD", None)
    env.update(extra)
    return env


def pyfrag_env(library: str | None = None, **options) -> dict:
    """The environment of a preloaded run (sanitizer runtimes kept after pyfrag): of the
    library under test, or of `library` (the fault_library fixture's) in its place. The
    malloc front's route is PYFRAG_TEST_ROUTE's (CI runs these suites on each route)
    unless the test names one."""
    if ROUTE:
        options.setdefault("route", ROUTE)
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYFRAG_") or k == "PYFRAG_LIBRARY"}
    env = preload.preload_env(base, **options)
    if library is not None:
        rest = env["LD_PRELOAD"].split(":")[1:]  # preload_env put the library under test first
        env["LD_PRELOAD"] = ":".join([library] + [e for e in rest if e != library])
        env["PYFRAG_LIBRARY"] = library
    return env


def split_stats(stderr: str):
    """(the program's own stderr, [(program, small allocs, medium allocs)]) from a PYFRAG_STATS run;
    small counts both small routes (page_frag and compact)."""
    own, blocks = [], []
    lines = iter(stderr.splitlines(keepends=True))
    for line in lines:
        header = STATS_HEADER.match(line.rstrip("\n"))
        if not header:
            own.append(line)
            continue
        body = "".join(next(lines, "") for _ in range(SUMMARY_LINES))
        counts = SMALL_ALLOCS.search(body)
        assert counts, body
        blocks.append((header.group("prog"), int(counts.group(1)) + int(counts.group(2)),
                       int(counts.group(3))))
    return "".join(own), blocks


def run(argv, env, cwd=None, timeout=600, text=True):
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=text, timeout=timeout)


def same_with_and_without(argv, cwd=None, setup=None, env=None, timeout=600, compare_stderr=True):
    """Run argv on glibc and under pyfrag (fresh cwd each, from setup); assert identical results."""
    results = []
    for label, make_env in (("glibc", plain_env), ("pyfrag", lambda **e: {**pyfrag_env(stats=True), **e})):
        where = pathlib.Path(cwd) / label if cwd else None
        if where:
            where.mkdir()
            if setup:
                setup(where)
        done = run(argv, make_env(**(env or {})), cwd=where, timeout=timeout, text=False)
        results.append(done)
    base, mine = results
    own_stderr, blocks = split_stats(mine.stderr.decode(errors="replace"))
    report = "glibc rc %d stderr:\n%s\npyfrag rc %d stderr:\n%s" % (
        base.returncode, base.stderr.decode(errors="replace")[-3000:], mine.returncode,
        mine.stderr.decode(errors="replace")[-3000:])
    assert base.returncode == 0, report
    assert mine.returncode == base.returncode, report
    assert mine.stdout == base.stdout, report
    if compare_stderr:
        assert own_stderr == base.stderr.decode(errors="replace"), report
    assert blocks, "no pyfrag summary: the preload did not take\n" + report
    assert sum(small for _, small, _ in blocks) > 0, report
    return base, mine, blocks


# ---- the malloc family's contract ------------------------------------------------------

def test_conformance_on_glibc(programs):
    done = run([str(programs / "malloc_conformance")], plain_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith(" 0 failed"), done.stdout


@pytest.mark.parametrize("check", [False, True], ids=["default", "PYFRAG_CHECK"])
def test_conformance_under_pyfrag(programs, check):
    done = run([str(programs / "malloc_conformance")], pyfrag_env(check=check))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not ok" not in done.stdout, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith(" 0 failed"), done.stdout + done.stderr
    assert "ok test_pyfrag_routes" in done.stdout


@pytest.mark.parametrize("misuse, message", [
    ("double-free", "free(): double free detected"),
    ("double-free-medium", "free(): invalid pointer or double free"),
    ("double-free-remote", "free(): double free detected"),
    ("bad-pointer", "free(): invalid pointer"),
])
def test_misuse_aborts_with_a_message(programs, misuse, message):
    done = run([str(programs / "malloc_conformance"), misuse], pyfrag_env())
    assert done.returncode == -signal.SIGABRT, done.stdout + done.stderr
    assert "pyfrag: " + message in done.stderr


def test_check_mode_catches_a_write_past_the_end(programs):
    quiet = run([str(programs / "malloc_conformance"), "tail-overflow"], pyfrag_env())
    assert quiet.returncode == 0 and "not noticed" in quiet.stdout  # default: no canaries
    done = run([str(programs / "malloc_conformance"), "tail-overflow"], pyfrag_env(check=True))
    assert done.returncode == -signal.SIGABRT, done.stdout + done.stderr
    assert "pyfrag: free(): tail canary overwritten" in done.stderr


CHECK_MODE_AT_THE_MAXIMUM = """
import ctypes
libc = ctypes.CDLL(None)
libc.malloc.restype = libc.realloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.malloc_usable_size.argtypes = [ctypes.c_void_p]
libc.malloc_usable_size.restype = ctypes.c_size_t
for size in range(32720, 32770):
    p = libc.malloc(size)
    assert p, size
    ctypes.memset(p, 0xA5, size)
    assert libc.malloc_usable_size(p) >= size, size
    q = libc.realloc(p, size + 1)
    assert q, size
    libc.free(q)
print("ok")
"""


def test_summary_of_a_non_pie_program_that_takes_mallocs_address(programs):
    # such a program's PLT entry is malloc's canonical address (Debian's python3.11):
    # pyfrag took it for another malloc and printed no summary (the README's tests
    # failed on a fresh machine whose venv came from /usr/bin/python3)
    done = run([str(programs / "malloc_address_nopie")], pyfrag_env(stats=True))
    assert done.returncode == 0 and done.stdout == "ok\n", done.stdout + done.stderr
    _, blocks = split_stats(done.stderr)
    assert [prog for prog, _, _ in blocks] == ["malloc_address_nopie"], done.stderr


def test_check_mode_serves_every_size_up_to_the_maximum():
    # the canary byte made malloc(32752) NULL/ENOMEM at PYFRAG_FRAG_MAX=32752 (32753 worked)
    done = run([sys.executable, "-c", CHECK_MODE_AT_THE_MAXIMUM],
               pyfrag_env(check=True, frag_max="32752"))
    assert done.returncode == 0 and done.stdout == "ok\n", done.stdout + done.stderr


def test_limit_makes_failures_reproducible(programs):
    outputs = {run([str(programs / "malloc_conformance"), "limit"], pyfrag_env(limit="64M")).stdout
               for _ in range(2)}
    assert outputs == {"big NULL errno ENOMEM\nsmall NULL after some, errno ENOMEM\n"
                       "after freeing: ok\n"}


def test_calls_before_the_constructors(programs):
    env = pyfrag_env(stats=True)
    parts = env["LD_PRELOAD"].split(":")
    # after pyfrag in the list: the loader runs its constructor before pyfrag's
    env["LD_PRELOAD"] = ":".join(parts[:1] + [str(programs / "early_lib.so")] + parts[1:])
    done = run([PYTHON, "-c", "print('fine')"], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "fine\n"
    _, blocks = split_stats(done.stderr)
    assert blocks and blocks[0][1] > 0


# ---- real programs, byte for byte ------------------------------------------------------

PYTHON_WORKLOAD = textwrap.dedent(r"""
    import hashlib, json, threading, collections
    words = ["w%05d" % (i * 7919 % 50021) for i in range(200000)]
    counts = collections.Counter(words)
    index = {w: [i for i in range(n)] for w, n in counts.items()}
    text = " ".join(words)
    parts = text.split(" ")
    results = {}
    def work(k):
        acc = []
        for i in range(30000):
            s = ("%d:%s" % (i, parts[(i * k) % len(parts)])) * (1 + i % 40)
            acc.append(s[::-1].upper())
            if len(acc) > 500:
                acc = acc[250:]
        d = {str(i): bytes(i % 3000) for i in range(2000)}
        results[k] = hashlib.sha256("".join(acc).encode() + b"".join(d.values())).hexdigest()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(1, 7)]
    for t in threads: t.start()
    for t in threads: t.join()
    print(len(counts), sum(len(v) for v in index.values()), len(text))
    print(json.dumps(results, sort_keys=True))
    print(hashlib.sha256(json.dumps(sorted(counts.items())[:1000]).encode()).hexdigest())
""")


def test_python(tmp_path):
    script = tmp_path / "work.py"
    script.write_text(PYTHON_WORKLOAD)
    same_with_and_without([PYTHON, str(script)], env={"PYTHONHASHSEED": "0"})


SQL = textwrap.dedent("""
    CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, v REAL);
    WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000)
    INSERT INTO t SELECT x, printf('name-%06d-%s', x * 7919 % 100003, hex(x)), x % 97, (x * 31 % 1000) / 7.0 FROM c;
    CREATE INDEX t_name ON t(name);
    CREATE INDEX t_grp ON t(grp, v);
    SELECT count(*), sum(v), min(name), max(name) FROM t;
    SELECT grp, count(*), round(avg(v), 4), group_concat(id % 10, '') FROM t WHERE grp < 5 GROUP BY grp;
    SELECT name FROM t ORDER BY name DESC LIMIT 5;
    UPDATE t SET name = upper(name) || name WHERE id % 3 = 0;
    DELETE FROM t WHERE id % 7 = 0;
    SELECT count(*), length(group_concat(name)) FROM t;
    SELECT a.grp, count(*) FROM t a JOIN t b ON a.id = b.id + 1 GROUP BY a.grp ORDER BY 2 DESC LIMIT 3;
    VACUUM;
    PRAGMA integrity_check;
""")


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="sqlite3 is not installed (apt-get install sqlite3)")
def test_sqlite3(tmp_path):
    def setup(where):
        (where / "script.sql").write_text(SQL)
    same_with_and_without(["sh", "-c", "sqlite3 test.db < script.sql"], cwd=tmp_path, setup=setup)


def make_tree(where: pathlib.Path, files=300):
    for i in range(files):
        sub = where / ("dir%02d" % (i % 17)) / ("sub%d" % (i % 3))
        sub.mkdir(parents=True, exist_ok=True)
        lines = ["line %d of file %d: %s\n" % (k, i, "x" * ((i * k) % 90)) for k in range(i % 200 + 1)]
        (sub / ("file%04d.txt" % i)).write_text("".join(lines))


GIT_SCRIPT = r"""
set -e
git init -q -b main .
git add -A
git commit -q -m "initial tree"
for i in 1 2 3 4 5; do
  find . -name 'file*[0-9]0.txt' -not -path './.git/*' | sort | while read f; do echo "change $i" >> "$f"; done
  git commit -q -am "change $i"
done
git mv dir00 moved00
git commit -q -m "move"
git log --stat --format='%H %an %ad %s' --date=iso
git diff HEAD~3 HEAD | sha256sum
git gc -q
git fsck --strict
git count-objects -v | grep -v size
"""


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed (apt-get install git)")
def test_git(tmp_path):
    fixed = {
        "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "A U Thor",
        "GIT_AUTHOR_EMAIL": "author@example.com", "GIT_COMMITTER_NAME": "C O Mitter",
        "GIT_COMMITTER_EMAIL": "committer@example.com", "GIT_AUTHOR_DATE": "2005-04-07T22:13:13 +0000",
        "GIT_COMMITTER_DATE": "2005-04-07T22:13:13 +0000", "TZ": "UTC", "LC_ALL": "C",
    }
    same_with_and_without(["sh", "-c", GIT_SCRIPT], cwd=tmp_path, setup=make_tree, env=fixed)


C_PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
struct node { struct node *next; char key[32]; long value; };
static unsigned long hash(const char *s) { unsigned long h = 5381; while (*s) h = h * 33 + (unsigned char)*s++; return h; }
int main(void) {
    enum { BUCKETS = 4096 };
    struct node **table = calloc(BUCKETS, sizeof(*table));
    for (long i = 0; i < 200000; i++) {
        char key[32];
        snprintf(key, sizeof key, "k%ld", (i * 2654435761u) % 50000);
        struct node **slot = &table[hash(key) % BUCKETS], *n;
        for (n = *slot; n && strcmp(n->key, key); n = n->next) {}
        if (!n) { n = malloc(sizeof *n); strcpy(n->key, key); n->value = 0; n->next = *slot; *slot = n; }
        n->value += i;
    }
    long total = 0, count = 0;
    for (int b = 0; b < BUCKETS; b++)
        for (struct node *n = table[b], *next; n; n = next) { next = n->next; total += n->value % 1000003; count++; free(n); }
    free(table);
    printf("%ld keys, checksum %ld\n", count, total);
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_gcc(tmp_path):
    def setup(where):
        (where / "prog.c").write_text(C_PROGRAM)
    script = "gcc -O2 -Wall -c prog.c -o prog.o && gcc prog.o -o prog && ./prog && sha256sum prog.o"
    _, _, blocks = same_with_and_without(["sh", "-c", script], cwd=tmp_path, setup=setup)
    # the compiler's own passes ran on pyfrag too (cc1 and the assembler and linker)
    assert {"cc1", "as"} <= {prog for prog, _, _ in blocks}, blocks


def make_text(where: pathlib.Path, lines=200000):
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    with open(where / "text.txt", "w") as out:
        for i in range(lines):
            out.write("%s %d %s %s\n" % (words[i * 7 % 10], (i * 7919) % 100003, words[i % 10] * (1 + i % 5),
                                         "z" * (i % 37)))


PERL = r"""perl -ne 'chomp; my @f = split / /; $count{$f[0]}++; $sum{$f[0]} += $f[1]; push @{$keep{$f[0]}}, $f[2] if $. % 50 == 0;
END { for my $k (sort keys %count) { printf "%s %d %d %d\n", $k, $count{$k}, $sum{$k}, scalar @{$keep{$k}} } }' text.txt"""


@pytest.mark.skipif(shutil.which("perl") is None, reason="perl is not installed")
def test_perl(tmp_path):
    same_with_and_without(["sh", "-c", PERL], cwd=tmp_path, setup=make_text, env={"LC_ALL": "C"})


def test_sort(tmp_path):
    script = "sort -k2,2n -k1,1 --parallel=2 -S 8M text.txt | sha256sum && sort -u text.txt | wc -l"
    same_with_and_without(["sh", "-c", script], cwd=tmp_path, setup=make_text, env={"LC_ALL": "C"})


def test_threads_freeing_each_others_blocks(programs):
    _, mine, _ = same_with_and_without([str(programs / "cross_free")])
    assert mine.stdout.count(b"checksum") == 4


# ---- threads and fork ------------------------------------------------------------------

def test_thread_churn_keeps_rss_bounded(programs):
    # 4 KiB backing: hugetlb pages are not part of RSS, and the point is what RSS does
    done = run([str(programs / "thread_churn")], pyfrag_env(stats=True, hugepages="off"))
    own, blocks = split_stats(done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rss ok" in done.stdout
    assert blocks and blocks[0][1] > 10000 * 60
    threads = re.search(r"threads (\d+)\n", done.stderr)
    assert threads and int(threads.group(1)) == 1, done.stderr  # every exited thread's state went back


def test_frees_after_thread_teardown_leave_no_state(programs):
    # glibc frees strerror's buffer after every key destructor (__libc_thread_freeres):
    # such a free used to build a thread state nothing ever gave back
    # (threads 1001 caches 1001 pages_in_use 7238 against 1 1 1 without strerror)
    counts = {}
    for mode in ("control", "late"):
        done = run([str(programs / "late_frees"), mode], pyfrag_env())
        assert done.returncode == 0, done.stdout + done.stderr
        counts[mode] = done.stdout.strip()
    assert counts["late"] == counts["control"], counts
    assert re.fullmatch(r"threads 1 caches 1 pages_in_use \d+", counts["late"]), counts


def test_large_blocks_survive_refused_decommits(programs, fault_library):
    # the first 20 decommits fail: those chunks must come back once the OS accepts again
    env = pyfrag_env(fault_library, hugepages="off")
    env["PYFRAG_FAULT_DECOMMIT"] = "1:20"
    done = run([str(programs / "large_decommit")], env)
    assert done.returncode == 0, done.stdout + done.stderr
    committed = int(re.search(r"committed MiB (\d+)", done.stdout).group(1))
    assert committed <= 4, done.stdout  # the reserve's chunk and PYFRAG_RETAIN's, not 20+ chunks
    # and the refusals did happen: the check above means something
    assert "decommit failures 20\n" in done.stdout, done.stdout


def test_fork_while_threads_allocate(programs):
    done = run([str(programs / "fork_threads")], pyfrag_env(), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "forks ok\n"


def _hugepages_free() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("HugePages_Free:"):
                return int(line.split()[1])
    return 0


@pytest.mark.skipif(not 8 <= _hugepages_free() <= 256,
                    reason="needs a hugetlb pool of 8..256 free 2 MiB pages, to drain it")
def test_fork_child_keeps_hugetlb_bytes_while_another_thread_writes(programs):
    # more 1 MiB blocks than the pool has pages: it runs dry, so a parent's write after fork
    # cannot copy a shared hugetlb page and the kernel takes it from the child instead
    blocks = 2 * _hugepages_free() + 32
    done = run([str(programs / "hugetlb_fork"), str(blocks), "20"],
               pyfrag_env(hugepages="auto", stats=True), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "bad children: 0\n", done.stdout
    assert re.search(r"chunks now +hugetlb [1-9]", done.stderr), done.stderr  # it did use hugetlb


def test_python_fork_and_subprocess_under_preload(tmp_path):
    code = textwrap.dedent("""
        import multiprocessing as mp, os, subprocess, sys, threading
        stop = False
        def churn():
            while not stop:
                [bytes(i % 5000) for i in range(200)]
        ts = [threading.Thread(target=churn) for _ in range(3)]
        [t.start() for t in ts]
        with mp.get_context("fork").Pool(3) as pool:
            print(sum(pool.map(len, ["x" * i for i in range(2000)])))
        print(subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True).stdout.strip())
        stop = True
        [t.join() for t in ts]
    """)
    done = run([PYTHON, "-c", code], pyfrag_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "%d\n42\n" % sum(range(2000))


# ---- dlopen'ed by ctypes: the process keeps its malloc --------------------------------

def test_ctypes_load_does_not_take_over_malloc():
    done = run_python("""
        import ctypes, pyfrag
        from pyfrag.stats import arena_range
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        base, size = arena_range()
        before = pyfrag.stats()
        blocks = [libc.malloc(n) for n in (16, 1500, 100000, 5 << 20)]
        inside = [base <= p < base + size for p in blocks]
        for p in blocks:
            libc.free(p)
        after = pyfrag.stats()
        print(inside, after.malloc_small - before.malloc_small, after.malloc_large - before.malloc_large)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[False, False, False, False] 0 0"


# ---- pyfrag run and the Python helpers ------------------------------------------------

def test_cli_run_prints_output_then_stats():
    done = run_cli("run", "--stats", "--", PYTHON, "-c", "print('hello'); print(sum(range(10)))")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello\n45\n"
    own, blocks = split_stats(done.stderr)
    assert blocks and blocks[0][1] > 0
    assert "peak committed bytes" in done.stderr and "foreign (ignored)" in done.stderr
    assert "refills" in done.stderr and "order-0 fallbacks" in done.stderr


def test_cli_run_exit_codes():
    assert run_cli("run", "--", PYTHON, "-c", "raise SystemExit(7)").returncode == 7
    killed = run_cli("run", "--", PYTHON, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert killed.returncode == 128 + signal.SIGKILL
    missing = run_cli("run", "--", "/nonexistent/program")
    assert missing.returncode == 127 and "not found" in missing.stderr


def test_cli_run_options_reach_the_program():
    code = ("import os; print(os.environ['PYFRAG_LIMIT'], os.environ['PYFRAG_HUGEPAGES'], "
            "os.environ['LD_PRELOAD'].split(':')[0].endswith('libpyfrag.so'))")
    done = run_cli("run", "--limit", "64M", "--hugepages", "thp", "--", PYTHON, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "64M thp True\n"


def test_preload_env_prepends_and_sets_options():
    env = preload.preload_env({"LD_PRELOAD": "/x/libother.so", "PATH": "/bin", "PYFRAG_CHECK": "1"},
                              limit="64M", hugepages="thp", stats=True, check=None)
    lib = preload.library_path()
    assert env["LD_PRELOAD"] == lib + ":/x/libother.so"
    assert env["PYFRAG_LIMIT"] == "64M" and env["PYFRAG_HUGEPAGES"] == "thp"
    assert env["PYFRAG_STATS"] == "1" and "PYFRAG_CHECK" not in env
    assert env["PATH"] == "/bin"
    assert preload.preload_env({})["LD_PRELOAD"] == lib
    again = preload.preload_env({"LD_PRELOAD": lib + " /x/a.so"})
    assert again["LD_PRELOAD"] == lib + ":/x/a.so"  # not twice
    asan = preload.preload_env({"LD_PRELOAD": "/usr/lib/gcc/libasan.so", "ASAN_OPTIONS": "halt_on_error=1"})
    assert asan["LD_PRELOAD"].startswith(lib + ":")
    assert asan["ASAN_OPTIONS"] == "halt_on_error=1:verify_asan_link_order=0"
    with pytest.raises(ValueError):
        preload.preload_env({}, **{"Bad-Name": 1})


def test_run_returns_the_exit_code():
    import pyfrag
    assert pyfrag.run([PYTHON, "-c", "import sys; sys.exit(5)"]) == 5
    assert pyfrag.run(["sh", "-c", "kill -TERM $$"]) == 128 + signal.SIGTERM
    with pytest.raises(TypeError):
        pyfrag.run("echo hi")
