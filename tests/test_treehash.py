"""The tree hash on real directories: stable where it must be, sensitive where it must be."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from monorepo.sources.treehash import (
    Entry,
    TreeHashError,
    diff_entries,
    hash_entries,
    manifest,
    parse_manifest,
    scan_tree,
    scan_trees,
    tree_hash,
)


def make_tree(root: Path) -> Path:
    """A small tree with every kind of entry the hash knows about."""
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("print('hi')\n")
    (root / "pkg" / "sub" / "data.txt").write_bytes(b"\x00\x01data")
    script = root / "run.sh"
    script.write_text("#!/bin/sh\necho run\n")
    script.chmod(0o755)
    (root / "empty").mkdir()
    (root / "link").symlink_to("pkg/__init__.py")
    return root


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_definition_matches_the_documented_records(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "t")
    init, data, script = b"print('hi')\n", b"\x00\x01data", b"#!/bin/sh\necho run\n"
    # The expected bytes, written out by hand from the definition, in UTF-8 path order.
    expected = b"".join(
        [
            b"dir 040000  empty\0",
            f"symlink 120000 {sha(b'pkg/__init__.py')} link\0".encode(),
            f"file 644 {sha(init)} pkg/__init__.py\0".encode(),
            f"file 644 {sha(data)} pkg/sub/data.txt\0".encode(),
            f"file 755 {sha(script)} run.sh\0".encode(),
        ]
    )
    assert tree_hash(root) == "sha256:" + sha(expected)


def test_empty_tree_hashes_the_empty_string(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    assert tree_hash(tmp_path / "e") == "sha256:" + sha(b"")


def test_stable_across_copies_paths_and_mtimes(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "one" / "a")
    b = tmp_path / "elsewhere" / "deeper" / "b"
    shutil.copytree(a, b, symlinks=True)
    os.utime(b / "pkg" / "__init__.py", (1, 1))
    (b / "pkg" / "sub" / "data.txt").chmod(0o600)  # not executable: still "644"
    assert tree_hash(a) == tree_hash(b)
    assert scan_tree(a) == scan_tree(b)


def test_order_of_entries_does_not_matter() -> None:
    entries = [
        Entry("b", "file", False, sha(b"b")),
        Entry("a/z", "file", True, sha(b"z")),
        Entry("a-", "dir", False, ""),
    ]
    forward = {e.path: e for e in entries}
    backward = {e.path: e for e in reversed(entries)}
    assert hash_entries(forward) == hash_entries(backward)


def test_sorting_is_by_utf8_bytes_not_by_components() -> None:
    # "a-" (0x2d) sorts before "a/" (0x2f): a component-wise sort would put "a/z" first.
    entries = {
        "a/z": Entry("a/z", "file", False, sha(b"")),
        "a-": Entry("a-", "file", False, sha(b"")),
    }
    expected = f"file 644 {sha(b'')} a-\0".encode() + f"file 644 {sha(b'')} a/z\0".encode()
    assert hash_entries(entries) == "sha256:" + sha(expected)


@pytest.mark.parametrize(
    "change",
    ["content", "exec_bit", "symlink_target", "empty_dir_added", "file_added", "file_removed"],
)
def test_hash_changes(tmp_path: Path, change: str) -> None:
    root = make_tree(tmp_path / "t")
    before = tree_hash(root)
    if change == "content":
        (root / "pkg" / "__init__.py").write_text("print('ho')\n")
    elif change == "exec_bit":
        (root / "run.sh").chmod(0o644)
    elif change == "symlink_target":
        (root / "link").unlink()
        (root / "link").symlink_to("pkg/sub/data.txt")
    elif change == "empty_dir_added":
        (root / "pkg" / "sub" / "new").mkdir()
    elif change == "file_added":
        (root / "empty" / "x").write_text("")
    elif change == "file_removed":
        (root / "pkg" / "sub" / "data.txt").unlink()
    assert tree_hash(root) != before


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("one")
    root = tmp_path / "t"
    root.mkdir()
    (root / "l").symlink_to(outside)
    (root / "d").symlink_to(tmp_path)  # a link to a directory is not descended into
    before = tree_hash(root)
    outside.write_text("two")
    assert tree_hash(root) == before
    assert scan_tree(root)["d"].kind == "symlink"
    assert set(scan_tree(root)) == {"l", "d"}


def test_exclude_drops_paths_and_leaves_emptied_dirs_as_empty(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "t")
    (root / "empty" / "__pycache__").mkdir()
    (root / "empty" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    plain = make_tree(tmp_path / "u")

    def exclude(rel: str) -> bool:
        return rel.rsplit("/", 1)[-1] == "__pycache__"

    assert tree_hash(root, exclude=exclude) == tree_hash(plain)
    assert tree_hash(root) != tree_hash(plain)


def test_fifo_is_an_error(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "t")
    os.mkfifo(root / "pkg" / "pipe")
    with pytest.raises(TreeHashError, match=r"pipe.*fifo"):
        scan_tree(root)


def test_missing_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TreeHashError, match="not a directory"):
        tree_hash(tmp_path / "nope")


def test_many_files_hash_in_parallel_like_serially(tmp_path: Path) -> None:
    root = tmp_path / "many"
    root.mkdir()
    for i in range(200):
        (root / f"f{i:03}").write_bytes(str(i).encode() * 1000)
    entries = scan_tree(root)
    assert len(entries) == 200
    for i in (0, 57, 199):
        assert entries[f"f{i:03}"].digest == sha(str(i).encode() * 1000)


def test_diff_classifies_each_change(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "t")
    expected = scan_tree(root)
    assert diff_entries(expected, scan_tree(root)).is_empty()

    (root / "pkg" / "__init__.py").write_text("changed\n")  # modified
    (root / "run.sh").chmod(0o644)  # mode_changed
    (root / "pkg" / "sub" / "data.txt").unlink()  # removed; the emptied "sub" is not reported
    (root / "new.txt").write_text("new")  # added
    (root / "link").unlink()
    (root / "link").write_text("now a file")  # type_changed
    (root / "empty" / "filled").write_text("x")  # added; "empty" is not reported removed
    diff = diff_entries(expected, scan_tree(root))
    assert diff.modified == ("pkg/__init__.py",)
    assert diff.mode_changed == ("run.sh",)
    assert diff.removed == ("pkg/sub/data.txt",)
    assert diff.added == ("empty/filled", "new.txt")
    assert diff.type_changed == ("link",)
    assert not diff.is_empty()


def test_diff_reports_content_and_mode_together() -> None:
    old = {"x": Entry("x", "file", False, sha(b"1"))}
    new = {"x": Entry("x", "file", True, sha(b"2"))}
    diff = diff_entries(old, new)
    assert diff.modified == ("x",)
    assert diff.mode_changed == ("x",)


def test_manifest_round_trips(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "t")
    (root / "odd name\nwith newline\\and backslash").write_text("odd")
    (root / "spaces in name.txt").write_text("s")
    raw = os.fsencode(root) + b"/latin1-\xe9.txt"
    with open(raw, "wb") as f:
        f.write(b"undecodable name")
    entries = scan_tree(root)
    text = manifest(entries)
    text.encode("utf-8")  # strict: the manifest is always writable as UTF-8
    assert len(text.splitlines()) == len(entries) + 2
    assert parse_manifest(text) == entries
    assert hash_entries(parse_manifest(text)) == tree_hash(root)
    assert "dir 040000 - empty" in text.splitlines()


def test_manifest_detects_damage(tmp_path: Path) -> None:
    text = manifest(scan_tree(make_tree(tmp_path / "t")))
    line = next(line for line in text.splitlines() if line.endswith(" run.sh"))
    damaged = text.replace(line, line.replace("file 755", "file 644"))
    with pytest.raises(TreeHashError, match="do not hash to the recorded"):
        parse_manifest(damaged)
    with pytest.raises(TreeHashError, match="header"):
        parse_manifest("file 644 abc x\n")
    with pytest.raises(TreeHashError, match="line 3: unknown kind"):
        parse_manifest(text.replace("dir 040000", "fifo 040000"))


def test_large_files_are_read_in_several_chunks(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    data = bytes(range(256)) * 9000  # about 2.2 MB: more than one read
    (root / "big.bin").write_bytes(data)
    (root / "empty.bin").write_bytes(b"")
    for size in (1 << 20) - 1, 1 << 20, (1 << 20) + 1:  # around one read's size
        (root / f"{size}.bin").write_bytes(data[:size])
    entries = scan_tree(root)
    (many,) = scan_trees([root])
    assert many == entries
    assert entries["big.bin"].digest == sha(data)
    assert entries["empty.bin"].digest == sha(b"")
    for size in (1 << 20) - 1, 1 << 20, (1 << 20) + 1:
        assert entries[f"{size}.bin"].digest == sha(data[:size])


def test_scan_trees_is_scan_tree_of_each_root_with_errors_in_place(tmp_path: Path) -> None:
    one = make_tree(tmp_path / "one")
    many = tmp_path / "many"
    many.mkdir()
    for i in range(150):  # enough files for the pool to use several threads
        (many / f"f{i:03}").write_bytes(str(i).encode() * 500)
    broken = make_tree(tmp_path / "broken")
    os.mkfifo(broken / "pipe")
    empty = tmp_path / "empty"
    empty.mkdir()
    roots = [one, broken, many, tmp_path / "nope", empty]
    done: list[int] = []
    results = scan_trees(roots, jobs=3, progress=done.append)
    assert results[0] == scan_tree(one)
    assert results[2] == scan_tree(many) and len(results[2]) == 150
    assert results[4] == {}
    assert isinstance(results[1], TreeHashError) and "fifo" in str(results[1])
    assert isinstance(results[3], TreeHashError) and "not a directory" in str(results[3])
    assert sorted(done) == [0, 1, 2, 3, 4]  # once per tree, whatever its outcome


def test_scan_trees_names_an_unreadable_file_and_keeps_the_other_trees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import monorepo.sources.treehash as treehash

    good, bad = make_tree(tmp_path / "good"), make_tree(tmp_path / "bad")
    real = treehash._digest_and_mode

    def digest(path: str) -> tuple[str, bool]:
        if str(path).endswith("bad/pkg/sub/data.txt"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(treehash, "_digest_and_mode", digest)
    results = scan_trees([good, bad], jobs=1)
    assert results[0] == scan_tree(good)
    assert isinstance(results[1], TreeHashError)
    assert "cannot read" in str(results[1]) and "data.txt" in str(results[1])


def test_a_failure_in_a_hashing_thread_is_raised_not_lost(tmp_path: Path) -> None:
    import monorepo.sources.treehash as treehash

    def broken(path: str) -> str:
        raise ValueError(f"bug hashing {path}")

    paths = [str(tmp_path / f"f{i}") for i in range(100)]
    with pytest.raises(ValueError, match="bug hashing"):
        treehash._hash_many(paths, broken, 4)


def test_manifest_and_hash_sort_once_and_agree(tmp_path: Path) -> None:
    import monorepo.sources.treehash as treehash

    root = make_tree(tmp_path / "t")
    (root / "odd name\nwith newline\\and backslash").write_text("odd")
    (root / "caf\u00e9.txt").write_text("non-ASCII but nothing to escape")
    entries = scan_tree(root)
    assert treehash.manifest_and_hash(entries) == (manifest(entries), hash_entries(entries))
    assert "caf\u00e9.txt" in manifest(entries)
    assert parse_manifest(manifest(entries)) == entries


def test_a_tree_1200_directories_deep_is_hashed_scanned_and_listed(
    tmp_path: Path, deep_tree: Callable[..., Path]
) -> None:
    """Made on disk (extraction refuses it): every walk of the tree hash is iterative."""
    root = tmp_path / "deep"
    deep = deep_tree(root)
    (deep.parent / "empty").mkdir()
    rel = deep.relative_to(root).as_posix()
    entries = scan_tree(root)
    assert set(entries) == {rel, f"{rel.rpartition('/')[0]}/empty"}
    assert entries[rel].digest == sha(b"deep\n")
    stamps: dict[str, tuple[tuple[int, int, int, int], str]] = {}
    assert hash_entries(scan_tree(root, stamps=stamps)) == tree_hash(root)
    assert list(stamps) == [rel]
    (scanned,) = scan_trees([root])
    assert scanned == entries
    assert parse_manifest(manifest(entries)) == entries
