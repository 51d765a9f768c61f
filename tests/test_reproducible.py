"""Reproducible wheels: the build environment and the normal form a wheel is rewritten in."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monorepo.building.reproducible import (
    DEFAULT_EPOCH,
    add_prefix_maps,
    normalise_wheel,
    read_wheel,
    reproducible_environ,
    source_date_epoch,
    wheel_bytes,
    wheel_record_text,
)
from monorepo.errors import BuildError, MonorepoError

DIST = "demo-1.0.dist-info"


def write_wheel(
    path: Path,
    files: dict[str, bytes],
    *,
    when: tuple[int, int, int, int, int, int] = (2024, 5, 6, 7, 8, 9),
    mode: int = 0o664,
    record: str | None = None,
    reverse: bool = False,
    mkdir: bool = False,
) -> Path:
    """A wheel as a sloppy backend writes it: a time of day, group-writable modes."""
    if mkdir:
        path.parent.mkdir(parents=True)
    members = dict(files)
    members[f"{DIST}/RECORD"] = (
        record if record is not None else wheel_record_text(files, DIST)
    ).encode()
    names = sorted(members, reverse=reverse)
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            info = zipfile.ZipInfo(name, date_time=when)
            info.create_system = 3
            info.external_attr = (0o100000 | mode) << 16
            zf.writestr(info, members[name])
    return path


FILES = {
    "demo/__init__.py": b"x = 1\n",
    "demo/tool.sh": b"#!/bin/sh\n",
    f"{DIST}/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
    f"{DIST}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}


def test_source_date_epoch() -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert source_date_epoch(when) == int(when.timestamp())
    assert source_date_epoch(when.replace(tzinfo=None)) == int(when.timestamp())
    assert source_date_epoch(None) == DEFAULT_EPOCH
    assert source_date_epoch(datetime(1970, 1, 2, tzinfo=UTC)) == DEFAULT_EPOCH
    env = reproducible_environ(1234)
    assert env["SOURCE_DATE_EPOCH"] == "1234" and env["LC_ALL"] == "C" and env["TZ"] == "UTC"


def test_prefix_maps_are_appended_longest_first() -> None:
    env = {"CFLAGS": "-O2"}
    add_prefix_maps(env, {"/a": "/x", "/a/b c": "/y", "": "/ignored"})
    assert env["CFLAGS"] == "-O2 '-ffile-prefix-map=/a/b c=/y' -ffile-prefix-map=/a=/x"
    assert env["CXXFLAGS"] == "'-ffile-prefix-map=/a/b c=/y' -ffile-prefix-map=/a=/x"
    empty: dict[str, str] = {}
    add_prefix_maps(empty, {})
    assert empty == {}


def test_two_sloppy_wheels_normalise_to_the_same_bytes(tmp_path: Path) -> None:
    one = write_wheel(tmp_path / "a" / "demo-1.0-py3-none-any.whl", FILES, mkdir=True)
    two = write_wheel(
        tmp_path / "b" / "demo-1.0-py3-none-any.whl",
        FILES,
        when=(2025, 1, 1, 0, 0, 0),
        mode=0o600,
        reverse=True,
        mkdir=True,
    )
    assert one.read_bytes() != two.read_bytes()
    first = normalise_wheel(one, 1700000000, package="demo")
    second = normalise_wheel(two, 1700000000, package="demo")
    assert first.changed and second.changed
    assert "timestamps set to SOURCE_DATE_EPOCH" in first.notes
    assert "entries reordered" in second.notes and "permissions normalised" in second.notes
    assert one.read_bytes() == two.read_bytes()
    # Normal form is a fixed point.
    assert not normalise_wheel(one, 1700000000, package="demo").changed
    with zipfile.ZipFile(one) as zf:
        names = zf.namelist()
        assert names[-1] == f"{DIST}/RECORD"
        assert names[:2] == ["demo/__init__.py", "demo/tool.sh"]
        assert {i.date_time for i in zf.infolist()} == {(2023, 11, 14, 22, 13, 20)}
        assert {(i.external_attr >> 16) & 0o777 for i in zf.infolist()} == {0o644}
        rows = list(csv.reader(io.StringIO(zf.read(f"{DIST}/RECORD").decode())))
    assert [r[0] for r in rows] == names
    assert rows[-1] == [f"{DIST}/RECORD", "", ""]


def test_executable_bit_is_kept_and_extra_files_get_recorded(tmp_path: Path) -> None:
    wheel = write_wheel(tmp_path / "demo-1.0-py3-none-any.whl", FILES, mode=0o775)
    result = normalise_wheel(
        wheel, DEFAULT_EPOCH, package="demo", extra={"sboms/demo.cdx.json": b"{}"}
    )
    assert any(n.startswith("added ") for n in result.notes)
    contents = read_wheel(wheel, package="demo")
    sbom = f"{DIST}/sboms/demo.cdx.json"
    assert contents.executable == frozenset(contents.files) - {sbom}
    record = contents.files[f"{DIST}/RECORD"].decode()
    assert f"{DIST}/sboms/demo.cdx.json,sha256=" in record
    assert record == wheel_record_text(
        {k: v for k, v in contents.files.items() if not k.endswith("RECORD")}, DIST
    )


def test_broken_record_and_links_are_refused(tmp_path: Path) -> None:
    bad = write_wheel(
        tmp_path / "demo-1.0-py3-none-any.whl",
        FILES,
        record=wheel_record_text({**FILES, "demo/__init__.py": b"other\n"}, DIST),
    )
    with pytest.raises(BuildError, match="another sha256"):
        normalise_wheel(bad, DEFAULT_EPOCH, package="demo")
    missing = write_wheel(
        tmp_path / "m" / "demo-1.0-py3-none-any.whl",
        FILES,
        record=wheel_record_text({**FILES, "demo/gone.py": b""}, DIST),
        mkdir=True,
    )
    with pytest.raises(BuildError, match="does not hold"):
        normalise_wheel(missing, DEFAULT_EPOCH, package="demo")
    link = tmp_path / "l" / "demo-1.0-py3-none-any.whl"
    link.parent.mkdir()
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("demo/link")
        info.create_system = 3
        info.external_attr = (0o120777) << 16
        zf.writestr(info, "__init__.py")
        zf.writestr(f"{DIST}/RECORD", "")
    with pytest.raises(MonorepoError, match="link"):
        normalise_wheel(link, DEFAULT_EPOCH, package="demo")


def test_streamed_normal_form_is_the_in_memory_one(tmp_path: Path) -> None:
    wheel = write_wheel(tmp_path / "demo-1.0-py3-none-any.whl", FILES, mode=0o755)
    expected = wheel_bytes(read_wheel(wheel, package="demo"), 1234567890, {"sboms/x.json": b"{}"})
    normalise_wheel(wheel, 1234567890, package="demo", extra={"sboms/x.json": b"{}"})
    assert wheel.read_bytes() == expected


def test_a_member_larger_than_memory_reads_is_streamed(tmp_path: Path) -> None:
    """A native library of more than 64 MiB (what the extractor reads into memory)."""
    big = os.urandom(65 * 1024 * 1024)
    wheel = write_wheel(
        tmp_path / "demo-1.0-py3-none-any.whl", {**FILES, "demo/libbig.so": big}, mode=0o755
    )
    assert normalise_wheel(wheel, DEFAULT_EPOCH, package="demo").changed
    with zipfile.ZipFile(wheel) as zf:
        record = zf.read(f"{DIST}/RECORD").decode()
        assert zf.getinfo("demo/libbig.so").file_size == len(big)
    digest = base64.urlsafe_b64encode(hashlib.sha256(big).digest()).rstrip(b"=").decode()
    assert f"demo/libbig.so,sha256={digest},{len(big)}" in record
