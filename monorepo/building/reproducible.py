"""Reproducible wheels: the environment a build runs in, and the wheel rewritten in one form.

A wheel is reproducible when the same inputs (:mod:`monorepo.building.inputkey`) give
the same bytes, on another day and in another directory.  Three things usually break
that, and each has its remedy here:

* **the time**: backends stamp zip entries and generated files with "now"; every hook
  runs with ``SOURCE_DATE_EPOCH`` set to the locked sdist's upload time (the
  reproducible-builds.org convention setuptools, flit, hatchling and gcc honour), and
  the wheel's entries are restamped with it;
* **the path**: C compilers write the build directory into debug information and
  ``__FILE__``; ``-ffile-prefix-map`` maps the scratch source tree, the build
  environment and the sysroot to fixed names (gcc 8+, clang 10+);
* **the machine's habits**: locale, time zone, hash seed and umask are fixed, and zip
  entries are written in one order with fixed permissions, whatever the backend did.

What a backend varies beyond that (a build time it writes into a file, a random
name) is not hidden: ``monorepo verify --rebuild`` builds again elsewhere and names
the files that differ.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shlex
import time
import zipfile
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from monorepo.errors import BuildError
from monorepo.extract.archive import read_archive
from monorepo.extract.rules import PlannedMember

__all__ = [
    "DEFAULT_EPOCH",
    "UMASK",
    "WheelContents",
    "add_prefix_maps",
    "normalise_wheel",
    "read_wheel",
    "reproducible_environ",
    "source_date_epoch",
    "wheel_bytes",
    "wheel_record_text",
]

DEFAULT_EPOCH = 315532800
"""1980-01-01 UTC, the earliest time a zip entry can hold: the epoch of a source with no
upload time (a git commit, a local archive)."""

UMASK = 0o022
"""The umask every hook runs with, so that files a backend creates get the same modes."""

_ZIP_MIN = 315532800  # 1980-01-01
_ZIP_MAX = 4354819199  # 2107-12-31 23:59:59


def source_date_epoch(upload_time: datetime | None) -> int:
    """``SOURCE_DATE_EPOCH`` for a source uploaded at *upload_time* (naive means UTC);
    :data:`DEFAULT_EPOCH` when the lock has none."""
    if upload_time is None:
        return DEFAULT_EPOCH
    if upload_time.tzinfo is None:
        upload_time = upload_time.replace(tzinfo=UTC)
    return max(DEFAULT_EPOCH, int(upload_time.timestamp()))


def reproducible_environ(epoch: int) -> dict[str, str]:
    """The variables every hook gets: the time, the locale, the time zone, the hash seed."""
    return {
        "SOURCE_DATE_EPOCH": str(epoch),
        "LC_ALL": "C",
        "LANG": "C",
        "TZ": "UTC",
        "PYTHONHASHSEED": "0",
    }


def add_prefix_maps(env: MutableMapping[str, str], maps: Mapping[str, str]) -> None:
    """Append ``-ffile-prefix-map=OLD=NEW`` for each of *maps* to ``CFLAGS`` and
    ``CXXFLAGS`` in *env*, longest path first (the compiler uses the first match).
    An empty *OLD* is skipped; a path with blanks is quoted as shells and distutils
    split it."""
    flags = [
        shlex.quote(f"-ffile-prefix-map={old}={new}")
        for old, new in sorted(maps.items(), key=lambda kv: (-len(kv[0]), kv[0]))
        if old
    ]
    if not flags:
        return
    for var in ("CFLAGS", "CXXFLAGS"):
        env[var] = " ".join([env[var], *flags] if env.get(var) else flags)


# ------------------------------------------------------------------------- wheels


@dataclass(frozen=True)
class WheelContents:
    """A wheel's files (its directories dropped) as the extractor read them."""

    files: dict[str, bytes]
    executable: frozenset[str]
    order: tuple[str, ...]
    """The member names in the order the archive holds them."""

    @property
    def dist_info(self) -> str:
        """The ``.dist-info`` directory: the one holding RECORD (there is exactly one)."""
        found = sorted(
            {
                str(PurePosixPath(p).parent)
                for p in self.files
                if PurePosixPath(p).name == "RECORD"
                and PurePosixPath(p).parent.name.endswith(".dist-info")
                and len(PurePosixPath(p).parts) == 2
            }
        )
        if len(found) != 1:
            raise BuildError(
                f"a wheel must have one .dist-info directory with a RECORD; this one has"
                f" {len(found)} ({', '.join(found) or 'none'})"
            )
        return found[0]


def read_wheel(wheel: Path | bytes, *, package: str, name: str | None = None) -> WheelContents:
    """Every file of *wheel*, through the one extractor and its limits: a wheel from an
    index is as untrusted as an sdist.  Links in a wheel are refused."""
    label = name or (wheel.name if isinstance(wheel, Path) else "wheel")

    def want(plan: Sequence[PlannedMember]) -> list[str]:
        return [m.rel for m in plan if m.kind == "file"]

    listing = read_archive(
        wheel,
        package=package,
        name=label,
        want=want,
        layout="tree",
        advice="a wheel must hold plain files only; rebuild it from its sdist",
    )
    for m in listing.members:
        if m.kind in ("symlink", "hardlink"):
            raise BuildError(
                f"{label} holds a link {m.rel!r}; wheels hold plain files (installers do not"
                " make links), so it cannot be normalised"
            )
    files = {m.rel: listing.contents[m.rel] for m in listing.members if m.kind == "file"}
    executable = frozenset(m.rel for m in listing.members if m.kind == "file" and m.executable)
    order = tuple(m.rel for m in listing.members if m.kind == "file")
    return WheelContents(files, executable, order)


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _ordered(paths: list[str], dist_info: str) -> list[str]:
    """Sorted, the ``.dist-info`` files last and RECORD the very last, as the wheel
    specification recommends (an installer may stream a wheel and read metadata last)."""
    record = f"{dist_info}/RECORD"

    def rank(p: str) -> tuple[int, str]:
        if p == record:
            return (2, p)
        return (1 if p.startswith(dist_info + "/") else 0, p)

    return sorted(paths, key=rank)


def wheel_record_text(files: Mapping[str, bytes], dist_info: str) -> str:
    """The RECORD of *files*: a sha256 and size per file, in the wheel's order; RECORD
    itself and its signatures without a hash, as the specification says."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    record = f"{dist_info}/RECORD"
    unhashed = {record, f"{record}.jws", f"{record}.p7s"}
    for path in _ordered([*files, record] if record not in files else list(files), dist_info):
        if path in unhashed:
            writer.writerow([path, "", ""])
        else:
            writer.writerow([path, _record_hash(files[path]), len(files[path])])
    return out.getvalue()


def _zip_time(epoch: int) -> tuple[int, int, int, int, int, int]:
    t = time.gmtime(min(max(epoch, _ZIP_MIN), _ZIP_MAX))
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


def _zip_info(
    path: str, stamp: tuple[int, int, int, int, int, int], executable: bool
) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(path, date_time=stamp)
    info.compress_type = zipfile.ZIP_DEFLATED  # at zlib's default level, on every path
    info.create_system = 3  # Unix, so that the mode below is read
    info.external_attr = (0o100000 | (0o755 if executable else 0o644)) << 16
    return info


def wheel_bytes(contents: WheelContents, epoch: int, extra: Mapping[str, bytes] = {}) -> bytes:
    """The wheel of *contents* (plus *extra* files, paths relative to its ``.dist-info``
    directory) in normal form: entries sorted (``.dist-info`` last, RECORD last of all),
    every time *epoch*, modes 0644 or 0755, deflated, RECORD rewritten.
    :func:`normalise_wheel` writes the same bytes from a file, member by member."""
    dist_info = contents.dist_info
    files = {**contents.files, **{f"{dist_info}/{k}": v for k, v in extra.items()}}
    record = f"{dist_info}/RECORD"
    files[record] = wheel_record_text(files, dist_info).encode("utf-8")
    stamp = _zip_time(epoch)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for path in _ordered(list(files), dist_info):
            zf.writestr(_zip_info(path, stamp, path in contents.executable), files[path])
    return out.getvalue()


@dataclass(frozen=True)
class Normalised:
    """What :func:`normalise_wheel` changed, in words for the build log."""

    changed: bool
    notes: tuple[str, ...] = field(default=())


_CHUNK = 1 << 20
_LINK_ADVICE = "a wheel must hold plain files only; rebuild it from its sdist"


def normalise_wheel(
    wheel: Path, epoch: int, *, package: str, extra: Mapping[str, bytes] = {}
) -> Normalised:
    """Rewrite *wheel* in place in normal form (:func:`wheel_bytes`), with the *extra*
    files (relative to its ``.dist-info``: PEP 770's ``sboms/``) added, atomically, and
    say what differed from what the backend wrote.  A RECORD whose hashes do not match
    the files is an error: the backend's wheel is broken and is not papered over.

    The wheel is checked by the extractor's rules first, then streamed member by member
    (hashed, then copied), so a wheel holding a library of hundreds of megabytes is never
    held in memory."""
    found: list[PlannedMember] = []

    def want(plan: Sequence[PlannedMember]) -> list[str]:
        found.extend(plan)
        return [m.rel for m in plan if m.kind == "file" and PurePosixPath(m.rel).name == "RECORD"]

    listing = read_archive(
        wheel, package=package, name=wheel.name, want=want, layout="tree", advice=_LINK_ADVICE
    )
    links = [m.rel for m in found if m.kind in ("symlink", "hardlink")]
    if links:
        raise BuildError(
            f"{wheel.name} holds a link {links[0]!r}; wheels hold plain files (installers do"
            " not make links), so it cannot be normalised"
        )
    members = {m.rel: m for m in found if m.kind == "file"}
    executable = frozenset(r for r, m in members.items() if m.executable)
    dist_info = WheelContents(dict.fromkeys(members, b""), executable, ()).dist_info
    record = f"{dist_info}/RECORD"
    old_record = listing.contents.get(record, b"")
    stamp = _zip_time(epoch)
    tmp = wheel.with_name(f".{wheel.name}.normal")
    try:
        with zipfile.ZipFile(wheel) as source:
            hashes = {rel: _member_hash(source, m.original) for rel, m in members.items()}
            _check_listed(old_record, hashes, wheel.name)
            new_files = {f"{dist_info}/{k}": v for k, v in extra.items()}
            paths = _ordered(sorted({*members, *new_files, record}), dist_info)
            new_files[record] = _record_rows(paths, record, hashes, new_files).encode("utf-8")
            with zipfile.ZipFile(tmp, "w") as out:
                for path in paths:
                    info = _zip_info(path, stamp, path in executable)
                    if path in new_files:
                        out.writestr(info, new_files[path])
                        continue
                    info.file_size = hashes[path][1]  # zip64 when it needs it
                    with source.open(members[path].original) as src, out.open(info, "w") as dst:
                        while chunk := src.read(_CHUNK):
                            dst.write(chunk)
            notes = _notes(source, list(members), paths, stamp, extra)
        if old_record != new_files[record] and not extra:
            notes.append("RECORD rewritten")
        if _same_file(tmp, wheel):
            tmp.unlink()
            return Normalised(False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, wheel)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Normalised(True, tuple(notes) or ("recompressed",))


def _member_hash(source: zipfile.ZipFile, name: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with source.open(name) as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    encoded = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")
    return f"sha256={encoded}", size


def _record_rows(
    paths: Sequence[str],
    record: str,
    hashes: Mapping[str, tuple[str, int]],
    new_files: Mapping[str, bytes],
) -> str:
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    for path in paths:
        if path in (record, f"{record}.jws", f"{record}.p7s"):
            writer.writerow([path, "", ""])
        elif path in new_files:
            writer.writerow([path, _record_hash(new_files[path]), len(new_files[path])])
        else:
            writer.writerow([path, *hashes[path]])
    return rows.getvalue()


def _same_file(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        return (
            hashlib.file_digest(fa, "sha256").digest() == hashlib.file_digest(fb, "sha256").digest()
        )


def _notes(
    source: zipfile.ZipFile,
    order: Sequence[str],
    paths: Sequence[str],
    stamp: tuple[int, int, int, int, int, int],
    extra: Mapping[str, bytes],
) -> list[str]:
    notes: list[str] = []
    if [p for p in paths if p in set(order)] != list(order):
        notes.append("entries reordered")
    infos = [i for i in source.infolist() if not i.is_dir()]
    if any(i.date_time != stamp for i in infos):
        notes.append("timestamps set to SOURCE_DATE_EPOCH")
    if any((i.external_attr >> 16) & 0o7777 not in (0o644, 0o755) for i in infos):
        notes.append("permissions normalised")
    if extra:
        notes.append("added " + ", ".join(sorted(extra)))
    return notes


def _check_listed(record: bytes, hashes: Mapping[str, tuple[str, int]], label: str) -> None:
    for row in csv.reader(io.StringIO(record.decode("utf-8", "replace"))):
        if not row or len(row) < 2 or not row[1]:
            continue
        path, digest = row[0], row[1]
        if path not in hashes:
            raise BuildError(f"{label}: RECORD lists {path}, which the wheel does not hold")
        if digest.startswith("sha256=") and digest != hashes[path][0]:
            raise BuildError(
                f"{label}: RECORD gives {path} another sha256 than the file has; the backend"
                " wrote a broken wheel"
            )
