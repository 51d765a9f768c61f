"""apply_patches against real directory trees, with diffs produced by libgit2 itself."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pygit2
import pytest
from pygit2.enums import FileMode

from monorepo.errors import OverlayError
from monorepo.sources.patches import Patch, apply_patches

Files = dict[str, bytes | tuple[bytes, FileMode]]

EXEC = FileMode.BLOB_EXECUTABLE
BLOB = FileMode.BLOB


def _tree(repo: pygit2.Repository, files: Files) -> pygit2.Oid:
    index = pygit2.Index()
    for path, value in files.items():
        data, mode = value if isinstance(value, tuple) else (value, BLOB)
        index.add(pygit2.IndexEntry(path, repo.create_blob(data), mode))
    return index.write_tree(repo)


def make_patch(tmp_path: Path, before: Files, after: Files, name: str = "p.patch") -> Patch:
    """A git-style diff from *before* to *after*, as `git diff -M` would write it."""
    repo = pygit2.init_repository(tmp_path / f"gen-{name}", bare=True)
    old = repo.get(_tree(repo, before))
    new = repo.get(_tree(repo, after))
    assert isinstance(old, pygit2.Tree) and isinstance(new, pygit2.Tree)
    diff = old.diff_to_tree(new)
    diff.find_similar()
    text = (diff.patch or "").encode()
    return Patch(f"packages/demo/patches/{name}", hashlib.sha256(text).hexdigest(), text)


def write_tree(root: Path, files: Files) -> None:
    for path, value in files.items():
        data, mode = value if isinstance(value, tuple) else (value, BLOB)
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(0o755 if mode == EXEC else 0o644)


def snapshot(root: Path) -> dict[str, tuple[bytes, bool]]:
    """Every file under *root* with its bytes and executable bit (nothing hidden)."""
    out: dict[str, tuple[bytes, bool]] = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            out[rel] = (path.read_bytes(), bool(path.stat().st_mode & stat.S_IXUSR))
    return out


BEFORE: Files = {
    "setup.py": b"from setuptools import setup\nsetup(name='demo')\n",
    "src/demo/__init__.py": b"VERSION = '1.0'\n",
    "src/demo/legacy.py": b"OLD = True\n",
    "configure": b"#!/bin/sh\necho configure\n",
    "long.txt": b"".join(b"line %d\n" % i for i in range(1, 41)),
}


def test_modify_add_delete_chmod(tmp_path: Path) -> None:
    after: Files = dict(BEFORE)
    after["src/demo/__init__.py"] = b"VERSION = '1.0+patched'\n"
    after["src/demo/new.py"] = b"NEW = 1\n"
    del after["src/demo/legacy.py"]
    configure = BEFORE["configure"]
    assert isinstance(configure, bytes)
    after["configure"] = (configure, EXEC)
    tree = tmp_path / "demo-1.0"
    write_tree(tree, BEFORE)
    patch = make_patch(tmp_path, BEFORE, after)

    apply_patches(tree, [patch], package="demo")

    got = snapshot(tree)
    assert got == {
        "setup.py": (BEFORE["setup.py"], False),
        "src/demo/__init__.py": (b"VERSION = '1.0+patched'\n", False),
        "src/demo/new.py": (b"NEW = 1\n", False),
        "configure": (b"#!/bin/sh\necho configure\n", True),
        "long.txt": (BEFORE["long.txt"], False),
    }
    # no .git gitlink or any other leftover in the tree
    assert not (tree / ".git").exists()


def test_rename_is_applied(tmp_path: Path) -> None:
    after: Files = dict(BEFORE)
    content = BEFORE["long.txt"]
    assert isinstance(content, bytes)
    del after["long.txt"]
    after["docs/long.txt"] = content.replace(b"line 20\n", b"line twenty\n")
    patch = make_patch(tmp_path, BEFORE, after)
    assert b"rename from long.txt" in patch.text
    tree = tmp_path / "t"
    write_tree(tree, BEFORE)

    apply_patches(tree, [patch], package="demo")

    assert not (tree / "long.txt").exists()
    assert b"line twenty\n" in (tree / "docs/long.txt").read_bytes()


def test_two_patches_in_order(tmp_path: Path) -> None:
    step1: Files = dict(BEFORE)
    step1["src/demo/__init__.py"] = b"VERSION = '1.1'\n"
    step2: Files = dict(step1)
    step2["src/demo/__init__.py"] = b"VERSION = '1.2'\n"
    first = make_patch(tmp_path, BEFORE, step1, "0001-a.patch")
    second = make_patch(tmp_path, step1, step2, "0002-b.patch")
    tree = tmp_path / "t"
    write_tree(tree, BEFORE)

    apply_patches(tree, [first, second], package="demo")
    assert (tree / "src/demo/__init__.py").read_bytes() == b"VERSION = '1.2'\n"

    # the other order cannot work: the second patch expects the first's result
    other = tmp_path / "t2"
    write_tree(other, BEFORE)
    with pytest.raises(OverlayError, match=r"0002-b\.patch"):
        apply_patches(other, [second, first], package="demo")


def test_broken_patch_names_patch_file_and_hunk_and_changes_nothing(tmp_path: Path) -> None:
    after: Files = dict(BEFORE)
    after["setup.py"] = b"from setuptools import setup\nsetup(name='demo', version='1')\n"
    long = BEFORE["long.txt"]
    assert isinstance(long, bytes)
    after["long.txt"] = long.replace(b"line 3\n", b"LINE 3\n").replace(b"line 35\n", b"LINE 35\n")
    patch = make_patch(tmp_path, BEFORE, after, "0003-broken.patch")
    tree = tmp_path / "t"
    changed = dict(BEFORE)
    changed["long.txt"] = long.replace(b"line 35\n", b"something else\n")  # hunk 2 conflicts
    write_tree(tree, changed)
    before = snapshot(tree)

    with pytest.raises(OverlayError) as info:
        apply_patches(tree, [patch], package="demo")

    message = str(info.value)
    assert "demo" in message
    assert "packages/demo/patches/0003-broken.patch" in message
    assert "long.txt" in message
    assert "hunk 2" in message
    # all-or-nothing: setup.py's hunk would apply, but nothing was written
    assert snapshot(tree) == before


def test_patch_for_missing_file(tmp_path: Path) -> None:
    after: Files = dict(BEFORE)
    after["src/demo/legacy.py"] = b"OLD = False\n"
    patch = make_patch(tmp_path, BEFORE, after)
    tree = tmp_path / "t"
    reduced = {k: v for k, v in BEFORE.items() if k != "src/demo/legacy.py"}
    write_tree(tree, reduced)
    with pytest.raises(OverlayError, match=r"src/demo/legacy\.py"):
        apply_patches(tree, [patch], package="demo")
    assert snapshot(tree) == snapshot_of(tmp_path, reduced)


def snapshot_of(tmp_path: Path, files: Files) -> dict[str, tuple[bytes, bool]]:
    root = tmp_path / "expected"
    write_tree(root, files)
    return snapshot(root)


def test_not_a_diff(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    write_tree(tree, BEFORE)
    bogus = Patch("packages/demo/patches/0001-x.patch", "0" * 64, b"this is not a diff\n")
    with pytest.raises(OverlayError, match=r"0001-x\.patch.*not a git-style unified diff"):
        apply_patches(tree, [bogus], package="demo")


def test_gitattributes_in_tree_do_not_convert_line_endings(tmp_path: Path) -> None:
    files: Files = {".gitattributes": b"* text eol=crlf\n", "a.txt": b"one\ntwo\n"}
    after: Files = dict(files)
    after["a.txt"] = b"one\nTWO\n"
    after["b.txt"] = b"new\n"
    patch = make_patch(tmp_path, files, after)
    tree = tmp_path / "t"
    write_tree(tree, files)
    apply_patches(tree, [patch], package="demo")
    assert (tree / "a.txt").read_bytes() == b"one\nTWO\n"
    assert (tree / "b.txt").read_bytes() == b"new\n"


def test_no_patches_is_a_no_op(tmp_path: Path) -> None:
    apply_patches(tmp_path / "does-not-exist", [], package="demo")
    with pytest.raises(OverlayError, match="not a directory"):
        apply_patches(
            tmp_path / "does-not-exist",
            [Patch("p", "0" * 64, b"")],
            package="demo",
        )
