# SPDX-License-Identifier: GPL-2.0-only
"""The `pyfrag` command line: `info`, its JSON, help without the library, exit codes."""
from __future__ import annotations

import json
import os
import pathlib
import pwd

import pyfrag
from conftest import REPO_ROOT, run_cli
from pyfrag import cli
from pyfrag.stats import FIELDS


def test_info_text(lib):
    proc = run_cli("info")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert pyfrag.library_path() in out
    assert "pyfrag %s" % pyfrag.__version__ in out
    for needed in ("arena", "PYFRAG_LIMIT", "PYFRAG_HUGEPAGES", "THP", "hugetlb", "allocs",
                   "reserve_free_pages"):
        assert needed in out


def test_info_json_reflects_the_environment(lib):
    proc = run_cli("info", "--json", env={"PYFRAG_LIMIT": "64M", "PYFRAG_ARENA": "1G",
                                          "PYFRAG_HUGEPAGES": "thp"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["version"] == pyfrag.__version__
    assert report["library"] == {"path": pyfrag.library_path(), "version": "0.1.0", "abi": 2}
    assert report["arena"]["size"] == 1 << 30 and report["arena"]["base"] > 0
    options = {opt["name"]: opt for opt in report["options"]}
    assert options["PYFRAG_LIMIT"]["value"] == 64 << 20
    assert options["PYFRAG_HUGEPAGES"]["text"] == "thp"
    assert options["PYFRAG_ARENA"]["default"] == "64G"
    assert list(report["stats"]) == list(FIELDS)
    assert set(report["hugepages"]) >= {"hugetlb_total", "hugetlb_free", "thp_enabled"}


def test_info_json_to_a_file(lib, tmp_path):
    target = tmp_path / "info.json"
    proc = run_cli("info", "--json", str(target))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert json.loads(target.read_text())["library"]["path"] == pyfrag.library_path()


def test_help_works_without_the_library(tmp_path):
    env = {"PYFRAG_LIBRARY": str(tmp_path / "missing" / "libpyfrag.so")}
    for argv in (["--help"], ["info", "--help"], ["stress", "--help"], ["bench", "--help"],
                 ["run", "--help"], ["--version"]):
        proc = run_cli(*argv, env=env)
        assert proc.returncode == 0, (argv, proc.stderr)
    assert "info" in run_cli("--help", env=env).stdout
    assert "--shared" in run_cli("stress", "--help", env=env).stdout


def test_help_works_without_psutil(tmp_path):
    """psutil is for sampling a run: the parser of `pyfrag stress` must not need it."""
    fake = tmp_path / "fake" / "psutil"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('psutil is absent in this test')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(fake.parent), REPO_ROOT]),
           "PYFRAG_LIBRARY": str(tmp_path / "missing" / "libpyfrag.so")}
    for argv in (["--help"], ["stress", "--help"]):
        proc = run_cli(*argv, env=env)
        assert proc.returncode == 0, (argv, proc.stderr)


def test_info_without_the_library_fails_clearly(tmp_path):
    missing = tmp_path / "missing" / "libpyfrag.so"
    proc = run_cli("info", env={"PYFRAG_LIBRARY": str(missing)})
    assert proc.returncode == 1
    assert str(missing) in proc.stderr and "scons" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_usage_errors_exit_2():
    assert run_cli().returncode == 2
    assert run_cli("no-such-command").returncode == 2
    assert run_cli("info", "--no-such-flag").returncode == 2


def test_main_returns_codes_in_process(capsys, monkeypatch):
    assert cli.main(["--version"]) == 0
    assert pyfrag.__version__ in capsys.readouterr().out

    def interrupted(args):
        raise KeyboardInterrupt

    def failing(args):
        raise pyfrag.FragError("it broke")

    for run, code in ((interrupted, 130), (failing, 1)):
        monkeypatch.setattr(cli.info, "run", run)
        assert cli.main(["info"]) == code
    assert "it broke" in capsys.readouterr().err


def test_info_lists_shared_arenas(lib, tmp_path):
    name = "info-%d" % os.getpid()
    junk = pathlib.Path("/dev/shm/pyfrag.info-junk-%d" % os.getpid())
    junk.write_bytes(b"not an arena")
    try:
        with pyfrag.SharedArena(name, create=True, size=2 << 20, backing="4k") as arena:
            proc = run_cli("info", "--json")
            text = run_cli("info").stdout
            path, data = arena.path, arena.stats().map_bytes
    finally:
        junk.unlink()
    assert proc.returncode == 0, proc.stderr
    listed = {a["name"]: a for a in json.loads(proc.stdout)["shared_arenas"]}
    assert listed[name] == {"name": name, "path": path, "kind": "shmem", "bytes": data,
                            "mode": 0o600, "owner": pwd.getpwuid(os.getuid()).pw_name,
                            "layout_version": pyfrag.shared.LAYOUT_VERSION}
    assert listed[junk.name[len("pyfrag."):]]["layout_version"] is None
    assert "shared arenas" in text and name in text and "not an arena" in text
    assert name not in {a["name"] for a in json.loads(run_cli("info", "--json").stdout)
                        ["shared_arenas"]}  # the creator removed it on close


def test_info_leaves_out_an_arena_removed_while_it_looks(tmp_path, monkeypatch):
    # `pyfrag info` failed with FileNotFoundError when an arena's creator removed
    # its file between the directory listing and the stat
    from pyfrag import shared_files
    (tmp_path / "pyfrag.going").write_bytes(b"x")
    (tmp_path / "pyfrag.staying").write_bytes(b"x")
    real_scandir = os.scandir

    def listing_then_removal(directory):
        entries = list(real_scandir(directory))
        (tmp_path / "pyfrag.going").unlink()
        return entries

    monkeypatch.setattr(shared_files, "_places", lambda: [(str(tmp_path), "shmem")])
    monkeypatch.setattr(shared_files.os, "scandir", listing_then_removal)
    assert [a.name for a in shared_files.arena_files()] == ["staying"]
