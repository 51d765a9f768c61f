"""The safe extractor against real hostile archives, on a real file system."""

from __future__ import annotations

import ast
import functools
import gzip
import io
import os
import re
import stat
import tarfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fixtures import hostile
from monorepo.errors import ExtractError
from monorepo.extract.archive import extract_sdist, read_archive
from monorepo.extract.rules import Limits, Planner, RawMember
from monorepo.extract.speed.pool import ExtractorPool
from monorepo.sources.treehash import hash_entries, scan_tree, tree_hash


def snapshot(root: Path) -> set[str]:
    """Every path under *root* (not following symlinks), relative to it."""
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """(archives dir, work dir): dest goes two levels inside work, so '../..' lands in work."""
    archives = tmp_path / "archives"
    archives.mkdir()
    (tmp_path / "work" / "duni").mkdir(parents=True)
    return archives, tmp_path / "work" / "duni" / "evil"


def refuse(
    archive: Path, dest: Path, member: str, reason: str, limits: Limits | None = None
) -> str:
    """Extract, expect a refusal naming package and member, and check nothing was left."""
    outer = dest.parent.parent.parent
    before = snapshot(outer)
    with pytest.raises(ExtractError) as info:
        if limits is None:
            extract_sdist(archive, dest, package="evil")
        else:
            extract_sdist(archive, dest, package="evil", limits=limits)
    message = str(info.value)
    assert message.startswith(f"evil: refusing {archive.name}: member '{member}' "), message
    assert reason in message, message
    assert not os.path.lexists(dest)
    assert snapshot(outer) == before  # no staging dir, no escaped file, nothing new
    assert not any(p.name.startswith(".tmp-") for p in dest.parent.iterdir())
    return message


def test_path_traversal(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    refuse(hostile.path_traversal(archives), dest, "evil-1.0/../../escape.txt", "'..'")
    assert not (dest.parent / "escape.txt").exists()
    assert not (dest.parent.parent / "escape.txt").exists()


def test_absolute_path(layout: tuple[Path, Path], tmp_path: Path) -> None:
    archives, dest = layout
    target = tmp_path / "abs-target.txt"
    refuse(hostile.absolute_path(archives, str(target)), dest, str(target), "absolute")
    assert not target.exists()


def test_symlink_escape(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    refuse(hostile.symlink_escape(archives), dest, "evil-1.0/link", "leaves the extracted tree")
    assert not (dest.parent.parent / "outside").exists()


def test_symlink_chain_escape_is_resolved_through_links(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    refuse(hostile.symlink_chain_escape(archives), dest, "evil-1.0/x", "leaves the extracted tree")


def test_file_under_symlink(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    refuse(hostile.file_under_symlink(archives), dest, "evil-1.0/l/through.txt", "is a symlink")


def test_hardlink_escape(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    outside = dest.parent / "outside.txt"
    outside.write_text("secret")
    refuse(hostile.hardlink_escape(archives), dest, "evil-1.0/h", "outside the tree")
    refuse(
        hostile.hardlink_escape(archives, "evil-1.0/../../outside.txt"),
        dest,
        "evil-1.0/h",
        "'..' component in its hard link target",
    )
    assert outside.stat().st_nlink == 1


def test_hardlink_to_missing_member(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    refuse(hostile.hardlink_missing(archives), dest, "evil-1.0/h", "not an earlier regular file")


def test_device_and_fifo(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    refuse(hostile.device_file(archives), dest, "evil-1.0/null", "character device")
    refuse(hostile.fifo_file(archives), dest, "evil-1.0/pipe", "fifo")


def test_decompression_bomb_by_ratio(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    bomb = hostile.decompression_bomb(archives)
    assert bomb.stat().st_size < 200_000
    refuse(bomb, dest, "evil-1.0/zeros.bin", "decompression bomb")


def test_decompression_bomb_by_total_size(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    bomb = hostile.decompression_bomb(archives, size=10 * 1024**2)
    limits = Limits(max_total_size=1024**2, max_ratio=1e9)
    refuse(bomb, dest, "evil-1.0/zeros.bin", "over the limit of 1048576", limits)


def _refused(archive: Path, dest: Path, limits: Limits | None = None) -> str:
    """Extract, expect a refusal, and check that nothing at all was written."""
    outer = dest.parent.parent.parent
    before = snapshot(outer)
    with pytest.raises(ExtractError) as info:
        extract_sdist(archive, dest, package="evil", limits=limits or Limits())
    assert snapshot(outer) == before  # no staging dir, no file, nothing new
    return str(info.value)


def test_hard_link_bomb_is_refused_by_ratio_before_anything_is_written(
    layout: tuple[Path, Path],
) -> None:
    # 1 MiB of random bytes and 2,500 hard links to it: a 1 MB sdist that would write
    # 2.5 GB, every link being extracted as a copy.  Each link counts its target's bytes.
    archives, dest = layout
    bomb = hostile.hardlink_bomb(archives)
    assert bomb.stat().st_size < 2 * 1024**2
    message = _refused(bomb, dest)
    assert re.match(
        r"evil: refusing evil-1\.0-hardlink-bomb\.tar\.gz: member 'evil-1\.0/copy-\d+\.bin' is a"
        r" hard link to 'evil-1\.0/blob\.bin', extracted as a copy of its 1048576 bytes, which"
        r" brings the uncompressed size to \d+ bytes, \d+ times the archive's \d+ bytes, over"
        r" the limit of 200 \(a decompression bomb\?\)",
        message,
    ), message


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.bz2", ".tar"])
def test_hard_links_count_toward_the_total_size(layout: tuple[Path, Path], suffix: str) -> None:
    archives, dest = layout
    bomb = hostile.hardlink_bomb(archives, size=64 * 1024, links=40)
    if suffix != ".tar.gz":  # the same members, read by tarfile from the file
        other = hostile.write_tar(
            archives / f"bomb{suffix}", _members(gzip.decompress(bomb.read_bytes()))
        )
        bomb = other
    message = _refused(bomb, dest, Limits(max_total_size=1024**2, max_ratio=1e9))
    # setup.py, the 64 KiB file and 14 links fit in 1 MiB; the 15th link (copy-00014) is
    # the 16th copy, one too many.
    assert "member 'evil-1.0/copy-00014.bin' is a hard link to 'evil-1.0/blob.bin'" in message
    assert "over the limit of 1048576" in message


def _members(stream: bytes) -> list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]:
    out: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]] = []
    with tarfile.open(fileobj=io.BytesIO(stream)) as tf:
        for info in tf:
            member = tf.extractfile(info) if info.isreg() else None
            out.append((info, member.read()) if member is not None else info)
    return out


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.xz", ".zip"])
def test_deep_nesting_is_refused_before_anything_is_written(
    layout: tuple[Path, Path], suffix: str
) -> None:
    archives, dest = layout
    deep = hostile.deep_nesting(archives, suffix=suffix)
    message = _refused(deep, dest)
    assert message.startswith(f"evil: refusing {deep.name}: member 'evil-1.0/d/d/d/"), message
    name = f"{hostile.TOP}/{'d/' * 1200}{hostile.DEEP_FILE}"
    assert f"d/deep.txt ({len(name)} characters)' is nested 1201 levels deep" in message
    assert "over the limit of 128 levels" in message
    assert len(message) < 600  # the member's name is shortened, not quoted whole


def test_depth_and_path_length_are_counted_below_the_top_directory(
    layout: tuple[Path, Path],
) -> None:
    archives, dest = layout
    at_limit = hostile.deep_nesting(archives, depth=127)  # 128 components with the file
    extract_sdist(at_limit, dest, package="evil")
    assert (dest / ("d/" * 127 + hostile.DEEP_FILE)).read_bytes() == b"deep\n"
    # Five directories of 250 bytes: shallow, but a path of 5 x 251 + 1 = 1256 bytes.
    name = f"{hostile.TOP}/{('n' * 250 + '/') * 5}x"
    long_path = hostile.write_tar(
        archives / "evil-1.0-long.tar.gz", [hostile._dir(hostile.TOP), hostile._file(name)]
    )
    message = _refused(long_path, dest.with_name("long"))
    assert "has a path of 1256 bytes, over the limit of 1024 bytes" in message


def test_member_count_limit(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    good = hostile.good_sdist(archives)
    refuse(
        good,
        dest,
        "good-1.0/setup.py",
        "limit of 1 members",
        Limits(max_members=1),
    )


def test_duplicate_members(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    message = refuse(hostile.duplicate_members(archives), dest, "evil-1.0/./setup.py", "duplicate")
    assert "'evil-1.0/setup.py'" in message


def test_duplicate_with_same_size_but_other_bytes_is_refused(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    refuse(hostile.duplicate_same_size(archives), dest, "evil-1.0/setup.py", "different content")


def test_identical_duplicate_is_accepted(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    extract_sdist(hostile.duplicate_identical(archives), dest, package="good")
    assert (dest / "LICENSE.txt").read_bytes() == b"license text\n"


def test_no_top_dir(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    refuse(hostile.no_top_dir(archives), dest, "setup.py", "top-level")


def test_two_top_dirs(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    refuse(hostile.two_top_dirs(archives), dest, "other-1.0", "exactly one top-level directory")


def test_zip_traversal(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    refuse(hostile.zip_traversal(archives), dest, "evil-1.0/../../escape.txt", "'..'")


def test_zip_symlink_escape(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    refuse(hostile.zip_symlink_escape(archives), dest, "evil-1.0/link", "leaves the extracted")


def test_zip_real_size_is_enforced(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    lie = hostile.zip_size_lie(archives)
    # zipfile itself stops at the declared size and then fails the CRC; the extractor's own
    # count is the second line of defence.  Either way the member is refused, by name.
    message = refuse(lie, dest, "evil-1.0/big.bin", "", Limits(max_ratio=1e9))
    assert "CRC" in message or "beyond its declared 10 bytes" in message


def test_empty_archive(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    empty = hostile.write_tar(archives / "evil-1.0.tar.gz", [])
    with pytest.raises(ExtractError, match="no top-level directory"):
        extract_sdist(empty, dest, package="evil")
    assert not dest.exists()


def test_corrupt_archive(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    broken = archives / "evil-1.0.tar.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    with pytest.raises(
        ExtractError, match=r"evil: refusing evil-1\.0\.tar\.gz: it is not a readable"
    ):
        extract_sdist(broken, dest, package="evil")
    assert snapshot(dest.parent) == set()


def test_unsupported_suffix_and_existing_dest(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    with pytest.raises(ExtractError, match="not a supported archive"):
        extract_sdist(archives / "evil-1.0.rar", dest, package="evil")
    dest.mkdir()
    with pytest.raises(ExtractError, match="already exists"):
        extract_sdist(hostile.good_sdist(archives), dest, package="good")


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.bz2", ".tar.xz", ".tar", ".zip"])
def test_good_sdist_extracts_with_modes_links_and_empty_dirs(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = hostile.good_sdist(tmp_path, suffix)
    dest = tmp_path / "duni" / "good"
    old_umask = os.umask(0o077)  # directory modes must not depend on the umask
    try:
        extract_sdist(archive, dest, package="good")
    finally:
        os.umask(old_umask)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["good"]

    def mode(rel: str) -> int:
        return stat.S_IMODE((dest / rel).lstat().st_mode)

    for name, (data, _) in hostile.GOOD_FILES.items():
        assert (dest / name).read_bytes() == data
    assert mode("setup.py") == 0o644
    assert mode("good/__init__.py") == 0o644
    assert mode("bin/run.sh") == 0o755
    assert mode("bin/group-exec.sh") == 0o755
    assert mode("bin/setuid.sh") == 0o755
    link, target = hostile.GOOD_SYMLINK
    assert (dest / link).is_symlink()
    assert os.readlink(dest / link) == target
    assert (dest / hostile.GOOD_EMPTY_DIR).is_dir()
    assert list((dest / hostile.GOOD_EMPTY_DIR).iterdir()) == []
    for rel in ("", "bin", "good", "data", hostile.GOOD_EMPTY_DIR):
        assert mode(rel) == 0o755, rel
    if suffix != ".zip":
        copy = dest / "setup-copy.py"
        assert copy.read_bytes() == (dest / "setup.py").read_bytes()
        assert copy.stat().st_ino != (dest / "setup.py").stat().st_ino  # a copy, not a link


def test_owner_is_not_taken_from_the_archive(tmp_path: Path) -> None:
    info = tarfile.TarInfo("own-1.0/f.txt")
    info.size, info.uid, info.gid = 1, 4242, 4242
    archive = hostile.write_tar(tmp_path / "own-1.0.tar.gz", [(info, b"x")])
    dest = tmp_path / "own"
    extract_sdist(archive, dest, package="own")
    assert (dest / "f.txt").stat().st_uid == os.getuid()


# --- the planner alone: rules without archives -------------------------------------------


def plan(*members: RawMember, limits: Limits | None = None, size: int = 10**6) -> Planner:
    planner = Planner("pkg", "pkg-1.0.tar.gz", size, limits or Limits())
    for member in members:
        planner.add(member)
    planner.finish()
    return planner


def test_planner_strips_top_and_dot_components() -> None:
    planner = plan(
        RawMember("./pkg-1.0/", "dir"),
        RawMember("./pkg-1.0/a//b.txt", "file", 3),
        RawMember("pkg-1.0/l", "symlink", link="a/b.txt"),
    )
    assert [m.rel for m in planner.members] == ["", "a/b.txt", "l"]


@pytest.mark.parametrize(
    ("members", "culprit", "reason"),
    [
        ([RawMember("p/a\\..\\x", "file")], "p/a\\..\\x", "backslash"),
        ([RawMember("p/l", "symlink", link="/etc/passwd")], "p/l", "absolute path"),
        ([RawMember("p/l", "symlink", link="")], "p/l", "empty target"),
        (
            [RawMember("p/a", "symlink", link="b"), RawMember("p/b", "symlink", link="a")],
            "p/a",
            "symlink loop",
        ),
        ([RawMember("p/d/l", "symlink", link="../../x")], "p/d/l", "leaves"),
        ([RawMember("p/f", "file"), RawMember("p/f/g", "file")], "p/f/g", "is a file"),
        ([RawMember("p", "file")], "p", "top-level entry but not a directory"),
        ([RawMember("p/x", "other")], "p/x", "file type other"),
    ],
)
def test_planner_refusals(members: list[RawMember], culprit: str, reason: str) -> None:
    with pytest.raises(ExtractError) as info:
        plan(*members)
    assert str(info.value).startswith(f"pkg: refusing pkg-1.0.tar.gz: member '{culprit}' ")
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "members",
    [
        [RawMember("p/d/l", "symlink", link="../x")],  # to the root's child
        [RawMember("p/l", "symlink", link=".")],  # to the root itself
        [RawMember("p/d", "symlink", link="sub"), RawMember("p/x", "symlink", link="d/..")],
        [RawMember("p/l", "symlink", link="missing/../also-missing")],
    ],
)
def test_planner_accepts_links_that_stay_inside(members: list[RawMember]) -> None:
    plan(*members)


def test_planner_limits_apply_while_reading() -> None:
    planner = Planner("pkg", "pkg-1.0.tar.gz", 100, Limits(max_total_size=1000))
    planner.add(RawMember("p/a", "file", 600))
    with pytest.raises(ExtractError, match="'p/b' brings the uncompressed size to 1200 bytes"):
        planner.add(RawMember("p/b", "file", 600))


def test_planner_counts_every_member_kind_toward_the_size_limits() -> None:
    limits = Limits(max_total_size=1000)
    planner = Planner("pkg", "pkg-1.0.tar.gz", 10**6, limits)
    planner.add(RawMember("p/a", "file", 400))
    planner.add(RawMember("p/b", "hardlink", link="p/a"))  # a copy: 800 bytes so far
    with pytest.raises(ExtractError, match="'p/c' is a hard link to 'p/b', extracted as a copy"):
        planner.add(RawMember("p/c", "hardlink", link="p/b"))  # a link to a link copies a too
    planner = Planner("pkg", "pkg-1.0.tar.gz", 10**6, limits)
    planner.add(RawMember("p/a", "file", 990))
    with pytest.raises(ExtractError, match="'p/l' brings the uncompressed size to 1001 bytes"):
        planner.add(RawMember("p/l", "symlink", link="a" * 11))  # a link's target counts
    ratio = Planner("pkg", "pkg-1.0.tar.gz", 10, Limits(max_ratio=100))
    ratio.add(RawMember("p/a", "file", 600))
    with pytest.raises(ExtractError, match="over the limit of 100 \\(a decompression bomb"):
        ratio.add(RawMember("p/b", "hardlink", link="p/a"))


def test_planner_depth_and_path_length() -> None:
    limits = Limits(max_depth=3, max_path_length=10)
    plan(RawMember("p/a/b/c", "file"), limits=limits)
    with pytest.raises(ExtractError, match="'p/a/b/c/d' is nested 4 levels deep, over the limit"):
        plan(RawMember("p/a/b/c/d", "file"), limits=limits)
    with pytest.raises(ExtractError, match="'p/a/b/c/d/' is nested 4 levels deep"):
        plan(RawMember("p/a/b/c/d/", "dir"), limits=limits)  # directories too
    with pytest.raises(ExtractError, match="'p/l' is a symlink with an over-long target"):
        plan(RawMember("p/l", "symlink", link="a/" * 2049))
    plan(RawMember("p/abcdefghij", "file"), limits=limits)
    with pytest.raises(ExtractError, match="has a path of 11 bytes, over the limit of 10 bytes"):
        plan(RawMember("p/abcdefghi\u00e9", "file"), limits=limits)  # bytes, not characters


def test_planner_tree_layout_keeps_paths_under_the_same_rules() -> None:
    planner = Planner("pkg", "pkg-1.0-py3-none-any.whl", 10**6, layout="tree")
    for member in (
        RawMember("./", "dir"),
        RawMember("pkg/__init__.py", "file", 3),
        RawMember("pkg-1.0.dist-info/METADATA", "file", 3),
        RawMember("pkg/", "dir"),
        RawMember("pkg/", "dir"),  # a directory listed twice is harmless
    ):
        planner.add(member)
    assert [m.rel for m in planner.finish()] == [
        "",
        "pkg/__init__.py",
        "pkg-1.0.dist-info/METADATA",
        "pkg",
        "pkg",
    ]
    for bad, reason in (
        (RawMember("../x", "file"), "'..'"),
        (RawMember("/x", "file"), "absolute"),
        (RawMember("d/" * 128 + "f", "file"), "levels deep"),
        (RawMember("x", "blockdev"), "block device"),
    ):
        with pytest.raises(ExtractError, match=reason):
            Planner("pkg", "pkg.whl", 10**6, layout="tree").add(bad)


def test_message_names_package_archive_member(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    builders: list[Callable[[Path], Path]] = [hostile.path_traversal, hostile.zip_traversal]
    for build in builders:
        archive = build(archives)
        with pytest.raises(ExtractError) as info:
            extract_sdist(archive, dest, package="evil")
        assert "evil" in str(info.value) and archive.name in str(info.value)


def test_missing_archive(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    with pytest.raises(ExtractError, match=r"evil: cannot read evil-1\.0\.tar\.gz"):
        extract_sdist(archives / "evil-1.0.tar.gz", dest, package="evil")
    assert snapshot(dest.parent) == set()


# --- the in-memory stream and the file give the same result ------------------------------

HOSTILE_TARS: list[tuple[Callable[[Path], Path], str]] = [
    (hostile.path_traversal, "evil-1.0/../../escape.txt"),
    (hostile.absolute_path, "/tmp/abs.txt"),
    (hostile.symlink_escape, "evil-1.0/link"),
    (hostile.symlink_chain_escape, "evil-1.0/x"),
    (hostile.file_under_symlink, "evil-1.0/l/through.txt"),
    (hostile.hardlink_escape, "evil-1.0/h"),
    (hostile.hardlink_missing, "evil-1.0/h"),
    (hostile.device_file, "evil-1.0/null"),
    (hostile.fifo_file, "evil-1.0/pipe"),
    (hostile.duplicate_members, "evil-1.0/./setup.py"),
    (hostile.duplicate_same_size, "evil-1.0/setup.py"),
    (hostile.no_top_dir, "setup.py"),
    (hostile.two_top_dirs, "other-1.0"),
    (hostile.deep_nesting, f"{hostile.TOP}/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d"),
]
"""Every hostile tar of the corpus but the bombs (a bomb is no bomb once uncompressed)."""


def _as_plain_tar(archive: Path) -> Path:
    """The same tar stream without gzip: the extractor reads it from the file, not memory."""
    plain = archive.with_name(archive.name.removesuffix(".gz"))
    plain.write_bytes(gzip.decompress(archive.read_bytes()))
    return plain


@pytest.mark.parametrize(("build", "member"), HOSTILE_TARS)
def test_hostile_tar_is_refused_alike_from_memory_and_from_the_file(
    layout: tuple[Path, Path], build: Callable[[Path], Path], member: str
) -> None:
    archives, dest = layout
    compressed = build(archives)
    assert compressed.name.endswith(".tar.gz")
    messages = []
    for archive in (compressed, _as_plain_tar(compressed)):
        with pytest.raises(ExtractError) as info:
            extract_sdist(archive, dest, package="evil")
        assert not os.path.lexists(dest)
        assert not any(p.name.startswith(".tmp-") for p in dest.parent.iterdir())
        messages.append(str(info.value).replace(archive.name, "ARCHIVE"))
    assert messages[0] == messages[1]
    assert f"member '{member}" in messages[0]


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.bz2", ".tar.xz", ".tar", ".zip"])
def test_stamps_spare_the_tree_hash_a_second_read(tmp_path: Path, suffix: str) -> None:
    dest = tmp_path / "good"
    stamps = extract_sdist(hostile.good_sdist(tmp_path, suffix), dest, package="good")
    files = {
        os.path.relpath(os.path.join(d, f), dest)
        for d, _, names in os.walk(dest)
        for f in names
        if not os.path.islink(os.path.join(d, f))
    }
    assert set(stamps) == files
    seen = dict(stamps)
    # scan_tree re-reads (and re-stamps) a file only when its stamp differs: none does.
    assert hash_entries(scan_tree(dest, stamps=seen)) == tree_hash(dest)
    assert seen == stamps


def test_gzip_oddities_extract_like_plain_tar(tmp_path: Path) -> None:
    good = hostile.good_sdist(tmp_path)
    stream = gzip.decompress(good.read_bytes())
    expected = tree_hash(_extracted(good, tmp_path / "ref"))
    half = len(stream) // 2
    variants = {
        "members": gzip.compress(stream[:half]) + gzip.compress(stream[half:]),
        "zero-padded": good.read_bytes() + bytes(1000),
        "trailing-garbage": good.read_bytes() + b"garbage",
    }
    for name, data in variants.items():
        archive = tmp_path / name / "good-1.0.tar.gz"
        archive.parent.mkdir()
        archive.write_bytes(data)
        assert tree_hash(_extracted(archive, tmp_path / name / "out")) == expected, name


def test_truncated_gzip_is_refused_and_leaves_nothing(layout: tuple[Path, Path]) -> None:
    archives, dest = layout
    good = hostile.good_sdist(archives)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExtractError, match=r"good-1\.0\.tar\.gz"):
        extract_sdist(good, dest, package="good")
    assert snapshot(dest.parent) == set()


def _extracted(archive: Path, dest: Path) -> Path:
    extract_sdist(archive, dest, package="good")
    return dest


def test_a_store_entry_is_extracted_under_the_name_it_is_given(
    layout: tuple[Path, Path],
) -> None:
    # A content-addressed store names files by digest: the caller says what they are.
    archives, dest = layout
    entry = archives / "0123abcd"
    entry.write_bytes(hostile.path_traversal(archives).read_bytes())
    with pytest.raises(ExtractError) as info:
        extract_sdist(entry, dest, package="evil", name="evil-1.0.tar.gz")
    assert str(info.value).startswith("evil: refusing evil-1.0.tar.gz: member ")
    entry.write_bytes(hostile.good_sdist(archives, ".zip").read_bytes())
    extract_sdist(entry, dest, package="good", name="good-1.0.zip")
    assert (dest / "setup.py").is_file()
    with pytest.raises(ExtractError, match="refusing 0123abcd: not a supported archive"):
        extract_sdist(entry, dest.with_name("other"), package="good")


# --- worker processes ----------------------------------------------------------------------


def test_pool_refuses_hostile_tars_exactly_like_the_calling_thread(
    layout: tuple[Path, Path],
) -> None:
    archives, dest = layout
    with ExtractorPool(2, min_size=0) as pool:
        for build, _ in HOSTILE_TARS:
            archive = build(archives)
            messages = []
            for extract in (extract_sdist, pool.extract):
                with pytest.raises(ExtractError) as info:
                    extract(archive, dest, package="evil")
                assert type(info.value) is ExtractError
                assert not os.path.lexists(dest)
                assert not any(p.name.startswith(".tmp-") for p in dest.parent.iterdir())
                messages.append(str(info.value))
            assert messages[0] == messages[1]
        assert pool.started >= 1


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.bz2", ".zip"])
def test_pool_extracts_the_same_tree_with_stamps(tmp_path: Path, suffix: str) -> None:
    archive = hostile.good_sdist(tmp_path, suffix)
    here = extract_sdist(archive, tmp_path / "here", package="good")
    with ExtractorPool(1, min_size=0) as pool:
        there = pool.extract(archive, tmp_path / "there", package="good")
        assert pool.started == 1
    assert tree_hash(tmp_path / "there") == tree_hash(tmp_path / "here")
    assert {rel: digest for rel, (_, digest) in there.items()} == {
        rel: digest for rel, (_, digest) in here.items()
    }
    seen = dict(there)
    scan_tree(tmp_path / "there", stamps=seen)
    assert seen == there


def test_pool_extracts_small_archives_in_the_calling_thread(tmp_path: Path) -> None:
    archive = hostile.good_sdist(tmp_path)
    with ExtractorPool(2) as pool:
        pool.extract(archive, tmp_path / "out", package="good")
        assert pool.started == 0
    assert (tmp_path / "out" / "setup.py").is_file()


def test_pool_survives_a_lost_worker_and_stops_its_workers(tmp_path: Path) -> None:
    archive = hostile.good_sdist(tmp_path)
    pool = ExtractorPool(1, min_size=0)
    pool.extract(archive, tmp_path / "first", package="good")
    (worker,) = pool._workers
    worker.process.kill()
    worker.process.wait()
    pool.extract(archive, tmp_path / "second", package="good")  # done in-thread instead
    assert tree_hash(tmp_path / "second") == tree_hash(tmp_path / "first")
    assert pool._workers == []
    pool.close()
    again = ExtractorPool(2, min_size=0)
    with ThreadPoolExecutor(4) as threads:
        list(
            threads.map(
                lambda i: again.extract(archive, tmp_path / f"t{i}", package="good"), range(6)
            )
        )
    processes = [w.process for w in again._workers]
    assert 1 <= len(processes) <= 2
    again.close()
    assert all(p.poll() is not None for p in processes)
    hashes = {tree_hash(tmp_path / f"t{i}") for i in range(6)}
    assert hashes == {tree_hash(tmp_path / "first")}


def test_prestarted_workers_are_taken_and_the_spares_stopped_on_close(tmp_path: Path) -> None:
    from monorepo._core.speed import workerproc

    archive = hostile.good_sdist(tmp_path)
    pool = ExtractorPool(2, min_size=0)
    pool.prestart()
    spares = list(workerproc._spares[("monorepo.extract.speed.pool", "_serve")])
    assert len(spares) == 2 and all(p.poll() is None for p in spares)
    pool.extract(archive, tmp_path / "out", package="good")
    (worker,) = pool._workers
    assert worker.process in spares  # no interpreter started on demand
    pool.close()
    for process in spares:  # the one taken and the one left over
        assert process.wait(timeout=10) is not None
    assert tree_hash(tmp_path / "out") == tree_hash(_extracted(archive, tmp_path / "ref"))


def test_zlib_and_isal_inflate_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """_gunzip takes ISA-L where installed and zlib elsewhere: both give the same answers,
    for a good archive, several gzip members, and a truncated or damaged stream."""
    import zlib

    from monorepo.extract import compression

    isal_zlib = pytest.importorskip("isal.isal_zlib")
    stream = gzip.decompress(hostile.good_sdist(tmp_path).read_bytes())
    half = len(stream) // 2
    whole = gzip.compress(stream)
    cases = {
        "whole": whole,
        "members": gzip.compress(stream[:half]) + gzip.compress(stream[half:]),
        "truncated": whole[: len(whole) // 2],
        "damaged": whole[:20] + bytes(len(whole) - 20),
    }
    results = {}
    for library, errors in ((zlib, (zlib.error,)), (isal_zlib, (zlib.error, isal_zlib.error))):
        monkeypatch.setattr(compression, "_inflate_library", lambda lib=library, e=errors: (lib, e))
        for name, data in cases.items():
            results[library.__name__, name] = compression.gunzip(data, 1 << 30)
    for name in cases:
        assert results["zlib", name] == results["isal.isal_zlib", name], name
    assert results["zlib", "whole"] == results["zlib", "members"] == stream
    assert results["zlib", "truncated"] is None and results["zlib", "damaged"] is None


# --- one extractor: reading an archive applies the rules of extracting it ------------------


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.bz2", ".zip"])
def test_read_archive_returns_the_members_asked_for_and_writes_nothing(
    tmp_path: Path, suffix: str
) -> None:
    archive = hostile.good_sdist(tmp_path, suffix)
    before = snapshot(tmp_path)
    listing = read_archive(
        archive.read_bytes(), package="good", name=archive.name, want=("setup.py", "nothere")
    )
    assert snapshot(tmp_path) == before
    assert listing.top == hostile.GOOD_TOP
    assert listing.contents == {"setup.py": hostile.GOOD_FILES["setup.py"][0]}
    rels = {m.rel for m in listing.members}
    assert {"setup.py", "good/__init__.py", hostile.GOOD_SYMLINK[0]} <= rels
    # From the file, and with the members chosen from the checked plan.
    chosen = read_archive(archive, package="good", want=lambda plan: [m.rel for m in plan][-2:])
    assert set(chosen.contents) <= rels


HOSTILE_ARCHIVES: list[Callable[[Path], Path]] = [
    *(build for build, _ in HOSTILE_TARS),
    hostile.decompression_bomb,
    hostile.hardlink_bomb,
    hostile.zip_traversal,
    hostile.zip_symlink_escape,
    functools.partial(hostile.deep_nesting, suffix=".zip"),
]


@pytest.mark.parametrize("build", HOSTILE_ARCHIVES)
def test_read_archive_refuses_what_extraction_refuses_with_the_same_message(
    layout: tuple[Path, Path], build: Callable[[Path], Path]
) -> None:
    archives, dest = layout
    archive = build(archives)
    with pytest.raises(ExtractError) as extracting:
        extract_sdist(archive, dest, package="evil")
    with pytest.raises(ExtractError) as reading:
        read_archive(archive.read_bytes(), package="evil", name=archive.name, want=("setup.py",))
    assert str(reading.value) == str(extracting.value)


def _calls(path: Path) -> set[str]:
    """Dotted names of everything *path* calls (``tarfile.open``, ``zf.extractall``)."""

    def dotted(node: ast.expr) -> str:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return f"{dotted(node.value)}.{node.attr}"
        return "?"

    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {dotted(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}


def test_every_archive_is_opened_through_the_one_extractor() -> None:
    """One extraction code path: nothing unpacks an archive but monorepo.extract, and the
    few modules that open one hand it to the extractor's rules (DESIGN.md section 9)."""
    package = Path(__file__).resolve().parent.parent / "monorepo"
    opening = {"tarfile.open", "zipfile.ZipFile", "tarfile.TarFile"}
    decompressing = {"gzip.decompress", "lzma.decompress", "bz2.decompress", "gzip.open"}
    openers: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        text = path.read_text(encoding="utf-8")
        calls = _calls(path)
        assert "_safe_extract" not in text, name
        assert not {c for c in calls if c.endswith((".extractall", ".extract"))} - {
            "extractor.extract"  # ExtractorPool.extract: extract_sdist in a worker
        }, name
        if not name.startswith("extract/"):
            assert not calls & decompressing, name
            if calls & opening:
                openers[name] = calls & opening
    # lazywheel hands the open zip to archive.read_zip; sysroot plans a .deb's data.tar
    # with the rules' Planner; elfcheck reads the ELF headers of wheels the build just made;
    # remote packs a tree for a worker (which unpacks it with extract_archive) and
    # reproducible writes wheels in one normal form (reading them with read_archive).
    assert set(openers) == {
        "index/lazywheel.py",
        "sysroot/deb.py",
        "building/elfcheck.py",
        "building/remote.py",
        "building/reproducible.py",
    }, openers
    assert "extract_archive(" in (package / "building/remote.py").read_text(encoding="utf-8")
    assert "read_archive(" in (package / "building/reproducible.py").read_text(encoding="utf-8")
    assert "read_zip(" in (package / "index/lazywheel.py").read_text(encoding="utf-8")
    sysroot = (package / "sysroot/deb.py").read_text(encoding="utf-8")
    assert "Planner(" in sysroot and "compression.decompress(" in sysroot
    metadata = (package / "index/metadata.py").read_text(encoding="utf-8")
    backend = (package / "index/backend.py").read_text(encoding="utf-8")
    assert "archive.read_archive(" in metadata and "archive.extract_sdist(" in backend


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz"])
def test_decompress_stops_a_bomb_one_byte_past_what_a_tar_may_hold(suffix: str) -> None:
    import bz2
    import lzma

    from monorepo.extract.compression import decompress

    compressors: dict[str, Callable[[bytes], bytes]] = {
        ".gz": gzip.compress,
        ".bz2": bz2.compress,
        ".xz": lzma.compress,
    }
    compress = compressors[suffix]
    small = bytes(1000)
    assert decompress(f"data.tar{suffix}", compress(small), package="p") == small
    limits = Limits(max_total_size=1024**2)  # room for 1 MiB of members, 16 MiB of headers
    bomb = compress(bytes(40 * 1024**2))
    with pytest.raises(ExtractError, match=f"refusing data.tar{suffix}: it decompresses to more"):
        decompress(f"data.tar{suffix}", bomb, package="p", limits=limits)
    with pytest.raises(ExtractError, match="cannot be decompressed"):
        decompress(f"data.tar{suffix}", b"garbage", package="p")


def test_a_wheel_extracts_in_the_tree_layout_under_the_same_rules(tmp_path: Path) -> None:
    """What a cross build's smoke test does with each wheel it imports on the target."""
    from fixtures.builder import Release, wheel_bytes
    from monorepo.extract.archive import extract_archive

    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    wheel.write_bytes(wheel_bytes(Release("demo", "1.0")))
    written = extract_archive(wheel, tmp_path / "site", package="demo", layout="tree")
    assert "demo/__init__.py" in written and "demo-1.0.dist-info/METADATA" in written
    assert (tmp_path / "site" / "demo" / "__init__.py").is_file()
    bomb = hostile.metadata_bomb_wheel(tmp_path)
    with pytest.raises(ExtractError, match="a decompression bomb"):
        extract_archive(bomb, tmp_path / "bomb", package="evil", layout="tree")
    assert not (tmp_path / "bomb").exists()
