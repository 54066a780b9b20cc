# SPDX-License-Identifier: GPL-2.0-only
"""The programs of `pyfrag bench --workload programs`: what each runs and how
its output is checked.

Contract: PROGRAMS lists Program entries, each with a name, its set (TUNING:
the programs the compact route and its routing are tuned on, the causes the
issue measured; HELD_OUT: the programs the project is judged on without
having been tuned on them), where it comes from (SYSTEM: a Debian program on
PATH; OWN: native/bench/programs/, built by SCons; MIMALLOC_BENCH: a built
mimalloc-bench benchmark, found through PYFRAG_MIMALLOC_BENCH), the commands
or files it needs, `command(ctx)` (writes its input files into ctx.inputs
once, returns the Command to run) and `check(ctx, stdout)` (None when the
output is right, else what is wrong). Fixed-duration programs also have
`rate(stdout, seconds)`: operations per second, from which the time measured
is seconds per million operations. Everything is sized by ctx.scale (1: a
few seconds each on a 2-core machine; mimalloc-bench's own sizes do not scale).
"""
from __future__ import annotations

import gzip
import bz2
import lzma
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

TUNING, HELD_OUT = "tuning", "held-out"
SYSTEM, OWN, MIMALLOC_BENCH = "system", "own", "mimalloc-bench"


@dataclass
class Context:
    scale: float
    inputs: str               # this program's input folder (written once, read by every run)
    own_dir: str              # build/release/bench/programs
    mimalloc_bench: Optional[str]  # PYFRAG_MIMALLOC_BENCH, or None
    python: str               # a python3 binary (not a shim script)

    def n(self, base: int, least: int = 2) -> int:
        return max(least, int(base * self.scale))

    def path(self, name: str) -> str:
        return os.path.join(self.inputs, name)


@dataclass
class Command:
    argv: list
    stdin: Optional[str] = None          # a file to read stdin from
    env: dict = field(default_factory=dict)
    ok_status: tuple = (0,)


@dataclass(frozen=True)
class Program:
    name: str
    group: str
    source: str
    what: str
    needs: tuple
    command: Callable[[Context], Command]
    check: Callable[[Context, bytes], Optional[str]]
    rate: Optional[Callable[[bytes, float], Optional[float]]] = None


# ---- inputs ---------------------------------------------------------------------

def _lcg(seed: int = 12345):
    x = seed
    while True:
        x = (x * 1103515245 + 12345) % 2**31
        yield x


_SYLLABLES = ("ka", "lo", "mi", "ne", "pu", "ra", "si", "to", "vu", "ze", "qua", "dri")


def _words(count: int, seed: int = 7) -> list:
    rnd = _lcg(seed)
    return ["".join(_SYLLABLES[next(rnd) % 12] for _ in range(1 + next(rnd) % 4)) + str(next(rnd) % 1000)
            for _ in range(count)]


def _text_lines(ctx: Context, name: str, lines: int) -> list:
    """Writes `name` (lines of 1..10 words) once; returns its lines (with their newlines)."""
    words = _words(lines * 3)
    rnd = _lcg(lines)
    out, i = [], 0
    for _ in range(lines):
        k = 1 + next(rnd) % 10
        out.append(" ".join(words[(i + j) % len(words)] for j in range(k)) + "\n")
        i += k
    path = ctx.path(name)
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.writelines(out)
    return out


def _write(ctx: Context, name: str, text: str) -> str:
    path = ctx.path(name)
    with open(path, "w") as f:
        f.write(text)
    return path


def _text(out: bytes) -> str:
    return out.decode("utf-8", "replace")


def _expect(got: bytes, want: str) -> Optional[str]:
    text = _text(got)
    if text == want:
        return None
    return "expected %r, got %r" % (want[:200], text[:200])


def _keys_kept(n: int) -> list:
    """Keys 0..n-1 inserted in order; at each i % 5 == 0, key i // 2 is deleted (bash, perl)."""
    keys = {}
    for i in range(n):
        keys[i] = True
        if i % 5 == 0:
            keys.pop(i // 2, None)
    return list(keys)


# ---- system programs ------------------------------------------------------------

def _python_dict_json(ctx):
    n = ctx.n(200_000, 10)
    code = ("import json, sys\nn = int(sys.argv[1])\n"
            "d = {'key%d' % i: [i, 'v' * (i % 20)] for i in range(n)}\n"
            "e = json.loads(json.dumps(d))\n"
            "print(len(e), sum(v[0] for v in e.values()), sum(len(v[1]) for v in e.values()))\n")
    return Command([ctx.python, "-I", "-c", code, str(n)], env={"PYTHONMALLOC": "malloc"})


def _check_python_dict_json(ctx, out):
    n = ctx.n(200_000, 10)
    return _expect(out, "%d %d %d\n" % (n, n * (n - 1) // 2, sum(i % 20 for i in range(n))))


PY_OBJECTS = """\
import sys
n = int(sys.argv[1])
x = 12345
class Node:
    def __init__(self, i):
        self.i = i
        self.name = str(i)
        self.kids = [i] * (i % 7)
live = {}
for i in range(n):
    live[i] = Node(i)
    x = (x * 1103515245 + 12345) % 2**31
    if i % 3 == 0:
        live.pop(x % (i + 1), None)
print(len(live), sum(v.i for v in live.values()) % 1000003, sum(len(v.kids) for v in live.values()))
"""


def _python_objects(ctx):
    return Command([ctx.python, "-I", "-c", PY_OBJECTS, str(ctx.n(400_000, 10))],
                   env={"PYTHONMALLOC": "malloc"})


def _check_python_objects(ctx, out):
    n, x, live = ctx.n(400_000, 10), 12345, {}
    for i in range(n):
        live[i] = True
        x = (x * 1103515245 + 12345) % 2**31
        if i % 3 == 0:
            live.pop(x % (i + 1), None)
    return _expect(out, "%d %d %d\n" % (len(live), sum(live) % 1000003, sum(i % 7 for i in live)))


BASH_ASSOC = """\
declare -A a
n=$1
for ((i = 0; i < n; i++)); do
  a["key$i"]="value$((i * 3))"
  t="${a[key$((i / 2))]}-tmp-$i"
  if ((i % 5 == 0)); then k="key$((i / 2))"; unset "a[$k]"; fi
done
echo "${#a[@]} ${a[key$((n - 1))]}"
"""


def _bash_assoc(ctx):
    return Command(["bash", "-c", BASH_ASSOC, "bash", str(ctx.n(20_000, 10))])


def _check_bash_assoc(ctx, out):
    n = ctx.n(20_000, 10)
    return _expect(out, "%d value%d\n" % (len(_keys_kept(n)), 3 * (n - 1)))


BASH_STRINGS = """\
n=$1; s=""; arr=()
for ((i = 0; i < n; i++)); do s+="x$i,"; arr+=("item$i"); done
t="${s//x/yy}"
echo "${#s} ${#t} ${#arr[@]}"
"""


def _bash_strings(ctx):
    return Command(["bash", "-c", BASH_STRINGS, "bash", str(ctx.n(30_000, 10))])


def _check_bash_strings(ctx, out):
    n = ctx.n(30_000, 10)
    length = sum(len("x%d," % i) for i in range(n))
    return _expect(out, "%d %d %d\n" % (length, length + n, n))


def _sort_words(ctx):
    _text_lines(ctx, "lines.txt", ctx.n(600_000, 20))
    return Command(["sort", ctx.path("lines.txt")])


def _check_sort_words(ctx, out):
    lines = _text_lines(ctx, "lines.txt", ctx.n(600_000, 20))
    return _expect(out, "".join(sorted(lines)))


def _numbers(ctx):
    n = ctx.n(400_000, 20)
    return [(i * 7919) % 1_000_003 for i in range(n)]


def _sort_numeric(ctx):
    path = ctx.path("numbers.txt")
    if not os.path.exists(path):
        _write(ctx, "numbers.txt", "".join("%d\n" % v for v in _numbers(ctx)))
    return Command(["sort", "-n", "-r", path])


def _check_sort_numeric(ctx, out):
    return _expect(out, "".join("%d\n" % v for v in sorted(_numbers(ctx), reverse=True)))


def _compressor(tool, base_lines, opener, *flags):
    def command(ctx):
        _text_lines(ctx, "%s.txt" % tool, ctx.n(base_lines, 20))
        return Command([tool, *flags, "-c", ctx.path("%s.txt" % tool)])

    def check(ctx, out):
        lines = _text_lines(ctx, "%s.txt" % tool, ctx.n(base_lines, 20))
        try:
            back = opener(out)
        except (OSError, EOFError, lzma.LZMAError, ValueError) as exc:
            return "output does not decompress: %s" % exc
        return None if back == "".join(lines).encode() else "decompressed output differs from input"
    return command, check


_gzip = _compressor("gzip", 400_000, gzip.decompress, "-6")
_xz = _compressor("xz", 60_000, lzma.decompress, "-6", "-T1")
_bzip2 = _compressor("bzip2", 150_000, bz2.decompress, "-9")

SQL = """\
CREATE TABLE t(i INTEGER PRIMARY KEY, v INTEGER, s TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n})
  INSERT INTO t SELECT x, x * 2, printf('row-%d-%s', x, hex(randomblob(8))) FROM c;
CREATE INDEX ts ON t(s);
SELECT count(*), sum(v), count(DISTINCT v % 100) FROM t;
SELECT count(*) FROM (SELECT v % 1000 AS g, count(*) FROM t GROUP BY g);
DELETE FROM t WHERE i % 3 = 0;
SELECT count(*), length(group_concat(s)) > 0 FROM t;
"""


def _sqlite(ctx):
    return Command(["sqlite3", ":memory:"],
                   stdin=_write(ctx, "script.sql", SQL.format(n=ctx.n(300_000, 10))))


def _check_sqlite(ctx, out):
    n = ctx.n(300_000, 10)
    values = [2 * x for x in range(1, n + 1)]
    return _expect(out, "%d|%d|%d\n%d\n%d|1\n" % (n, sum(values), len({v % 100 for v in values}),
                                                len({v % 1000 for v in values}), n - n // 3))


GIT = """\
set -e
git init -q -b master repo
git -C repo fast-import --quiet < "$1"
git -C repo rev-list --count HEAD
git -C repo ls-tree -r HEAD | wc -l
git -C repo log --stat --format=%s | grep -c '^c'
"""


def _git_sizes(ctx):
    return ctx.n(3_000, 3), 500


def _git(ctx):
    commits, files = _git_sizes(ctx)
    path = ctx.path("stream.fi")
    if not os.path.exists(path):
        with open(path, "wb") as f:
            for c in range(commits):
                body = ("content of commit %d\n" % c) * (1 + c % 40)
                f.write(b"commit refs/heads/master\n")
                f.write(b"committer Bench <bench@example.org> %d +0000\n" % (1_700_000_000 + c))
                message = b"c%d\n" % c
                f.write(b"data %d\n%s" % (len(message), message))
                f.write(b"M 100644 inline dir%d/f%d.txt\n" % (c % 10, c % files))
                f.write(b"data %d\n%s\n" % (len(body), body.encode()))
    return Command(["bash", "-c", GIT, "git", path],
                   env={"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"})


def _check_git(ctx, out):
    commits, files = _git_sizes(ctx)
    return _expect(out, "%d\n%d\n%d\n" % (commits, min(commits, files), commits))


PERL_HASH = r"""
my $n = shift; my %h;
for my $i (0 .. $n - 1) {
  $h{"key$i"} = "v" . ($i * 3);
  delete $h{"key" . int($i / 2)} if $i % 5 == 0;
}
my @k = sort keys %h; my $s = 0; $s += length($h{$_}) for @k;
print scalar(@k), " $s\n";
"""


def _perl_hash(ctx):
    return Command(["perl", "-e", PERL_HASH, str(ctx.n(300_000, 10))])


def _check_perl_hash(ctx, out):
    kept = _keys_kept(ctx.n(300_000, 10))
    return _expect(out, "%d %d\n" % (len(kept), sum(len("v%d" % (3 * i)) for i in kept)))


PERL_TEXT = r"""
my (%count, $total);
while (<>) { for my $w (split) { next unless $w =~ /^([a-m]\w*?)(\d+)$/; $count{$1}++; $total++ } }
print scalar(keys %count), " $total\n";
"""


def _perl_text(ctx):
    _text_lines(ctx, "perl.txt", ctx.n(200_000, 20))
    return Command(["perl", "-e", PERL_TEXT, ctx.path("perl.txt")])


def _check_perl_text(ctx, out):
    pattern = re.compile(r"^([a-m]\w*?)(\d+)$")
    count, total = set(), 0
    for line in _text_lines(ctx, "perl.txt", ctx.n(200_000, 20)):
        for w in line.split():
            m = pattern.match(w)
            if m:
                count.add(m.group(1))
                total += 1
    return _expect(out, "%d %d\n" % (len(count), total))


def _c_file(functions: int) -> str:
    body = ["#include <stdio.h>"]
    for f in range(functions):
        body.append("int f%d(int x) { int a[16]; for (int i = 0; i < 16; i++) a[i] = x * i + %d; "
                    "int s = 0; for (int i = 0; i < 16; i++) s += a[i] ^ i; return s; }" % (f, f))
    body.append("int main(void) { long s = 0;")
    body += ["  s += f%d(%d);" % (f, f % 100) for f in range(functions)]
    body.append('  printf("%ld\\n", s); return 0; }')
    return "\n".join(body) + "\n"


def _c_expected(functions: int) -> int:
    return sum(sum((x * i + f) ^ i for i in range(16)) for f, x in ((f, f % 100) for f in range(functions)))


def _gcc(ctx):
    path = _write(ctx, "prog.c", _c_file(ctx.n(500, 3)))
    return Command(["bash", "-c", 'gcc -O2 -o prog "$1" && ./prog', "gcc", path])


def _check_gcc(ctx, out):
    return _expect(out, "%d\n" % _c_expected(ctx.n(500, 3)))


def _cxx_file(count: int) -> str:
    lines = ["#include <cstdio>", "#include <map>", "#include <string>", "#include <vector>",
             "template <int K> struct S { static long f(std::map<std::string, long> &m) {",
             "  std::vector<std::string> v(K % 5 + 1, std::to_string(K));",
             "  m[v.back()] = 3L * K; return (long)m.size(); } };",
             "int main() { std::map<std::string, long> m; long n = 0;"]
    lines += ["  n += S<%d>::f(m);" % k for k in range(count)]
    lines.append("  long s = 0; for (auto &e : m) s += e.second;")
    lines.append('  std::printf("%ld %ld\\n", (long)m.size(), s); return n > 0 ? 0 : 1; }')
    return "\n".join(lines) + "\n"


def _gxx(ctx):
    path = _write(ctx, "prog.cpp", _cxx_file(ctx.n(250, 3)))
    return Command(["bash", "-c", 'g++ -O1 -o prog "$1" && ./prog', "g++", path])


def _check_gxx(ctx, out):
    n = ctx.n(250, 3)
    return _expect(out, "%d %d\n" % (n, 3 * n * (n - 1) // 2))


def _xargs(ctx):
    n = ctx.n(1_000, 5)
    return Command(["bash", "-c", "seq 1 %d | xargs -n 1 expr 2 '*' | awk '{s += $1} END {print s}'" % n])


def _check_xargs(ctx, out):
    n = ctx.n(1_000, 5)
    return _expect(out, "%d\n" % (n * (n + 1)))


AWK_COUNT = '{for (i = 1; i <= NF; i++) c[$i]++} END {n = 0; for (k in c) n++; print n, NR}'


def _awk(ctx):
    _text_lines(ctx, "awk.txt", ctx.n(300_000, 20))
    return Command(["awk", AWK_COUNT, ctx.path("awk.txt")])


def _check_awk(ctx, out):
    lines = _text_lines(ctx, "awk.txt", ctx.n(300_000, 20))
    return _expect(out, "%d %d\n" % (len({w for line in lines for w in line.split()}), len(lines)))


def _make(ctx):
    n = ctx.n(15_000, 5)
    targets = " ".join("t%d" % i for i in range(n))
    path = _write(ctx, "Makefile", "all: %s\n\t@:\nt%%:\n\t$(info $@)\n.PHONY: all\n" % targets)
    return Command(["make", "-s", "-f", path])


def _check_make(ctx, out):
    return _expect(out, "".join("t%d\n" % i for i in range(ctx.n(15_000, 5))))


def _tree_size(ctx):
    return ctx.n(4_000, 20)


def _tar(ctx):
    tree = ctx.path("tree")
    if not os.path.isdir(tree):
        for i in range(_tree_size(ctx)):
            folder = os.path.join(tree, "d%d" % (i % 20))
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "f%d.txt" % i), "w") as f:
                f.write("file %d\n" % i * (1 + i % 30))
    return Command(["bash", "-c", 'tar -cf - -C "$1" tree | tar -tvf - | wc -l', "tar", ctx.inputs])


def _check_tar(ctx, out):
    return _expect(out, "%d\n" % (1 + 20 + _tree_size(ctx)))


def _diff_files(ctx):
    n = ctx.n(1_000_000, 200)
    a = ["line %d of the file\n" % i for i in range(n)]
    b = [("changed %d\n" % i) if i % 100 == 0 else line for i, line in enumerate(a)]
    return a, b


def _diff(ctx):
    a, b = _diff_files(ctx)
    if not os.path.exists(ctx.path("b.txt")):
        _write(ctx, "a.txt", "".join(a))
        _write(ctx, "b.txt", "".join(b))
    return Command(["diff", ctx.path("a.txt"), ctx.path("b.txt")], ok_status=(1,))


def _check_diff(ctx, out):
    a, b = _diff_files(ctx)
    changed = sum(1 for x, y in zip(a, b) if x != y)
    lines = _text(out).splitlines()
    got = (sum(1 for line in lines if line.startswith("< ")), sum(1 for line in lines if line.startswith("> ")))
    return None if got == (changed, changed) else "expected %d lines each side, got %s" % (changed, got)


def _jq(ctx):
    n = ctx.n(150_000, 10)
    path = ctx.path("data.json")
    if not os.path.exists(path):
        _write(ctx, "data.json", "[" + ",".join('{"k":"key%d","v":%d,"t":[%d,"x"]}' % (i, i, i % 9)
                                                for i in range(n)) + "]")
    return Command(["jq", "[.[] | .v] | add", path])


def _check_jq(ctx, out):
    n = ctx.n(150_000, 10)
    return _expect(out, "%d\n" % (n * (n - 1) // 2))


SED_PATTERN = r"([a-z]+)([0-9]+)"


def _sed(ctx):
    _text_lines(ctx, "sed.txt", ctx.n(200_000, 20))
    return Command(["sed", "-E", r"s/([a-z]+)([0-9]+)/\2\1/g", ctx.path("sed.txt")])


def _check_sed(ctx, out):
    lines = _text_lines(ctx, "sed.txt", ctx.n(200_000, 20))
    return _expect(out, re.sub(SED_PATTERN, r"\2\1", "".join(lines)))


# ---- our own programs (native/bench/programs) -----------------------------------

def _own(name, *args):
    def command(ctx):
        return Command([os.path.join(ctx.own_dir, name), *[str(a(ctx) if callable(a) else a) for a in args]])
    return command


def _handoff_waves(ctx):
    return ctx.n(40, 1)


def _check_handoff(ctx, out):
    total = _handoff_waves(ctx) * 4 * 5000
    return _expect(out, "handoff blocks %d kept %d bad 0\n" % (total, (total + 7) // 8))


def _blocks(ctx):
    return ctx.n(100_000, 2)


def _check_blocks(ctx, out):
    count = _blocks(ctx)
    numbers = [i if i % 2 == 0 else count + i // 2 for i in range(count)]
    return _expect(out, "blocks4100 allocated %d bad 0 sum %d\n" % (count + count // 2, sum(numbers)))


def _packets(ctx):
    return ctx.n(10_000_000, 64) // 32 * 32


def _check_flows(ctx, out):
    m = re.fullmatch(r"flows packets (\d+) flows_made (\d+) flows_live 0 bad 0\n", _text(out))
    if not m or int(m.group(1)) != _packets(ctx) or int(m.group(2)) < 1:
        return "expected 'flows packets %d flows_made N flows_live 0 bad 0', got %r" % (
            _packets(ctx), _text(out)[:200])
    return None


def _containers_n(ctx):
    return ctx.n(200_000, 2)


def _check_containers(ctx, out):
    n, rounds = _containers_n(ctx), 6
    kept = [r * n + i for r in range(rounds) for i in range(0, n, 2)]
    return _expect(out, "containers map %d %d unordered %d %d sorted 1\n"
                   % (len(kept), sum(kept), n, sum(1 + i % 50 for i in range(n))))


# ---- mimalloc-bench (PYFRAG_MIMALLOC_BENCH: its built out/bench folder) -----------

def mimalloc_bench_input(ctx: Context, bench: str, name: str) -> Optional[str]:
    """An input file of mimalloc-bench: beside the programs, or in its source tree (bench/<bench>/)."""
    folder = ctx.mimalloc_bench or ""
    for path in (os.path.join(folder, name), os.path.join(folder, bench, name),
                 os.path.join(folder, os.pardir, os.pardir, "bench", bench, name)):
        if os.path.isfile(path):
            return os.path.normpath(path)
    return None


def _mb(name, *args, stdin=None):
    def command(ctx):
        argv = [os.path.join(ctx.mimalloc_bench, name)]
        for a in args:
            argv.append(a(ctx) if callable(a) else a)
        return Command(argv, stdin=stdin(ctx) if stdin else None)
    return command


def _mb_input(bench, name):
    def find(ctx):
        path = mimalloc_bench_input(ctx, bench, name)
        if path is None:
            raise FileNotFoundError("mimalloc-bench input %s/%s not found beside %s or in its "
                                    "source tree" % (bench, name, ctx.mimalloc_bench))
        return path
    return find


CFRAC_NUMBER = 17545186520507317056371138836327483792789528


def _check_cfrac(ctx, out):
    m = re.search(r"^%d = ([\d *]+)$" % CFRAC_NUMBER, _text(out), re.M)
    if not m:
        return "no factorisation of %d in %r" % (CFRAC_NUMBER, _text(out)[:200])
    product = 1
    for factor in m.group(1).split("*"):
        product *= int(factor)
    return None if product == CFRAC_NUMBER else "the factors do not multiply to the number"


def _contains(pattern):
    def check(ctx, out):
        return None if re.search(pattern, _text(out), re.M) else "no %r in %r" % (pattern, _text(out)[-300:])
    return check


def _nothing_printed(ctx, out):
    return None if not out.strip() else "unexpected output %r" % _text(out)[:200]


def _rate(pattern, scale=1.0, per_wall=False):
    def rate(out, seconds):
        m = re.search(pattern, _text(out), re.M)
        if not m:
            return None
        value = float(m.group(1)) * scale
        return value / seconds if per_wall else value
    return rate


PROGRAMS = [
    # the tuning set: the measured programs and the causes it names
    Program("python-dict-json", TUNING, SYSTEM, "python3, PYTHONMALLOC=malloc: 200k-entry dict, json round trip",
            ("python3",), _python_dict_json, _check_python_dict_json),
    Program("bash-assoc", TUNING, SYSTEM, "bash: 20,000-entry associative array among temporaries",
            ("bash",), _bash_assoc, _check_bash_assoc),
    Program("xargs-fork", TUNING, SYSTEM, "seq | xargs -n 1 expr | awk: a process per line",
            ("bash", "seq", "xargs", "expr", "awk"), _xargs, _check_xargs),
    Program("handoff", TUNING, OWN, "threads hand blocks to a consumer thread and exit",
            ("handoff",), _own("handoff", _handoff_waves, 4, 5000), _check_handoff),
    Program("blocks-4100", TUNING, OWN, "400 MB of 4,100-byte blocks, half replaced",
            ("blocks4100",), _own("blocks4100", _blocks), _check_blocks),
    Program("alloc-test", TUNING, MIMALLOC_BENCH, "mimalloc-bench alloc-test 1",
            ("alloc-test",), _mb("alloc-test", "1"),
            _contains(r"made 100000000 alloc/dealloc operations")),
    Program("cfrac", TUNING, MIMALLOC_BENCH, "mimalloc-bench cfrac (bignum factorisation)",
            ("cfrac",), _mb("cfrac", str(CFRAC_NUMBER)), _check_cfrac),
    Program("larson", TUNING, MIMALLOC_BENCH, "mimalloc-bench larson, 2 threads, 3 s (throughput)",
            ("larson",), _mb("larson", "3", "8", "1000", "5000", "100", "4141", "2"),
            _contains(r"^Throughput = +\d+ operations per second"),
            _rate(r"Throughput = +(\d+) operations per second")),
    # held out: judged without having been tuned on
    Program("python-objects", HELD_OUT, SYSTEM, "python3, PYTHONMALLOC=malloc: 400k objects, random deaths",
            ("python3",), _python_objects, _check_python_objects),
    Program("bash-strings", HELD_OUT, SYSTEM, "bash: a string and an array grown 30,000 times",
            ("bash",), _bash_strings, _check_bash_strings),
    Program("sort-words", HELD_OUT, SYSTEM, "sort: 600k lines of words",
            ("sort",), _sort_words, _check_sort_words),
    Program("sort-numeric", HELD_OUT, SYSTEM, "sort -n -r: 400k numbers",
            ("sort",), _sort_numeric, _check_sort_numeric),
    Program("gzip", HELD_OUT, SYSTEM, "gzip -6 of 400k lines", ("gzip",), *_gzip),
    Program("xz", HELD_OUT, SYSTEM, "xz -6 of 60k lines", ("xz",), *_xz),
    Program("bzip2", HELD_OUT, SYSTEM, "bzip2 -9 of 150k lines", ("bzip2",), *_bzip2),
    Program("sqlite3", HELD_OUT, SYSTEM, "sqlite3: 300k rows, an index, group by, delete",
            ("sqlite3",), _sqlite, _check_sqlite),
    Program("git", HELD_OUT, SYSTEM, "git fast-import of 3,000 commits, rev-list, ls-tree, log --stat",
            ("bash", "git", "wc", "grep"), _git, _check_git),
    Program("perl-hash", HELD_OUT, SYSTEM, "perl: 300k-key hash with deletions, sorted keys",
            ("perl",), _perl_hash, _check_perl_hash),
    Program("perl-text", HELD_OUT, SYSTEM, "perl: regex word count over 200k lines",
            ("perl",), _perl_text, _check_perl_text),
    Program("gcc", HELD_OUT, SYSTEM, "gcc -O2 of a 500-function file, then run it",
            ("bash", "gcc"), _gcc, _check_gcc),
    Program("g++", HELD_OUT, SYSTEM, "g++ -O1 of 250 template instantiations over std::map, then run it",
            ("bash", "g++"), _gxx, _check_gxx),
    Program("awk-count", HELD_OUT, SYSTEM, "awk: word counts of 300k lines",
            ("awk",), _awk, _check_awk),
    Program("make", HELD_OUT, SYSTEM, "make: 15,000 pattern-rule targets",
            ("make",), _make, _check_make),
    Program("tar", HELD_OUT, SYSTEM, "tar -c | tar -tv of 4,000 files",
            ("bash", "tar", "wc"), _tar, _check_tar),
    Program("diff", HELD_OUT, SYSTEM, "diff of two 1M-line files", ("diff",), _diff, _check_diff),
    Program("jq", HELD_OUT, SYSTEM, "jq: sum over a 150k-object JSON array", ("jq",), _jq, _check_jq),
    Program("sed", HELD_OUT, SYSTEM, "sed -E with back-references over 200k lines",
            ("sed",), _sed, _check_sed),
    Program("flows", HELD_OUT, OWN, "packet bursts beside a flow table (DPDK-style)",
            ("flows",), _own("flows", _packets), _check_flows),
    Program("containers", HELD_OUT, OWN, "C++ std::map, unordered_map, vector<string>",
            ("containers",), _own("containers", _containers_n, 6), _check_containers),
    Program("espresso", HELD_OUT, MIMALLOC_BENCH, "mimalloc-bench espresso largest.espresso",
            ("espresso",), _mb("espresso", _mb_input("espresso", "largest.espresso")), _nothing_printed),
    Program("barnes", HELD_OUT, MIMALLOC_BENCH, "mimalloc-bench barnes (n-body)",
            ("barnes",), _mb("barnes", stdin=_mb_input("barnes", "input")),
            _contains(r"^FORCECALCTIME = ")),
    Program("cache-scratch", HELD_OUT, MIMALLOC_BENCH, "mimalloc-bench cache-scratch 1",
            ("cache-scratch",), _mb("cache-scratch", "1", "1000", "1", "2000000", "2"), _nothing_printed),
    Program("mstress", HELD_OUT, MIMALLOC_BENCH, "mimalloc-bench mstress 2 50 100",
            ("mstress",), _mb("mstress", "2", "50", "100"), _contains(r"^start with 2 threads")),
    Program("xmalloc-test", HELD_OUT, MIMALLOC_BENCH, "mimalloc-bench xmalloc-test, 2 s (throughput)",
            ("xmalloc-test",), _mb("xmalloc-test", "-w", "2", "-t", "2", "-s", "64"),
            _contains(r"free/sec: [\d.]+ M"), _rate(r"free/sec: ([\d.]+) M", 1e6)),
    Program("glibc-simple", HELD_OUT, MIMALLOC_BENCH, "mimalloc-bench glibc-simple",
            ("glibc-simple",), _mb("glibc-simple"), _nothing_printed),
    Program("glibc-thread", HELD_OUT, MIMALLOC_BENCH, "mimalloc-bench glibc-thread 2 (throughput)",
            ("glibc-thread",), _mb("glibc-thread", "2"), _contains(r"^\d+ iterations"),
            _rate(r"^(\d+) iterations", per_wall=True)),
    Program("malloc-large", HELD_OUT, MIMALLOC_BENCH, "mimalloc-bench malloc-large (2-30 MB blocks)",
            ("malloc-large",), _mb("malloc-large"), _nothing_printed),
]
