# SPDX-License-Identifier: GPL-2.0-only
"""native/check_layers.py: the picture of the layers, and that it catches an
upward dependency (the build runs the same check before it links)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, scons_build

NATIVE = os.path.join(REPO_ROOT, "native")
CHECK = [sys.executable, os.path.join(NATIVE, "check_layers.py")]
sys.path.insert(0, NATIVE)
from layers import LAYERS  # noqa: E402


@pytest.fixture(scope="module")
def objects():
    return scons_build("lib", "release")


def check(*args: str):
    return subprocess.run([*CHECK, *args], capture_output=True, text=True, timeout=120)


def test_the_tree_passes_and_the_picture_names_every_layer_and_edge(objects):
    run = check("--objects", objects)
    assert run.returncode == 0, run.stdout
    for i, (folder, *_rest) in enumerate(LAYERS, 1):
        files = sorted(os.listdir(os.path.join(NATIVE, "src", folder)))
        assert "  %d %-10s %s" % (i, folder, " ".join(files)) in run.stdout
    assert "malloc     -> api" in run.stdout and "UPWARD" not in run.stdout
    assert run.stdout.rstrip().endswith("every one downward")
    # the build wrote the same picture
    with open(os.path.join(objects, "layers.txt")) as f:
        assert f.read() == run.stdout


def test_the_library_is_not_linked_without_the_check(objects):
    from conftest import SCONS
    tree = subprocess.run([*SCONS, "-Q", "-n", "--tree=prune", "build/release/libpyfrag.so"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert tree.returncode == 0, tree.stderr
    assert "+-build/release/layers.txt" in tree.stdout, tree.stdout


@pytest.fixture
def tree(tmp_path):
    """A copy of native/src to break."""
    src = tmp_path / "src"
    shutil.copytree(os.path.join(NATIVE, "src"), src)
    return src


def add_include(path, after: str, include: str):
    """Add `#include "include"` to the file, right after its include of `after`."""
    old = '#include "%s"' % after
    path.write_text(path.read_text().replace(old, old + '\n#include "%s"' % include))


def test_an_upward_include_fails(tree):
    add_include(tree / "page_frag" / "page_frag.c", "page_frag/page_frag.h", "malloc/malloc.h")
    run = check("--src", str(tree))
    assert run.returncode == 1
    assert 'page_frag/page_frag.c includes "malloc/malloc.h": malloc is above page_frag' in run.stdout


def test_an_upward_call_fails(tree, objects, tmp_path):
    # page_frag calls the malloc front, declared by hand (no include to give it away)
    page_frag = tree / "page_frag" / "page_frag.c"
    page_frag.write_text(page_frag.read_text() + (
        "\nPF_INTERNAL void *pf__malloc(size_t size);\n"
        "void *pf__frag_upward_example(void);\n"
        "void *pf__frag_upward_example(void) { return pf__malloc(1); }\n"))
    built = tmp_path / "build"
    shutil.copytree(os.path.join(objects, "src"), built / "src")
    subprocess.run(["gcc", "-std=c11", "-fPIC", "-fvisibility=hidden", "-D_GNU_SOURCE",
                    "-I", os.path.join(NATIVE, "include"), "-I", str(tree), "-c", str(page_frag),
                    "-o", str(built / "src" / "page_frag" / "page_frag.os")], check=True)
    run = check("--src", str(tree), "--objects", str(built))
    assert run.returncode == 1
    assert ("page_frag/page_frag.os calls pf__malloc, defined in malloc/malloc.os: "
            "malloc is above page_frag") in run.stdout
    assert "page_frag  => UPWARD malloc" in run.stdout


def test_a_file_outside_the_layers_fails(tree):
    (tree / "helpers.c").write_text("/* SPDX-License-Identifier: GPL-2.0-only */\n")
    (tree / "extra").mkdir()
    run = check("--src", str(tree))
    assert run.returncode == 1
    assert "native/src/helpers.c is in no layer's folder" in run.stdout
    assert "native/src/extra/ is not a layer in native/layers.py" in run.stdout


def test_a_layer_header_that_includes_its_own_layer_fails(tree):
    add_include(tree / "thread" / "thread.h", "slab/slab.h", "thread/thread.h")
    run = check("--src", str(tree))
    assert run.returncode == 1
    assert "the thread layer's header, includes \"thread/thread.h\"" in run.stdout


def test_the_readme_table_must_match_the_folders(tree):
    (tree / "api" / "more.c").write_text("/* SPDX-License-Identifier: GPL-2.0-only */\n")
    run = check("--src", str(tree))
    assert run.returncode == 1
    assert "native/README.md: row api lists" in run.stdout and "'more.c'" in run.stdout
