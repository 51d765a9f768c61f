"""tarscan against tarfile: the same members wherever tarscan reads an archive, and
``None`` (tarfile's turn) for everything outside its subset, on real tar streams."""

from __future__ import annotations

import gzip
import io
import os
import random
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from fixtures import hostile
from monorepo.extract.archive import extract_sdist
from monorepo.extract.speed import tarscan
from monorepo.sources.treehash import tree_hash

FIELDS = ("name", "type", "mode", "size", "mtime", "linkname", "offset", "offset_data")
TOP = "pkg-1.0"
LONG = f"{TOP}/" + "/".join(["a-rather-long-directory-name"] * 5) + "/module.py"


def _tar(
    members: list[tuple[tarfile.TarInfo, bytes | None]],
    fmt: int = tarfile.PAX_FORMAT,
    **options: object,
) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt, **options) as tf:  # type: ignore[call-overload]
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1_700_000_000
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _file(
    name: str, data: bytes, *, mode: int = 0o644, mtime: float = 1_700_000_000
) -> tuple[tarfile.TarInfo, bytes]:
    return _member(name, size=len(data), mode=mode, mtime=mtime), data


def _ordinary(
    *, long_names: bool = True, pax_only: bool = False
) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """What sdists hold: directories, files of every block boundary, links, odd times."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (_member(TOP, tarfile.DIRTYPE), None),
        (_member(f"{TOP}/src/", tarfile.DIRTYPE), None),
        _file(f"{TOP}/empty.txt", b""),
        _file(f"{TOP}/one-block.txt", b"x" * 512),
        _file(f"{TOP}/odd.txt", os.urandom(1000)),
        _file(f"{TOP}/run.sh", b"#!/bin/sh\n", mode=0o755),
        _file(f"{TOP}/src/big.bin", os.urandom(70_000)),
        (_member(f"{TOP}/link", tarfile.SYMTYPE, linkname="src/big.bin"), None),
        (_member(f"{TOP}/hard", tarfile.LNKTYPE, linkname=f"{TOP}/odd.txt"), None),
    ]
    if long_names:
        members.append(_file(LONG, b"print('deep')\n"))
    if pax_only:
        members += [
            (_member(f"{TOP}/far", tarfile.SYMTYPE, linkname="x/" * 60 + "y"), None),
            _file(f"{TOP}/fraction.py", b"t", mtime=1_700_000_000.25),
            _file(f"{TOP}/ünïcode-ñame.py", b"u"),
        ]
    return members


def _agree(stream: bytes) -> list[tarfile.TarInfo]:
    """tarscan's members, checked field by field against tarfile's."""
    fast = tarscan.scan(stream)
    assert fast is not None
    with tarfile.open(fileobj=io.BytesIO(stream), mode="r:") as tf:
        slow = tf.getmembers()
    assert [[getattr(m, f) for f in FIELDS] for m in fast] == [
        [getattr(m, f) for f in FIELDS] for m in slow
    ]
    return fast


@pytest.mark.parametrize(
    ("fmt", "long_names", "pax_only"),
    [
        (tarfile.PAX_FORMAT, True, True),
        (tarfile.USTAR_FORMAT, True, False),  # long names split into ustar's prefix
        (tarfile.GNU_FORMAT, False, False),  # GNU long names are tarfile's (below)
    ],
    ids=["pax", "ustar", "gnu"],
)
def test_reads_what_tarfile_reads(fmt: int, long_names: bool, pax_only: bool) -> None:
    members = _agree(_tar(_ordinary(long_names=long_names, pax_only=pax_only), fmt))
    names = [m.name for m in members]
    assert f"{TOP}/src" in names  # a directory's trailing slash is dropped, as tarfile does
    if long_names:
        assert LONG in names
    if pax_only:
        assert {m.name: m.mtime for m in members}[f"{TOP}/fraction.py"] == 1_700_000_000.25


def test_reads_without_an_end_of_archive_block() -> None:
    stream = _tar(_ordinary())
    end = len(stream)
    while stream[end - 512 : end] == bytes(512):
        end -= 512
    assert end < len(stream)
    assert len(_agree(stream[:end])) == len(_ordinary())


def test_reads_every_hostile_tar_alike(tmp_path: Path) -> None:
    """The hostile corpus is tarfile-written pax: tarscan reads it, and reads it right
    (that the extractor then refuses it the same from memory as from the file is
    tests/test_extract.py's business)."""
    from tests.test_extract import HOSTILE_TARS

    for i, (build, _) in enumerate(HOSTILE_TARS):
        directory = tmp_path / str(i)
        directory.mkdir()
        stream = gzip.decompress(build(directory).read_bytes())
        if build in (hostile.device_file, hostile.fifo_file):
            assert tarscan.scan(stream) is None  # member types left to tarfile
        else:
            _agree(stream)
    # The hard-link bomb's links are read by tarscan too (and counted by the planner).
    _agree(gzip.decompress(hostile.hardlink_bomb(tmp_path, size=4096, links=50).read_bytes()))


def _global_header() -> bytes:
    return _tar(_ordinary(long_names=False), pax_headers={"comment": "global"})


def _gnu_long_name() -> bytes:
    return _tar([(_member(TOP, tarfile.DIRTYPE), None), _file(LONG, b"x")], tarfile.GNU_FORMAT)


def _base256_uid() -> bytes:
    return _tar([(_member(TOP, tarfile.DIRTYPE, uid=8**8), None)], tarfile.GNU_FORMAT)


def _unknown_pax_key() -> bytes:
    info = _member(f"{TOP}/attr.txt", size=1)
    info.pax_headers = {"SCHILY.xattr.user.note": "x"}
    return _tar([(_member(TOP, tarfile.DIRTYPE), None), (info, b"a")])


def _latin1_name() -> bytes:
    members = [(_member(TOP, tarfile.DIRTYPE), None), _file(f"{TOP}/caf\xe9.txt", b"c")]
    return _tar(members, tarfile.USTAR_FORMAT, encoding="latin-1")


def _bad_checksum() -> bytes:
    stream = bytearray(_tar(_ordinary(long_names=False)))
    stream[600] ^= 0x01  # a byte of the second header's name
    return bytes(stream)


def _truncated() -> bytes:
    return _tar(_ordinary(long_names=False))[:3000]


def _only_zeros() -> bytes:
    return bytes(10240)


def _v7_directory() -> bytes:
    """A directory written as a regular file whose name ends in a slash (old tars)."""
    stream = bytearray(_tar([(_member(f"{TOP}/", tarfile.REGTYPE), b"")], tarfile.USTAR_FORMAT))
    stream[156] = 0  # AREGTYPE
    checksum = sum(stream[:148]) + sum(stream[156:512]) + 8 * 32
    stream[148:156] = b"%06o\0 " % checksum
    return bytes(stream)


UNSUPPORTED: dict[str, Callable[[], bytes]] = {
    "global pax header": _global_header,
    "GNU long name": _gnu_long_name,
    "base-256 number": _base256_uid,
    "unknown pax key": _unknown_pax_key,
    "name not UTF-8": _latin1_name,
    "bad checksum": _bad_checksum,
    "truncated": _truncated,
    "no member": _only_zeros,
    "v7 directory": _v7_directory,
}


@pytest.mark.parametrize("build", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_leaves_everything_else_to_tarfile(build: Callable[[], bytes]) -> None:
    assert tarscan.scan(build()) is None


@pytest.mark.parametrize(
    "build",
    [_global_header, _gnu_long_name, _unknown_pax_key, _v7_directory],
    ids=["global pax header", "GNU long name", "unknown pax key", "v7 directory"],
)
def test_the_extractor_reads_the_rest_with_tarfile(
    tmp_path: Path, build: Callable[[], bytes]
) -> None:
    """An archive tarscan declines is still extracted, the same from memory as from the file."""
    stream = build()
    gz = tmp_path / "pkg-1.0.tar.gz"
    gz.write_bytes(gzip.compress(stream))
    plain = tmp_path / "pkg-1.0.tar"
    plain.write_bytes(stream)
    assert tree_hash(_extract(gz, tmp_path / "a")) == tree_hash(_extract(plain, tmp_path / "b"))


def _extract(archive: Path, dest: Path) -> Path:
    extract_sdist(archive, dest, package="pkg")
    return dest


def test_the_extractor_uses_tarscan_for_an_ordinary_sdist(tmp_path: Path) -> None:
    """The same tree from the gzip (tarscan) as from the plain tar (tarfile, from the file)."""
    stream = _tar(_ordinary(pax_only=True))
    assert tarscan.scan(stream) is not None
    gz = tmp_path / "pkg-1.0.tar.gz"
    gz.write_bytes(gzip.compress(stream))
    plain = tmp_path / "pkg-1.0.tar"
    plain.write_bytes(stream)
    fast, slow = _extract(gz, tmp_path / "a"), _extract(plain, tmp_path / "b")
    assert tree_hash(fast) == tree_hash(slow)
    assert (fast / LONG.removeprefix(f"{TOP}/")).read_bytes() == b"print('deep')\n"
    assert os.readlink(fast / "link") == "src/big.bin"
    assert os.stat(fast / "fraction.py").st_mtime == 1_700_000_000.25


def test_byte_sum_is_exact() -> None:
    rng = random.Random(7)
    blocks = [bytes(512), bytes([255]) * 512, bytes([128]) * 512]
    blocks += [bytes(rng.randrange(256) for _ in range(512)) for _ in range(300)]
    blocks += [bytes(rng.choice((0, 48, 55, 255)) for _ in range(512)) for _ in range(300)]
    for block in blocks:
        assert tarscan._byte_sum(block) == sum(block)


def _tarfile_members(stream: bytes) -> list[list[object]] | None:
    try:
        with tarfile.open(fileobj=io.BytesIO(stream), mode="r:") as tf:
            return [[getattr(m, f) for f in FIELDS] for m in tf.getmembers()]
    except tarfile.TarError:
        return None


def test_damaged_streams_are_never_misread() -> None:
    """Cut short anywhere or with any byte changed, a stream is either declined or read
    exactly as tarfile reads it; tarscan itself never raises."""
    stream = _tar(_ordinary(pax_only=True))
    rng = random.Random(11)
    variants = [stream[:cut] for cut in range(0, len(stream), 37)]
    for _ in range(400):
        damaged = bytearray(stream[:4096])
        damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        variants.append(bytes(damaged))
    read = 0
    for variant in variants:
        fast = tarscan.scan(variant)
        if fast is not None:
            read += 1
            assert [[getattr(m, f) for f in FIELDS] for m in fast] == _tarfile_members(variant)
    assert read > 0  # some damage (in file data, say) leaves the headers readable
