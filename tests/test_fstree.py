"""Walking, copying and removing trees at any depth, on a real file system.

Python 3.11's own ``os.walk``, ``shutil.rmtree``, ``shutil.copytree`` (and
``os.makedirs``) recurse once per directory level: a tree 1,200 directories deep
kills them with RecursionError.  These tests use such a tree, made level by level.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from monorepo._core import fstree

DEPTH = 1200


@pytest.fixture
def deep(tmp_path: Path, deep_tree: Callable[..., Path]) -> Path:
    """``tmp_path/tree``: 1,200 directories deep, with a file, a link and an empty dir."""
    root = tmp_path / "tree"
    bottom = deep_tree(root, DEPTH).parent
    (bottom / "run.sh").write_text("#!/bin/sh\n")
    (bottom / "run.sh").chmod(0o755)
    os.symlink("run.sh", bottom / "link")
    (root / "empty").mkdir()
    return root


def test_the_standard_library_of_this_interpreter_cannot_remove_it(deep: Path) -> None:
    """Why fstree exists (3.12 made rmtree iterative; this project runs on 3.11)."""
    if sys.version_info >= (3, 12):
        pytest.skip("shutil.rmtree is iterative from Python 3.12")
    with pytest.raises(RecursionError):
        shutil.rmtree(deep)


def test_walk_reaches_the_bottom_and_prunes_like_os_walk(deep: Path, tmp_path: Path) -> None:
    found = list(fstree.walk(deep))
    assert len(found) == DEPTH + 2  # the root, 1,200 levels, the empty directory
    assert sorted(found[-1][2]) == ["deep.txt", "link", "run.sh"]
    # On a shallow tree: what os.walk yields, in the same order.
    shallow = tmp_path / "shallow"
    for rel in ("a/b/c", "a/d", "e"):
        (shallow / rel).mkdir(parents=True)
    (shallow / "a" / "f.txt").write_text("f")
    os.symlink("a", shallow / "to-a")
    ours = [(d, sorted(ds), sorted(fs)) for d, ds, fs in fstree.walk(shallow)]
    theirs = [(d, sorted(ds), sorted(fs)) for d, ds, fs in os.walk(shallow)]
    assert [d for d, _, _ in ours] == [d for d, _, _ in theirs]
    assert ours[0][2] == ["to-a"]  # a link to a directory is listed, never entered
    pruned = []
    for directory, dirnames, _ in fstree.walk(shallow):
        pruned.append(os.path.relpath(directory, shallow))
        dirnames[:] = [d for d in dirnames if d != "a"]
    assert pruned == [".", "e"]


def test_copy_tree_copies_every_level_with_links_and_modes(deep: Path, tmp_path: Path) -> None:
    from monorepo.sources.treehash import tree_hash

    copy = tmp_path / "copy"
    (deep / ".git").mkdir()
    (deep / ".git" / "HEAD").write_text("ref")
    try:
        fstree.copy_tree(deep, copy, skip={".git"})
        shutil.rmtree(deep / ".git")
        assert tree_hash(copy) == tree_hash(deep)
        bottom = copy.joinpath(*["d"] * DEPTH)
        assert os.readlink(bottom / "link") == "run.sh"
        assert os.access(bottom / "run.sh", os.X_OK)
    finally:
        fstree.remove_tree(copy)


def test_remove_tree_removes_every_level_and_nothing_outside(deep: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    os.symlink(outside, deep / "d" / "to-outside")  # a link to a directory: unlinked only
    fstree.remove_tree(deep)
    assert not deep.exists()
    assert (outside / "precious.txt").read_text() == "keep"
    fstree.remove_tree(deep)  # missing: nothing to do
    (tmp_path / "file").write_text("x")
    fstree.remove_tree(tmp_path / "file")
    os.symlink(outside, tmp_path / "link")
    fstree.remove_tree(tmp_path / "link")  # the link, not what it points to
    assert not os.path.lexists(tmp_path / "link") and (outside / "precious.txt").exists()


def test_remove_tree_reports_or_ignores_what_it_cannot_delete(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root deletes from read-only directories")
    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    (locked / "inner" / "f").write_text("x")
    (locked / "inner").chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            fstree.remove_tree(locked)
        fstree.remove_tree(locked, ignore_errors=True)
        assert (locked / "inner" / "f").exists()
    finally:
        (locked / "inner").chmod(0o755)


def test_temporary_directory_is_removed_at_any_depth(
    tmp_path: Path, deep_tree: Callable[..., Path]
) -> None:
    with fstree.temporary_directory(prefix="t-", dir=tmp_path) as tmp:
        assert oct(tmp.stat().st_mode & 0o777) == oct(0o700)
        deep_tree(tmp / "x", DEPTH)
    assert not tmp.exists()
    with pytest.raises(KeyError), fstree.temporary_directory(prefix="t-", dir=tmp_path) as tmp:
        raise KeyError("inside")
    assert list(tmp_path.iterdir()) == []
