# SPDX-License-Identifier: GPL-2.0-only
"""What `pyfrag stress` shows: live progress on stderr, the report, JSON and the plot.

Contract: `ProgressView(stream, params)` draws per-worker ops/s and RSS
(redrawn in place on a TTY, a line a second otherwise); `format_report`
is the table of workers (and for --shared the arena's statistics and the
fragment balance) with every violation; `write_json` writes
`report.to_json()` to a path or "-" (stdout); `write_plot` draws RSS over
time per worker with each worker's final-RSS bound. Nothing here loads
libpyfrag.so or psutil.
"""
from __future__ import annotations

import json
import shlex
import sys

from ..tools.stress.judge import rss_bound
from ..tools.stress.params import MiB, Params
from ..tools.stress.report import Report, SharedReport


# ---- live progress (stderr) ------------------------------------------------------------

def _mib(n) -> str:
    return "-" if n is None else "%.1f MiB" % (n / MiB)


def _si(n) -> str:
    if n is None:
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return "%.2f%s" % (n / scale, suffix)
    return "%.0f" % n


class ProgressView:
    """Per-worker ops/s and RSS on stderr: redrawn in place on a TTY, a line a second otherwise."""

    REDRAW_PERIOD = 0.1
    LINE_PERIOD = 1.0

    def __init__(self, stream, params: Params, tty: bool | None = None):
        self.stream = stream
        self.params = params
        self.tty = stream.isatty() if tty is None else tty
        self.drawn = 0
        self.last = None

    def _due(self, elapsed: float) -> bool:
        period = self.REDRAW_PERIOD if self.tty else self.LINE_PERIOD
        if self.last is not None and elapsed - self.last < period:
            return False
        self.last = elapsed
        return True

    def _total(self) -> str:
        p = self.params
        return "%d ops/worker" % p.ops if p.ops else "%.1f s" % p.duration

    def update(self, elapsed: float, rows: list) -> None:
        if not self._due(elapsed):
            return
        if self.tty:
            self._redraw(elapsed, rows)
        else:
            cells = ["w%d %s %s/s %s" % (r.index, r.state, _si(r.rate), _mib(r.rss)) for r in rows]
            self.stream.write("[%6.1f s] %s\n" % (elapsed, " | ".join(cells)))
        self.stream.flush()

    def _redraw(self, elapsed: float, rows: list) -> None:
        lines = ["pyfrag stress: %.1f s of %s" % (elapsed, self._total())]
        lines += ["  worker %-3d pid %-8s %-10s %10s ops %9s ops/s  RSS %s"
                  % (r.index, r.pid, r.state, _si(r.ops), _si(r.rate), _mib(r.rss)) for r in rows]
        up = "\x1b[%dF" % self.drawn if self.drawn else ""
        self.stream.write(up + "".join(line + "\x1b[K\n" for line in lines))
        self.drawn = len(lines)

    def close(self) -> None:
        self.stream.flush()


# ---- the report (stdout) ------------------------------------------------------------------

COLUMNS = ("worker", "pid", "workload", "ops", "ops/s", "ns/op", "pre RSS", "peak RSS",
           "final RSS", "hugepages", "result")


def _hugepages(w) -> str:
    h = w.hugepage
    if not h:
        return "-"
    if h["hugetlb"] > 0 and h["hugetlb"] >= h["thp"]:
        kind = "hugetlb"
    else:
        kind = "THP" if h["thp"] else "4K"
    return "%.0f%% %s" % (100 * h["coverage"], kind)


def _row(w) -> tuple:
    ns = "-" if w.ns_per_op is None else "%.1f" % w.ns_per_op
    return (str(w.index), str(w.pid), w.label, _si(w.ops), _si(w.ops_per_s), ns, _mib(w.pre_rss),
            _mib(w.peak_rss), _mib(w.final_rss), _hugepages(w), w.status)


def format_table(report: Report, columns: tuple = COLUMNS, counted=None) -> str:
    """One row per worker, and "all": the ops of the workers `counted` (default: every one)."""
    rows = [columns] + [_row(w) for w in report.workers]
    counted = report.workers if counted is None else counted
    total_ops = sum(w.ops for w in counted)
    total_rate = sum(w.ops_per_s or 0 for w in counted)
    rows.append(("all", "", "", _si(total_ops), _si(total_rate), "", "", "", "", "", ""))
    return _aligned(rows)


def _aligned(rows: list) -> str:
    """Rows of cells as left-aligned columns two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(r, widths)).rstrip()
                     for r in rows) + "\n"


def _failed(report: Report) -> str:
    count = len(report.violations)
    lines = ["FAILED: %d violation%s" % (count, "" if count == 1 else "s")]
    lines += ["  - %s" % v for v in report.violations]
    return "\n".join(lines) + "\n"


def _summary(report: Report) -> str:
    p = report.params
    if report.ok and p.workload == "dpdk":
        n = len(report.workers)
        return ("ok (%d DPDK pipeline%s, %.1f s): every fragment freed and every mbuf back in its "
                "pool,\n    no corruption, no page in use after the lcore flushes, committed "
                "bytes within PYFRAG_RETAIN\n" % (n, "" if n == 1 else "s", report.elapsed))
    if report.ok and report.workers and report.workers[0].retain is None:
        n = len(report.workers)
        return ("ok (%d instance%s, %.1f s): every instance exited 0 under the preload, no "
                "allocation failed,\n    no invalid free\n" % (n, "" if n == 1 else "s",
                                                           report.elapsed))
    if report.ok:
        n = len(report.workers)
        return ("ok (%d worker%s, %.1f s): every fragment freed, no page in use after drain,\n"
                "    chunks back to PYFRAG_RETAIN, counters agree, no corruption, no crash or\n"
                "    hang, final RSS within pre-run + PYFRAG_RETAIN x 2 MiB + peak committed / 256"
                " + %d MiB\n" % (n, "" if n == 1 else "s", report.elapsed, p.rss_slack // MiB))
    return _failed(report)


def format_report(report: Report) -> str:
    if isinstance(report, SharedReport):
        return format_shared_report(report)
    p = report.params
    length = "%d ops per worker" % p.ops if p.ops else "%g s" % p.duration
    if report.command:
        title = ("pyfrag stress --cmd %s: %d instances, start method %s\n\n"
                 % (shlex.join(report.command), p.workers, p.start_method))
        return title + format_table(report) + "\n" + _summary(report)
    title = ("pyfrag stress: %s, %d workers x %d pair%s, %s, sizes %s, start method %s\n\n"
             % (p.workload, p.workers, p.pairs, "" if p.pairs == 1 else "s", length, p.sizes.text,
                p.start_method))
    return title + format_table(report) + "\n" + _summary(report)


# ---- the --shared report -------------------------------------------------------------------

ARENA_ROWS = ("pages_in_use", "pages_free", "processes", "caches", "allocs", "frees", "refills",
              "recycles", "abandons", "order0_fallbacks", "invalid_frees", "alloc_failures",
              "attaches", "detaches", "reaped_processes", "reaped_caches", "lost_pages",
              "lock_recoveries")


def format_arena_table(arena: dict) -> str:
    stages = (("start", arena["stats_before"]), ("after run", arena["stats_after_run"]),
              ("end", arena["stats_final"]))
    rows = [("arena stat",) + tuple(name for name, _ in stages)]
    rows += [(field,) + tuple(str(stats[field]) for _, stats in stages) for field in ARENA_ROWS]
    return _aligned(rows)


def _fragments_line(arena: dict) -> str:
    t = arena["totals"]
    return ("fragments: %d produced, %d freed by consumers, %d drained from a dead consumer's "
            "rings, %d freed by producers, %d lost\n"
            % (t["allocs"], t["frees"], t["drained"], t["self_freed"], arena["lost_fragments"]))


def _kill_lines(arena: dict) -> str:
    kill = arena.get("kill")
    if not kill:
        return ""
    if not kill["killed"]:
        return "fault: consumer 0 was not killed (it was %s)\n" % kill["state"]
    final, before = arena["stats_final"], arena["stats_before"]
    return ("fault: consumer 0 (pid %d) SIGKILLed %g s into its run; reaped %d; lost: %d "
            "fragment%s, %d pages (4 KiB) still in use, library lost_pages %d\n"
            % (kill["pid"], kill["after_s"], final["reaped_processes"] - before["reaped_processes"],
               arena["lost_fragments"], "" if arena["lost_fragments"] == 1 else "s",
               final["pages_in_use"] - before["pages_in_use"], final["lost_pages"]))


def _shared_summary(report) -> str:
    if not report.ok:
        return _failed(report)
    p, n = report.params, len(report.workers)
    return ("ok (%d processes, %.1f s): every fragment freed exactly once, no corruption, no "
            "failed allocation\n    or invalid free, pages_in_use back to its start, RSS within "
            "pre-run + mapping + %d MiB\n" % (n, report.elapsed, p.rss_slack // MiB))


def format_shared_report(report) -> str:
    """The workers (ops: fragments produced, or consumed; "all" counts each fragment once, as
    produced), the arena's stats before, after the run and at the end, the fragment balance."""
    p, a = report.params, report.arena
    length = "%d ops per producer" % p.ops if p.ops else "%g s" % p.duration
    title = ("pyfrag stress --shared: %d producers x %d consumers, %d rings of %d slots, %s, "
             "sizes %s, start method %s\narena %s: %d MiB, %s, %s\n\n"
             % (a["producers"], a["consumers"], a["rings"], a["ring_slots"], length, p.sizes.text,
                p.start_method, a["name"], a["size_bytes"] // MiB, a["backing"], a["path"]))
    producers = [w for w in report.workers if w.label.startswith("producer")]
    table = format_table(report, ("worker", "pid", "role") + COLUMNS[3:], producers)
    return (title + table + "\n" + format_arena_table(a) + "\n" +
            _fragments_line(a) + _kill_lines(a) + "\n" + _shared_summary(report))


def write_json(report: Report, path: str) -> None:
    data = report.to_json()
    if path == "-":
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    with open(path, "w") as out:
        json.dump(data, out, indent=2)
        out.write("\n")


def write_plot(report: Report, path: str, plt) -> None:
    fig, ax = plt.subplots(figsize=(9, 5))
    for w in report.workers:
        if not w.samples:
            continue
        line, = ax.plot([t for t, _ in w.samples], [rss / MiB for _, rss in w.samples],
                        label="worker %d (pid %s): %s" % (w.index, w.pid, w.status))
        bound = rss_bound(w, report.params.rss_slack)
        if bound is not None:
            ax.axhline((w.pre_rss + bound) / MiB, color=line.get_color(), linestyle=":",
                       linewidth=1)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("resident memory, MiB (rss + hugetlb)")
    ax.set_title("pyfrag stress: %s (dotted: each worker's final-RSS bound)"
                 % report.params.workload)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
