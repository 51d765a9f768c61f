"""Safe extraction of sdists into duni/ (PEP 721 plus our own limits).

An sdist is untrusted input that ``pull`` unpacks into a tree people build and
commit, so extraction is all-or-nothing and never writes outside its destination:

1. **Scan first.**  Every member is checked before a single byte is written:
   absolute paths, ``..`` components, backslashes, device/fifo members, duplicate
   names (after normalisation), members below a file or symlink, symlinks whose
   target leaves the tree (resolved through the archive's other symlinks, not just
   lexically, which is what the tarfile data-filter bypasses of 2025 exploited),
   hard links to anything but an earlier regular file, and the :class:`Limits` on
   member count, declared uncompressed size and compression ratio.  The counts are
   enforced while the member list is read, so a bomb is refused at its first
   oversized header rather than after decompressing it.
2. **Extract into a staging directory** beside the destination
   (``.tmp-<name>-<random>``), with tarfile's ``"data"`` filter as a second layer for
   tar and size checks on the bytes actually read for zip (header sizes are not
   trusted).  The single top-level directory of the sdist is stripped.
3. **Rename** the staging directory to the destination.  On any failure the
   staging directory is removed: no half-extracted tree is ever left behind.

Permissions are normalised the way the data filter intends, but independent of
the umask: files 0o755 when any executable bit was set, else 0o644; directories
0o755.  Owners and special bits are dropped.  Hard links are extracted as copies so
that patching one path can never edit another.  Empty directories are kept.
"""

from __future__ import annotations

import functools
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from monorepo.errors import ExtractError

RawKind = Literal["file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo", "other"]

_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")
_MAX_LINK_TARGET = 4096
_MAX_SYMLINK_DEPTH = 40
_CHUNK = 1024 * 1024
_PLANNED_KINDS: dict[str, Literal["file", "dir", "symlink", "hardlink"]] = {
    "file": "file",
    "dir": "dir",
    "symlink": "symlink",
    "hardlink": "hardlink",
}


class _SymlinkLoop(Exception):
    """Raised by :func:`_resolve` past the kernel's link depth (ELOOP)."""


@dataclass(frozen=True)
class Limits:
    """Caps that make a decompression bomb or a member flood fail fast.

    Defaults are far above any real sdist; ``max_ratio`` is uncompressed bytes per
    byte of archive (gzip of ordinary source code stays well under 20).
    """

    max_members: int = 100_000
    max_total_size: int = 2 * 1024**3
    max_ratio: float = 200.0


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class RawMember:
    """A member as an archive format describes it, before any checking."""

    name: str
    kind: RawKind
    size: int = 0
    mode: int = 0o644
    link: str = ""
    """Symlink target, or for a hard link the archive name of its target."""


@dataclass(frozen=True)
class PlannedMember:
    """A checked member: where it goes relative to the destination, and as what."""

    original: str
    rel: str
    """Path below the stripped top-level directory; "" for the top directory itself."""
    kind: Literal["file", "dir", "symlink", "hardlink", "duplicate"]
    size: int
    executable: bool
    link: str
    """Symlink target as stored, or the ``rel`` of a hard link's target file."""


def _mode_for(executable: bool) -> int:
    return 0o755 if executable else 0o644


@dataclass
class Planner:
    """The checks of step 1, fed member by member so limits apply while reading.

    Pure: it sees member descriptions only, never the file system, so every rule
    can be tested without building an archive.
    """

    package: str
    archive_name: str
    archive_size: int
    limits: Limits = DEFAULT_LIMITS
    members: list[PlannedMember] = field(default_factory=list, init=False)
    _top: str | None = field(default=None, init=False)
    _top_member: str = field(default="", init=False)
    _by_rel: dict[str, PlannedMember] = field(default_factory=dict, init=False)
    _total: int = field(default=0, init=False)

    def refuse(self, member: str, reason: str) -> ExtractError:
        """The one message shape every refusal uses: package, archive, member, reason.

        The closing advice is the same for every rule because the remedy is: this file
        must not be unpacked, so another version or an overlay's replacement source is
        needed.
        """
        return ExtractError(
            f"{self.package}: refusing {self.archive_name}: member '{member}' {reason}."
            " Nothing was extracted; lock another version, or give the package a"
            " replacement source in an overlay"
        )

    def _components(self, member: str, name: str, what: str) -> list[str]:
        if not name:
            raise self.refuse(member, f"has an empty {what}")
        if "\0" in name:
            raise self.refuse(member, f"has a NUL byte in its {what}")
        if name.startswith("/"):
            raise self.refuse(member, f"has an absolute {what}, which would leave the tree")
        if "\\" in name:
            raise self.refuse(
                member, f"has a backslash in its {what}, which is a separator on Windows"
            )
        parts = [c for c in name.split("/") if c not in ("", ".")]
        if ".." in parts:
            raise self.refuse(
                member, f"has a '..' component in its {what}, which would leave the tree"
            )
        return parts

    def add(self, raw: RawMember) -> PlannedMember:
        """Check one member against everything knowable so far, and record it."""
        name = raw.name
        if len(self.members) >= self.limits.max_members:
            raise self.refuse(
                name, f"exceeds the limit of {self.limits.max_members} members per archive"
            )
        parts = self._components(name, name, "path")
        if raw.kind in ("chardev", "blockdev", "fifo", "other"):
            described = {
                "chardev": "is a character device",
                "blockdev": "is a block device",
                "fifo": "is a fifo (named pipe)",
                "other": "has a file type other than file, directory or link",
            }[raw.kind]
            raise self.refuse(name, f"{described}, which an sdist must not contain")
        if raw.kind == "file":
            self._count_size(name, raw.size)
        if not parts:
            if raw.kind != "dir":
                raise self.refuse(name, "names the archive root but is not a directory")
            return self._record(PlannedMember(name, "", "dir", 0, False, ""), skip=True)
        top, rel = parts[0], "/".join(parts[1:])
        if self._top is None:
            self._top, self._top_member = top, name
        elif top != self._top:
            raise self.refuse(
                name,
                f"is under the top-level directory '{top}' but '{self._top_member}' is under"
                f" '{self._top}'; an sdist holds exactly one top-level directory",
            )
        if not rel:
            if raw.kind != "dir":
                raise self.refuse(
                    name,
                    "is the archive's top-level entry but not a directory; an sdist"
                    " holds exactly one top-level directory",
                )
            return self._record(PlannedMember(name, "", "dir", 0, False, ""), skip=True)
        earlier = self._by_rel.get(rel)
        if (
            earlier is not None
            and earlier.kind == "file"
            and raw.kind == "file"
            and earlier.size == raw.size
        ):
            # Real sdists (pyarrow's LICENSE.txt) repeat a file verbatim.  Tolerated only
            # if the bytes are identical, which the extractor checks: never "last wins".
            return self._record(
                PlannedMember(name, rel, "duplicate", raw.size, False, rel), skip=True
            )
        if rel in self._by_rel:
            raise self.refuse(
                name,
                f"is a duplicate of '{self._by_rel[rel].original}' (same path once normalised)",
            )
        link = raw.link
        if raw.kind == "symlink":
            if not link:
                raise self.refuse(name, "is a symlink with an empty target")
            if "\0" in link:
                raise self.refuse(name, "is a symlink whose target contains a NUL byte")
            if link.startswith("/"):
                raise self.refuse(name, f"is a symlink to the absolute path '{link}'")
        elif raw.kind == "hardlink":
            link = self._hardlink_target(name, raw.link)
        kind = _PLANNED_KINDS[raw.kind]
        planned = PlannedMember(
            name, rel, kind, raw.size if kind == "file" else 0, bool(raw.mode & 0o111), link
        )
        return self._record(planned)

    def _count_size(self, name: str, size: int) -> None:
        self._total += max(size, 0)
        if self._total > self.limits.max_total_size:
            raise self.refuse(
                name,
                f"brings the uncompressed size to {self._total} bytes, over the limit of"
                f" {self.limits.max_total_size}",
            )
        ratio = self._total / max(self.archive_size, 1)
        if ratio > self.limits.max_ratio:
            raise self.refuse(
                name,
                f"brings the uncompressed size to {self._total} bytes, {ratio:.0f} times the"
                f" archive's {self.archive_size} bytes, over the limit of"
                f" {self.limits.max_ratio:g} (a decompression bomb?)",
            )

    def _hardlink_target(self, name: str, target: str) -> str:
        parts = self._components(name, target, "hard link target")
        if not parts or parts[0] != self._top:
            raise self.refuse(name, f"is a hard link to '{target}', outside the tree")
        rel = "/".join(parts[1:])
        found = self._by_rel.get(rel)
        if found is None or found.kind not in ("file", "hardlink"):
            raise self.refuse(
                name,
                f"is a hard link to '{target}', which is not an earlier regular file in the"
                " archive",
            )
        return found.link if found.kind == "hardlink" else rel

    def _record(self, planned: PlannedMember, *, skip: bool = False) -> PlannedMember:
        self.members.append(planned)
        if not skip:
            self._by_rel[planned.rel] = planned
        return planned

    def finish(self) -> list[PlannedMember]:
        """The whole-archive checks, once every member is known; returns the plan."""
        if self._top is None:
            raise ExtractError(
                f"{self.package}: refusing {self.archive_name}: it has no top-level directory"
                " (no members); the sdist is empty or damaged"
            )
        # Links first: an escaping link is the cause, a member below it the symptom.
        links = {p.rel: p.link for p in self._by_rel.values() if p.kind == "symlink"}
        for planned in self._by_rel.values():
            if planned.kind == "symlink":
                self._check_symlink(planned, links)
        for planned in self._by_rel.values():
            self._check_ancestors(planned)
        return self.members

    def _check_ancestors(self, planned: PlannedMember) -> None:
        parts = planned.rel.split("/")
        for i in range(1, len(parts)):
            ancestor = self._by_rel.get("/".join(parts[:i]))
            if ancestor is not None and ancestor.kind != "dir":
                what = "a symlink" if ancestor.kind == "symlink" else "a file"
                raise self.refuse(
                    planned.original,
                    f"lies under '{ancestor.original}', which is {what}, not a directory",
                )

    def _check_symlink(self, planned: PlannedMember, links: dict[str, str]) -> None:
        parent = planned.rel.split("/")[:-1]
        try:
            inside = _resolve(parent, planned.link, links, 0) is not None
        except _SymlinkLoop:
            inside = False
            reason = "is part of a symlink loop"
        else:
            reason = f"is a symlink to '{planned.link}', which leaves the extracted tree"
        if not inside:
            raise self.refuse(planned.original, reason)


def _resolve(base: list[str], target: str, links: dict[str, str], depth: int) -> list[str] | None:
    """Where *target*, relative to directory *base*, lands: None if it leaves the root.

    Follows the archive's own symlinks the way the kernel would once they all exist,
    so ``x -> d/..`` with ``d -> .`` is seen to escape even though it looks harmless
    lexically.  Raises _SymlinkLoop past 40 links (the kernel's ELOOP).
    """
    if depth > _MAX_SYMLINK_DEPTH:
        raise _SymlinkLoop(target)
    if target.startswith("/"):
        return None
    stack = list(base)
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return None
            stack.pop()
            continue
        stack.append(part)
        key = "/".join(stack)
        if key in links:
            resolved = _resolve(stack[:-1], links[key], links, depth + 1)
            if resolved is None:
                return None
            stack = resolved
    return stack


def extract_sdist(
    archive: Path, dest: Path, *, package: str, limits: Limits = DEFAULT_LIMITS
) -> None:
    """Unpack *archive*'s single top-level directory as *dest*, or refuse and leave nothing.

    *dest* must not exist; its parent is created if needed.  Raises
    :class:`~monorepo.errors.ExtractError` naming the package, archive and member.
    """
    kind = _archive_kind(archive, package)
    try:
        archive_size = archive.stat().st_size
    except OSError as e:
        raise ExtractError(
            f"{package}: cannot read {archive.name} ({e.strerror}); run 'monorepo pull' again"
            " to fetch it"
        ) from e
    if os.path.lexists(dest):
        raise ExtractError(
            f"{package}: cannot extract {archive.name} into {dest}: it already exists; remove"
            " it first (monorepo pull replaces directories itself)"
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
    except OSError as e:
        raise _cannot_write(package, archive, dest, e) from e
    try:
        if kind == "zip":
            _extract_zip(archive, archive_size, staging, package, limits)
        else:
            _extract_tar(archive, archive_size, staging, package, limits)
        _normalise_dirs(staging)
        os.rename(staging, dest)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise _cannot_write(package, archive, dest, e) from e
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _cannot_write(package: str, archive: Path, dest: Path, error: OSError) -> ExtractError:
    return ExtractError(
        f"{package}: cannot extract {archive.name} into {dest}: {error}; check the free space"
        f" and permissions of {dest.parent}"
    )


def _archive_kind(archive: Path, package: str) -> Literal["tar", "zip"]:
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    raise ExtractError(
        f"{package}: refusing {archive.name}: not a supported sdist archive; expected"
        " .tar.gz, .tar.bz2, .tar.xz, .tar or .zip"
    )


def _unreadable(package: str, archive: Path, error: BaseException) -> ExtractError:
    return ExtractError(
        f"{package}: refusing {archive.name}: it is not a readable archive ({error}); delete"
        " it from the cache (or the project) and run 'monorepo pull' again"
    )


_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError)


def _tar_raw(info: tarfile.TarInfo) -> RawMember:
    kind: RawKind
    if info.isreg():
        kind = "file"
    elif info.isdir():
        kind = "dir"
    elif info.issym():
        kind = "symlink"
    elif info.islnk():
        kind = "hardlink"
    elif info.ischr():
        kind = "chardev"
    elif info.isblk():
        kind = "blockdev"
    elif info.isfifo():
        kind = "fifo"
    else:
        kind = "other"
    return RawMember(info.name, kind, info.size, info.mode, info.linkname)


def _extract_tar(
    archive: Path, archive_size: int, staging: Path, package: str, limits: Limits
) -> None:
    planner = Planner(package, archive.name, archive_size, limits)
    try:
        tf = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the with below
    except (*_READ_ERRORS, OSError) as e:
        raise _unreadable(package, archive, e) from e
    with tf:
        tf.errorlevel = 2
        infos: list[tarfile.TarInfo] = []
        try:
            for info in tf:
                planner.add(_tar_raw(info))
                infos.append(info)
        except (*_READ_ERRORS, OSError) as e:
            raise _unreadable(package, archive, e) from e
        plan = planner.finish()
        files = {p.rel: info for p, info in zip(plan, infos, strict=True) if p.kind == "file"}
        for planned, info in zip(plan, infos, strict=True):
            if not planned.rel:
                continue
            if planned.kind == "duplicate":
                _check_duplicate(planner, planned, staging, functools.partial(_tar_bytes, tf, info))
                continue
            if planned.kind == "hardlink":
                # A copy of the target's data: same offset in the archive, new name.
                source = files[planned.link]
                member = source.replace(name=planned.rel, mode=_mode_for(source.mode & 0o111 != 0))
            elif planned.kind == "file":
                member = info.replace(name=planned.rel, mode=_mode_for(planned.executable))
            else:
                member = info.replace(name=planned.rel)
            try:
                tf.extract(member, staging, filter="data")
            except (*_READ_ERRORS, OSError) as e:
                raise planner.refuse(planned.original, f"could not be extracted: {e}") from e


def _tar_bytes(tf: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    stream = tf.extractfile(info)
    return stream.read() if stream is not None else b""


def _check_duplicate(
    planner: Planner, planned: PlannedMember, staging: Path, read: Callable[[], bytes]
) -> None:
    """A repeated member must be byte-identical to the one already extracted."""
    try:
        same = read() == (staging / planned.rel).read_bytes()
    except (*_READ_ERRORS, OSError) as e:
        raise planner.refuse(planned.original, f"could not be read: {e}") from e
    if not same:
        raise planner.refuse(
            planned.original, "is a duplicate of an earlier member with different content"
        )


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


def _extract_zip(
    archive: Path, archive_size: int, staging: Path, package: str, limits: Limits
) -> None:
    planner = Planner(package, archive.name, archive_size, limits)
    try:
        zf = zipfile.ZipFile(archive)
    except (*_READ_ERRORS, OSError) as e:
        raise _unreadable(package, archive, e) from e
    with zf:
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
        written_total = 0
        for planned, info in zip(plan, infos, strict=True):
            if planned.kind == "duplicate":
                _check_duplicate(planner, planned, staging, functools.partial(zf.read, info))
                continue
            if planned.kind != "file" or not planned.rel:
                if planned.kind == "dir" and planned.rel:
                    (staging / planned.rel).mkdir(parents=True, exist_ok=True)
                continue
            written_total = _write_zip_member(
                zf, info, planned, staging, planner, written_total, archive_size
            )
        for planned in plan:
            if planned.kind == "symlink":
                target = staging / planned.rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(planned.link, target)


def _zip_link_target(zf: zipfile.ZipFile, info: zipfile.ZipInfo, planner: Planner) -> str:
    try:
        with zf.open(info) as stream:
            data = b"".join(_read_capped(stream, _MAX_LINK_TARGET))
    except (*_READ_ERRORS, OSError) as e:
        raise planner.refuse(info.filename, f"could not be read: {e}") from e
    if len(data) > _MAX_LINK_TARGET:
        raise planner.refuse(info.filename, "is a symlink with an over-long target")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise planner.refuse(info.filename, "is a symlink whose target is not UTF-8") from e


def _write_zip_member(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    planned: PlannedMember,
    staging: Path,
    planner: Planner,
    written_total: int,
    archive_size: int,
) -> int:
    """Write one zip member, counting real bytes against its header and the limits."""
    target = staging / planned.rel
    target.parent.mkdir(parents=True, exist_ok=True)
    limits = planner.limits
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(target, flags, _mode_for(planned.executable))
    written = 0
    try:
        with os.fdopen(fd, "wb") as out, zf.open(info) as stream:
            for chunk in _read_capped(stream, info.file_size):
                written += len(chunk)
                written_total += len(chunk)
                if written > info.file_size:
                    raise planner.refuse(
                        planned.original,
                        f"expands beyond its declared {info.file_size} bytes",
                    )
                if written_total > limits.max_total_size:
                    raise planner.refuse(
                        planned.original,
                        f"brings the uncompressed size over the limit of {limits.max_total_size}"
                        " bytes",
                    )
                if written_total / max(archive_size, 1) > limits.max_ratio:
                    raise planner.refuse(
                        planned.original,
                        f"brings the uncompressed size over {limits.max_ratio:g} times the"
                        " archive's size (a decompression bomb?)",
                    )
                out.write(chunk)
    except (*_READ_ERRORS, OSError) as e:
        raise planner.refuse(planned.original, f"could not be extracted: {e}") from e
    os.chmod(target, _mode_for(planned.executable))
    return written_total


def _normalise_dirs(staging: Path) -> None:
    """Directories 0o755 whatever the umask (tarfile leaves them to it under "data")."""
    os.chmod(staging, 0o755)
    for dirpath, dirnames, _ in os.walk(staging):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755)
