"""``.deb`` packages unpacked under the extractor's rules: ar members, the plan, a writer."""

from __future__ import annotations

import io
import os
import posixpath
import re
import shutil
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Literal

from monorepo.errors import ExtractError
from monorepo.extract import compression
from monorepo.extract.rules import (
    DEFAULT_LIMITS,
    Limits,
    Planner,
    RawMember,
    resolve_path,
    tar_raw,
)
from monorepo.sysroot.info import SysrootError

_CHUNK = 1 << 16
_MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


# --------------------------------------------------------------------------- .deb


@dataclass(frozen=True)
class ArMember:
    """One member of an ``ar`` archive: its bytes are ``data[offset:offset + size]``."""

    name: str
    offset: int
    size: int


def ar_members(data: bytes, *, what: str = "archive") -> list[ArMember]:
    """The members of the common (System V / GNU, BSD long name) ``ar`` format.

    A ``.deb`` is such an archive of ``debian-binary``, ``control.tar.*`` and
    ``data.tar.*``.  Raises :class:`SysrootError` naming *what* on any damage.
    """
    if not data.startswith(b"!<arch>\n"):
        raise SysrootError(f"{what} is not an ar archive (no '!<arch>' magic)")
    members: list[ArMember] = []
    pos = 8
    while pos < len(data):
        if data[pos : pos + 1] == b"\n":  # stray padding
            pos += 1
            continue
        header = data[pos : pos + 60]
        if len(header) < 60 or header[58:60] != b"`\n":
            raise SysrootError(f"{what}: damaged ar header at byte {pos}")
        raw_name = header[0:16].decode("ascii", "replace").rstrip(" ")
        try:
            size = int(header[48:58].decode("ascii").strip() or "0")
        except ValueError as e:
            raise SysrootError(f"{what}: bad member size in the ar header at byte {pos}") from e
        start = pos + 60
        if size < 0 or start + size > len(data):
            raise SysrootError(f"{what}: member '{raw_name}' runs past the end (truncated)")
        name, offset, length = raw_name, start, size
        if raw_name.startswith("#1/"):  # BSD: the name is the first N bytes of the data
            n = int(raw_name[3:]) if raw_name[3:].isdigit() else -1
            if n < 0 or n > size:
                raise SysrootError(f"{what}: bad BSD long name '{raw_name}'")
            name = data[start : start + n].decode("utf-8", "replace").rstrip("\0")
            offset, length = start + n, size - n
        elif raw_name.endswith("/") and raw_name not in ("/", "//"):
            name = raw_name[:-1]  # GNU terminator
        members.append(ArMember(name, offset, length))
        pos = start + size + (size % 2)
    return members


def deb_data_member(data: bytes, *, what: str = "package") -> tuple[str, bytes]:
    """The name and bytes of a ``.deb``'s ``data.tar[.xz|.gz|.zst|.bz2]`` member."""
    members = ar_members(data, what=what)
    if not members or members[0].name != "debian-binary":
        raise SysrootError(f"{what} is not a .deb (first member is not debian-binary)")
    version = data[members[0].offset : members[0].offset + members[0].size]
    if not version.startswith(b"2."):
        raise SysrootError(f"{what}: unsupported .deb format {version.strip()!r}")
    for member in members:
        if member.name.startswith("data.tar"):
            return member.name, data[member.offset : member.offset + member.size]
    raise SysrootError(f"{what}: the .deb has no data.tar member")


def decompress_member(name: str, blob: bytes, what: str) -> bytes:
    """The extractor's capped decompression (:func:`monorepo.extract.compression.decompress`)."""
    try:
        return compression.decompress(name, blob, package=what)
    except ExtractError as e:
        raise SysrootError(str(e)) from e


@dataclass(frozen=True)
class DebEntry:
    """A checked ``data.tar`` member and where it goes below the sysroot."""

    original: str
    rel: str
    """Path below DEST after merging /bin, /sbin, /lib* into /usr."""
    kind: Literal["file", "dir", "symlink", "hardlink"]
    executable: bool = False
    link: str = ""
    """Symlink: the (relative, rewritten) target.  Hard link: the ``rel`` of its file."""


def _merge_usr(parts: list[str]) -> list[str]:
    return ["usr", *parts] if parts and parts[0] in _MERGED else parts


_DEB_ADVICE = "Nothing of this sysroot was installed; the package or mirror is damaged or hostile"


def plan_deb(
    package: str,
    members: Iterable[RawMember],
    *,
    archive_name: str = "data.tar",
    archive_size: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> list[DebEntry]:
    """Check a ``data.tar``'s members and say where each goes; pure (no file system).

    The checks are the extractor's (:class:`monorepo.extract.rules.Planner`, ``tree`` layout,
    the same :class:`~monorepo.extract.rules.Limits` as every archive): no absolute paths, no
    ``..``, no NUL bytes, no device or fifo members, no symlink whose target leaves the
    root (through the package's other links too), hard links only to an earlier
    regular file, and the caps on members, bytes (links counted), ratio, depth and path
    length.  What is the sysroot's own comes first: every path (members and link
    targets) has ``/bin``, ``/sbin`` and ``/lib*`` merged into ``/usr`` so that links
    and the things they name agree, and absolute symlink targets are taken as relative
    to the sysroot root and rewritten relative to the link.  *archive_size* is the
    compressed member's size (None: not known, the ratio is not checked).  Raises
    :class:`SysrootError`.
    """
    planner = Planner(package, archive_name, archive_size, limits, "tree", _DEB_ADVICE)
    plan: list[DebEntry] = []
    by_rel: dict[str, DebEntry] = {}
    try:
        for raw in members:
            merged = _merged(raw, planner)
            if merged is None:
                continue
            planned = planner.add(merged)
            if not planned.rel:
                continue
            entry: DebEntry
            if planned.kind == "symlink":
                entry = DebEntry(raw.name, planned.rel, "symlink", False, planned.link)
            elif planned.kind == "hardlink":
                found = by_rel[planned.link]
                entry = DebEntry(raw.name, planned.rel, "hardlink", found.executable, planned.link)
            else:  # a repeated file is written again, the later one winning, as dpkg does
                kind: Literal["file", "dir"] = "dir" if planned.kind == "dir" else "file"
                entry = DebEntry(raw.name, planned.rel, kind, bool(raw.mode & 0o111))
            plan.append(entry)
            by_rel.setdefault(planned.rel, entry)
        planner.finish()
    except ExtractError as e:
        raise SysrootError(str(e)) from e
    return plan


def _merged(raw: RawMember, planner: Planner) -> RawMember | None:
    """*raw* with its path and link target merged into ``/usr`` and an absolute symlink
    target made relative; None for a link that merging makes point at itself (``lib64 ->
    usr/lib64``: the directory it stood for is merged already).  A path the planner will
    refuse anyway is passed on unchanged, for the planner's message."""

    def merge(path: str) -> str | None:
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if path.startswith("/") or "\0" in path or ".." in parts or not parts:
            return None
        return "/".join(_merge_usr(parts))

    name = merge(raw.name)
    if name is None:
        return raw
    if raw.kind == "hardlink":
        return replace(raw, name=name, link=merge(raw.link) or raw.link)
    if raw.kind != "symlink" or not raw.link or "\0" in raw.link:
        return replace(raw, name=name)
    parent = [p for p in raw.name.split("/") if p not in ("", ".")][:-1]
    absolute = raw.link.startswith("/")
    target = resolve_path([] if absolute else parent, raw.link.lstrip("/"))
    if target is None:
        raise planner.refuse(raw.name, f"is a symlink to '{raw.link}', which leaves the sysroot")
    target = _merge_usr(target)
    if "/".join(target) == name:
        return None
    link = posixpath.relpath("/" + "/".join(target), "/" + name.rpartition("/")[0])
    return replace(raw, name=name, link=link)


class DebWriter:
    """Writes planned entries below *root*, never through a symlink.

    Every parent directory is created here and checked to resolve to exactly its
    lexical path below *root*, so a symlink shipped by one package cannot redirect the
    files of another.  A later package's file replaces an earlier one's, as dpkg's
    ``Replaces`` would.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self._checked: set[str] = {""}

    def _parent(self, package: str, rel: str) -> str:
        parent = posixpath.dirname(rel)
        if parent in self._checked:
            return os.path.join(self.root, rel)
        path = os.path.join(self.root, parent)
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as e:
            raise SysrootError(
                f"{package}: cannot create directory '{parent}' in the sysroot: a file of"
                " another package is in the way"
            ) from e
        if os.path.realpath(path) != os.path.join(self.real_root, parent):
            raise SysrootError(
                f"{package}: refusing to write '{rel}': '{parent}' is reached through a"
                " symlink in the sysroot"
            )
        self._checked.add(parent)
        return os.path.join(self.root, rel)

    @staticmethod
    def _clear(path: str) -> None:
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
        elif os.path.isdir(path):
            raise IsADirectoryError(path)

    def write(self, package: str, entry: DebEntry, source: IO[bytes] | None) -> None:
        path = self._parent(package, entry.rel)
        try:
            if entry.kind == "dir":
                if os.path.islink(path) or (os.path.exists(path) and not os.path.isdir(path)):
                    raise SysrootError(
                        f"{package}: directory '{entry.rel}' is already a file or symlink in"
                        " the sysroot"
                    )
                os.makedirs(path, mode=0o755, exist_ok=True)
                self._checked.add(entry.rel)
                return
            self._clear(path)
            if entry.kind == "symlink":
                os.symlink(entry.link, path)
            elif entry.kind == "hardlink":
                shutil.copyfile(os.path.join(self.root, entry.link), path)
                os.chmod(path, 0o755 if entry.executable else 0o644)
            else:
                assert source is not None
                with open(path, "wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
                os.chmod(path, 0o755 if entry.executable else 0o644)
        except IsADirectoryError as e:
            raise SysrootError(
                f"{package}: '{entry.rel}' is a directory in the sysroot but a file in the package"
            ) from e


def unpack_deb(deb: bytes, root: Path, *, package: str, writer: DebWriter | None = None) -> None:
    """Unpack the ``data.tar`` of *deb* below *root* (checked first, then written)."""
    name, blob = deb_data_member(deb, what=package)
    tar_bytes = decompress_member(name, blob, package)
    writer = writer or DebWriter(root)
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            infos: list[tarfile.TarInfo] = []

            def raw_members() -> Iterator[RawMember]:
                # Planned while the headers are read: a member flood is refused early.
                for info in tar:
                    infos.append(info)
                    yield tar_raw(info)

            plan = plan_deb(package, raw_members(), archive_name=name, archive_size=len(blob))
            by_name = {info.name: info for info in infos}
            for entry in plan:
                source = tar.extractfile(by_name[entry.original]) if entry.kind == "file" else None
                writer.write(package, entry, source)
    except tarfile.TarError as e:
        raise SysrootError(f"{package}: its {name} is not a readable tar ({e})") from e
    except OSError as e:
        raise SysrootError(f"{package}: cannot unpack into {root}: {e}") from e


_LD_SCRIPT_PATH = re.compile(r"(?<![\w*/.])/(?!\*)[^\s()]+")


def relativise_ld_script(text: str) -> str:
    """Make a GNU ld script's absolute library paths bare names (found through ``-L``).

    glibc's ``libc.so`` says ``GROUP ( /lib/<triplet>/libc.so.6 ... )``; ld prefixes
    such paths with the sysroot only under ``--sysroot``, so a build that merely passes
    ``-L DEST/usr/lib/<triplet>`` would link against the host's files.  Bare names are
    searched in the library path, which works both ways.  Comments are left alone.
    """
    return _LD_SCRIPT_PATH.sub(lambda m: posixpath.basename(m.group(0)), text)


def fix_ld_scripts(root: Path, lib_dirs: Iterable[str]) -> list[str]:
    fixed: list[str] = []
    for rel in lib_dirs:
        directory = root / rel
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.so")):
            if path.is_symlink() or not path.is_file() or path.stat().st_size > 16384:
                continue
            head = path.read_bytes()
            if head.startswith(b"\x7fELF") or not (b"GROUP" in head or b"INPUT" in head):
                continue
            text = head.decode("utf-8", "replace")
            new = relativise_ld_script(text)
            if new != text:
                path.write_text(new, encoding="utf-8")
                fixed.append(f"{rel}/{path.name}")
    return fixed
