"""Opening archives: tar (gz, bz2, xz) and zip members planned by the rules, then handed to a sink.

:func:`extract_archive` writes a checked archive into a staging directory and renames it
into place; :func:`read_archive` and :func:`read_zip` check one the same way and return
only the members asked for.  The package docstring (:mod:`monorepo.extract`) gives the
three steps and what each guarantees.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, TypeVar

from monorepo._core.fstree import remove_tree
from monorepo._core.speed.switches import enabled
from monorepo.errors import ExtractError, MonorepoError, disk_full
from monorepo.extract.compression import gunzip, stream_limit
from monorepo.extract.rules import (
    DEFAULT_LIMITS,
    MAX_LINK_TARGET,
    SDIST_ADVICE,
    Layout,
    Limits,
    PlannedMember,
    Planner,
    RawKind,
    RawMember,
    tar_raw,
)
from monorepo.extract.sinks import READ_ERRORS, Collector, FileStamps, Listing, Select, Sink, Writer
from monorepo.extract.speed import tarscan

__all__ = ["extract_archive", "extract_sdist", "read_archive", "read_zip"]


_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".crate")  # a crate: .tar.gz
_ZIP_SUFFIXES = (".zip", ".whl")
_CHUNK = 1024 * 1024


def extract_archive(
    archive: Path | bytes,
    dest: Path,
    *,
    package: str,
    limits: Limits = DEFAULT_LIMITS,
    name: str | None = None,
    layout: Layout = "sdist",
    advice: str = SDIST_ADVICE,
) -> FileStamps:
    """Unpack *archive* as *dest*, or refuse and leave nothing.

    *archive* is a file, or its bytes (then *name* is required).  With the ``sdist``
    *layout* its single top-level directory becomes *dest*; with ``tree`` its root does.
    *dest* must not exist; its parent is created if needed.  *name* is the archive's
    file name when the path does not end with it (a content-addressed store entry):
    its suffix picks the format and messages use it.  Returns the stamp and sha256 of
    every regular file written (hashed from the bytes in hand), which
    ``scan_tree(dest, stamps=...)`` turns into the tree's entries without reading the
    files again.  Raises :class:`~monorepo.errors.ExtractError` naming the package,
    archive and member, or :class:`~monorepo.errors.DiskFullError` naming the directory
    when a write fails for want of space (the archive is not at fault then).
    """
    source = _Archive.of(archive, name, package, limits, layout, advice)
    if os.path.lexists(dest):
        raise ExtractError(
            f"{package}: cannot extract {source.name} into {dest}: it already exists; remove"
            " it first (monorepo pull replaces directories itself)"
        )
    made: list[Path] = []

    def writer(planner: Planner) -> Writer:
        # Only once the whole plan passed: a refused archive leaves not even an empty
        # staging directory (nor a changed mtime) behind.
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            made.append(Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent)))
        except OSError as e:
            raise _cannot_write(source, dest, e) from e
        return Writer(made[0], planner)

    try:
        stamps = source.emit(writer)
        os.rename(made[0], dest)
    except OSError as e:
        for staging in made:
            remove_tree(staging, ignore_errors=True)
        raise _cannot_write(source, dest, e) from e
    except BaseException:
        for staging in made:
            remove_tree(staging, ignore_errors=True)
        raise
    return stamps


def extract_sdist(
    archive: Path | bytes,
    dest: Path,
    *,
    package: str,
    limits: Limits = DEFAULT_LIMITS,
    name: str | None = None,
) -> FileStamps:
    """:func:`extract_archive` of an sdist: its single top-level directory becomes *dest*."""
    return extract_archive(archive, dest, package=package, limits=limits, name=name)


def read_archive(
    archive: Path | bytes,
    *,
    package: str,
    name: str | None = None,
    want: Collection[str] | Select = (),
    limits: Limits = DEFAULT_LIMITS,
    layout: Layout = "sdist",
    advice: str = SDIST_ADVICE,
) -> Listing:
    """Check *archive* exactly as :func:`extract_archive` would, and read members of it.

    Nothing is written: an archive that extraction would refuse is refused here, with
    the same message, and otherwise the members named by *want* (``rel`` paths, or a
    function of the plan that returns them) are read, with their real sizes checked,
    up to 64 MiB each.  For a caller that needs one file of an sdist (its PKG-INFO)
    or of a wheel (its METADATA) and must not trust the rest of it either.
    """
    source = _Archive.of(archive, name, package, limits, layout, advice)
    return source.emit(functools.partial(Collector, want))


def read_zip(
    zf: zipfile.ZipFile,
    *,
    package: str,
    name: str,
    size: int,
    want: Collection[str] | Select = (),
    limits: Limits = DEFAULT_LIMITS,
    layout: Layout = "tree",
    advice: str = SDIST_ADVICE,
) -> Listing:
    """:func:`read_archive` of a zip already open (a remote wheel read by byte ranges,
    :mod:`monorepo.index.lazywheel`); *size* is the archive's size in bytes."""
    source = _Archive(None, None, name, package, limits, layout, advice, size)
    return _emit_zip(zf, source, functools.partial(Collector, want))


@dataclass
class _Archive:
    """The archive being opened: where it is, what it is called, for whom, the rules."""

    path: Path | None
    data: bytes | None
    name: str
    package: str
    limits: Limits
    layout: Layout
    advice: str
    size: int = 0

    @classmethod
    def of(
        cls,
        archive: Path | bytes,
        name: str | None,
        package: str,
        limits: Limits,
        layout: Layout,
        advice: str,
    ) -> _Archive:
        if isinstance(archive, bytes):
            if name is None:
                raise TypeError("the name of an archive given as bytes is required")
            return cls(None, archive, name, package, limits, layout, advice, len(archive))
        source = cls(archive, None, name or archive.name, package, limits, layout, advice)
        source.kind()  # an unsupported name is refused before the file is touched
        try:
            source.size = archive.stat().st_size
        except OSError as e:
            raise ExtractError(
                f"{package}: cannot read {source.name} ({e.strerror}); run 'monorepo pull'"
                " again to fetch it"
            ) from e
        return source

    def planner(self) -> Planner:
        return Planner(self.package, self.name, self.size, self.limits, self.layout, self.advice)

    def kind(self) -> Literal["tar", "zip"]:
        name = self.name.lower()
        if name.endswith(_ZIP_SUFFIXES):
            return "zip"
        if name.endswith(_TAR_SUFFIXES):
            return "tar"
        raise ExtractError(
            f"{self.package}: refusing {self.name}: not a supported archive; expected"
            " .tar.gz, .tar.bz2, .tar.xz, .tar, .zip, .whl or .crate"
        )

    def read_bytes(self) -> bytes | None:
        """All of the (compressed) archive, or None if the file cannot be read."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        try:
            return self.path.read_bytes()
        except OSError:
            return None

    def open(self) -> IO[bytes]:
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        return self.path.open("rb")

    def emit(self, sink: Callable[[Planner], Sink[_T]]) -> _T:
        """Plan every member, then hand the plan to the sink *sink(planner)* makes."""
        if self.kind() == "zip":
            try:
                zf = zipfile.ZipFile(self.open())
            except (*READ_ERRORS, OSError) as e:
                raise _unreadable(self, e) from e
            with zf:
                return _emit_zip(zf, self, sink)
        return _emit_tar(self, sink)


def _cannot_write(archive: _Archive, dest: Path, error: OSError) -> MonorepoError:
    full = disk_full(error, dest.parent, what=f"{archive.package}: cannot extract {archive.name}")
    if full is not None:
        return full
    return ExtractError(
        f"{archive.package}: cannot extract {archive.name} into {dest}: {error}; check the"
        f" free space and permissions of {dest.parent}"
    )


def _unreadable(archive: _Archive, error: BaseException) -> ExtractError:
    return ExtractError(
        f"{archive.package}: refusing {archive.name}: it is not a readable archive ({error});"
        " delete it from the cache (or the project) and run the command again"
    )


_IN_MEMORY_LIMIT = 256 * 1024 * 1024
"""Decompressed tar streams up to this size are held in memory, so the archive is
decompressed once for both steps; larger ones are read twice from the file."""


_T = TypeVar("_T")


class _ReadAgain(Exception):
    """Reading the in-memory copy failed: read the file itself, which words the error."""


def _emit_tar(archive: _Archive, sink: Callable[[Planner], Sink[_T]]) -> _T:
    # A stream past what the limits allow goes the slow way, which refuses it at its
    # first oversized header; the allowance covers tar headers and padding.
    allowed = min(_IN_MEMORY_LIMIT, stream_limit(archive.size, archive.limits))
    stream = gunzip(archive.read_bytes(), allowed)
    if stream is not None:
        # The usual sdist's headers are read by tarscan, a fifth of tarfile's CPU; any
        # other archive (and every hostile one tarscan does not know) by tarfile.
        members = tarscan.scan(stream) if enabled("tarscan") else None
        if members is not None:
            return _plan_tar(members, None, stream, archive, sink)
        try:
            tf = tarfile.open(fileobj=io.BytesIO(stream), mode="r:")  # noqa: SIM115
        except (*READ_ERRORS, OSError):
            pass
        else:
            with tf:
                try:
                    return _plan_tar(tf, tf, stream, archive, sink)
                except _ReadAgain:
                    pass
    with contextlib.ExitStack() as stack:
        try:
            handle = stack.enter_context(archive.open())
            tf = stack.enter_context(tarfile.open(fileobj=handle, mode="r:*"))
        except (*READ_ERRORS, OSError) as e:
            raise _unreadable(archive, e) from e
        return _plan_tar(tf, tf, None, archive, sink)


def _plan_tar(
    members: Iterable[tarfile.TarInfo],
    tf: tarfile.TarFile | None,
    stream: bytes | None,
    archive: _Archive,
    sink: Callable[[Planner], Sink[_T]],
) -> _T:
    """Plan every member, then give the plan to the sink.

    *members* are read from *tf*, or were read by :func:`tarscan.scan` (then *tf* is
    None).  *stream* is the whole decompressed tar when it is in memory: member data is
    then sliced out of it instead of read (and decompressed again) through tarfile.
    """
    planner = archive.planner()
    if tf is not None:
        tf.errorlevel = 2
    infos: list[tarfile.TarInfo] = []
    try:
        for info in members:
            planner.add(tar_raw(info))
            infos.append(info)
    except (*READ_ERRORS, OSError) as e:
        if stream is not None:
            raise _ReadAgain from e
        raise _unreadable(archive, e) from e
    plan = planner.finish()
    view = memoryview(stream) if stream is not None else None

    def read(info: tarfile.TarInfo) -> Iterator[bytes | memoryview]:
        if view is not None and info.sparse is None:
            start, end = info.offset_data, info.offset_data + info.size
            if end > len(view):
                raise tarfile.ReadError("unexpected end of data")
            yield view[start:end]
            return
        assert tf is not None  # tarscan reads only streams in memory
        member = tf.extractfile(info)
        if member is not None:
            with member:
                while chunk := member.read(_CHUNK):
                    yield chunk

    def read_all(info: tarfile.TarInfo) -> bytes | memoryview:
        return b"".join(read(info))

    out = sink(planner)
    files: dict[str, tarfile.TarInfo] = {}
    for planned, info in zip(plan, infos, strict=True):
        if not planned.rel:
            continue
        if planned.kind == "file":
            files[planned.rel] = info
            out.file(planned, read(info), planned.executable, info.mtime)
        elif planned.kind == "dir":
            out.directory(planned, info.mtime)
        elif planned.kind == "hardlink":
            # A copy of the target's data, mode and time, under the new name.
            source = files[planned.link]
            out.file(planned, read(source), source.mode & 0o111 != 0, source.mtime)
        elif planned.kind == "symlink":
            out.symlink(planned)
        else:
            out.duplicate(planned, functools.partial(read_all, info))
    return out.finish()


def _zip_kind(info: zipfile.ZipInfo) -> tuple[RawKind, int]:
    mode = info.external_attr >> 16 if info.create_system == 3 else 0
    fmt = stat.S_IFMT(mode)
    if info.is_dir() or fmt == stat.S_IFDIR:
        return "dir", 0o755
    if fmt == stat.S_IFLNK:
        return "symlink", 0o777
    if fmt in (0, stat.S_IFREG):
        return "file", mode & 0o777 if mode else 0o644
    if fmt == stat.S_IFCHR:
        return "chardev", 0
    if fmt == stat.S_IFBLK:
        return "blockdev", 0
    if fmt == stat.S_IFIFO:
        return "fifo", 0
    return "other", 0


def _read_capped(stream: IO[bytes], limit: int) -> Iterator[bytes]:
    """Chunks of *stream*, reading at most one byte past *limit* so overruns are seen."""
    remaining = limit + 1
    while remaining > 0:
        chunk = stream.read(min(_CHUNK, remaining))
        if not chunk:
            return
        remaining -= len(chunk)
        yield chunk


def _emit_zip(zf: zipfile.ZipFile, archive: _Archive, sink: Callable[[Planner], Sink[_T]]) -> _T:
    planner = archive.planner()
    try:
        infos = zf.infolist()
        plan: list[PlannedMember] = []
        for info in infos:
            kind, mode = _zip_kind(info)
            if info.flag_bits & 0x1:
                raise planner.refuse(info.filename, "is encrypted")
            link = ""
            if kind == "symlink":
                link = _zip_link_target(zf, info, planner)
            plan.append(planner.add(RawMember(info.filename, kind, info.file_size, mode, link)))
        planner.finish()
    except (*READ_ERRORS, OSError) as e:
        raise _unreadable(archive, e) from e
    out = sink(planner)
    counter = _ZipCounter(planner, archive.size)
    for planned, info in zip(plan, infos, strict=True):
        if planned.kind == "duplicate":
            out.duplicate(planned, functools.partial(zf.read, info))
        elif planned.kind == "dir" and planned.rel:
            out.directory(planned, None)
        elif planned.kind == "symlink":
            out.symlink(planned)
        elif planned.kind == "file" and planned.rel:
            out.file(planned, counter.chunks(zf, info, planned), planned.executable, None)
    return out.finish()


def _zip_link_target(zf: zipfile.ZipFile, info: zipfile.ZipInfo, planner: Planner) -> str:
    try:
        with zf.open(info) as stream:
            data = b"".join(_read_capped(stream, MAX_LINK_TARGET))
    except (*READ_ERRORS, OSError) as e:
        raise planner.refuse(info.filename, f"could not be read: {e}") from e
    if len(data) > MAX_LINK_TARGET:
        raise planner.refuse(info.filename, "is a symlink with an over-long target")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise planner.refuse(info.filename, "is a symlink whose target is not UTF-8") from e


@dataclass
class _ZipCounter:
    """Counts the bytes a zip really inflates to, since its headers are not trusted."""

    planner: Planner
    archive_size: int
    total: int = 0

    def chunks(
        self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, planned: PlannedMember
    ) -> Iterator[bytes]:
        limits = self.planner.limits
        written = 0
        with zf.open(info) as stream:
            for chunk in _read_capped(stream, info.file_size):
                written += len(chunk)
                self.total += len(chunk)
                if written > info.file_size:
                    raise self.planner.refuse(
                        planned.original,
                        f"expands beyond its declared {info.file_size} bytes",
                    )
                if self.total > limits.max_total_size:
                    raise self.planner.refuse(
                        planned.original,
                        f"brings the uncompressed size over the limit of {limits.max_total_size}"
                        " bytes",
                    )
                if self.total / max(self.archive_size, 1) > limits.max_ratio:
                    raise self.planner.refuse(
                        planned.original,
                        f"brings the uncompressed size over {limits.max_ratio:g} times the"
                        " archive's size (a decompression bomb?)",
                    )
                yield chunk
