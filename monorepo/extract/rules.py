"""The extractor's rules: every member of an archive checked before a byte is written (step 1)."""

from __future__ import annotations

import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from monorepo.errors import ExtractError

RawKind = Literal["file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo", "other"]
Layout = Literal["sdist", "tree"]
"""``sdist``: exactly one top-level directory, stripped.  ``tree``: paths kept as they are
(a wheel, a Debian package's data)."""


MAX_LINK_TARGET = 4096
_MAX_SYMLINK_DEPTH = 40


_PLANNED_KINDS: dict[str, Literal["file", "dir", "symlink", "hardlink"]] = {
    "file": "file",
    "dir": "dir",
    "symlink": "symlink",
    "hardlink": "hardlink",
}
SDIST_ADVICE = (
    "Nothing was extracted; lock another version, or give the package a replacement source"
    " in an overlay"
)


class _SymlinkLoop(Exception):
    """Raised by :func:`resolve_path` past the kernel's link depth (ELOOP)."""


@dataclass(frozen=True)
class Limits:
    """Caps that make a decompression bomb, a member flood or a pathological tree fail fast.

    Defaults are far above any real sdist (the 117 sdists of a large scientific set
    hold at most 12 levels and 153 bytes of path below their top directory);
    ``max_ratio`` is uncompressed bytes per byte of archive (gzip of ordinary source
    code stays well under 20).  Bytes count every member: a file its size, a hard link
    the size of the file it copies, a symlink its target's length.
    """

    max_members: int = 100_000
    max_total_size: int = 2 * 1024**3
    max_ratio: float = 200.0
    max_depth: int = 128
    """Path components of a member below the top directory (``a/b/c.py`` is 3)."""
    max_path_length: int = 1024
    """UTF-8 bytes of a member's path below the top directory."""


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
    """Path below the stripped top-level directory (the whole path for the ``tree``
    layout); "" for the top directory itself."""
    kind: Literal["file", "dir", "symlink", "hardlink", "duplicate"]
    size: int
    """Bytes it writes: a file's size, a hard link's target's size, else 0."""
    executable: bool
    link: str
    """Symlink target as stored, or the ``rel`` of a hard link's target file."""


def file_mode(executable: bool) -> int:
    return 0o755 if executable else 0o644


def _shown(name: str) -> str:
    """A member name for a message: a hostile one can be thousands of characters long."""
    return name if len(name) <= 200 else f"{name[:120]}...{name[-60:]} ({len(name)} characters)"


@dataclass
class Planner:
    """The checks of step 1, fed member by member so limits apply while reading.

    Pure: it sees member descriptions only, never the file system, so every rule
    can be tested without building an archive.  *archive_size* None means the
    archive's size is unknown (a member list checked on its own): the ratio is then
    not checked.  *advice* closes every refusal: what the user can do about it.
    """

    package: str
    archive_name: str
    archive_size: int | None
    limits: Limits = DEFAULT_LIMITS
    layout: Layout = "sdist"
    advice: str = SDIST_ADVICE
    members: list[PlannedMember] = field(default_factory=list, init=False)
    _top: str | None = field(default=None, init=False)
    _top_member: str = field(default="", init=False)
    _by_rel: dict[str, PlannedMember] = field(default_factory=dict, init=False)
    _total: int = field(default=0, init=False)

    @property
    def top(self) -> str:
        """The sdist's top-level directory ("" before the first member, or for a tree)."""
        return self._top or ""

    def refuse(self, member: str, reason: str) -> ExtractError:
        """The one message shape every refusal uses: package, archive, member, reason.

        The closing advice is the same for every rule because the remedy is: this file
        must not be unpacked, so another version or an overlay's replacement source is
        needed.
        """
        return ExtractError(
            f"{self.package}: refusing {self.archive_name}: member '{_shown(member)}'"
            f" {reason}. {self.advice}"
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
            raise self.refuse(name, f"{described}, which an archive must not contain")
        if raw.kind == "file":
            self._count_size(name, raw.size)
        if not parts:
            if raw.kind != "dir":
                raise self.refuse(name, "names the archive root but is not a directory")
            return self._record(PlannedMember(name, "", "dir", 0, False, ""), skip=True)
        if self.layout == "tree":
            below = parts
        else:
            top, below = parts[0], parts[1:]
            if self._top is None:
                self._top, self._top_member = top, name
            elif top != self._top:
                raise self.refuse(
                    name,
                    f"is under the top-level directory '{top}' but '{self._top_member}' is"
                    f" under '{self._top}'; an sdist holds exactly one top-level directory",
                )
            if not below:
                if raw.kind != "dir":
                    raise self.refuse(
                        name,
                        "is the archive's top-level entry but not a directory; an sdist"
                        " holds exactly one top-level directory",
                    )
                return self._record(PlannedMember(name, "", "dir", 0, False, ""), skip=True)
        rel = "/".join(below)
        self._check_shape(name, below, rel)
        earlier = self._by_rel.get(rel)
        if earlier is not None and earlier.kind == raw.kind == "dir":
            # A directory listed twice is harmless: nothing is written twice.
            return self._record(PlannedMember(name, rel, "dir", 0, False, ""), skip=True)
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
        if earlier is not None:
            raise self.refuse(
                name, f"is a duplicate of '{_shown(earlier.original)}' (same path once normalised)"
            )
        link = raw.link
        size = raw.size if raw.kind == "file" else 0
        if raw.kind == "symlink":
            if not link:
                raise self.refuse(name, "is a symlink with an empty target")
            if "\0" in link:
                raise self.refuse(name, "is a symlink whose target contains a NUL byte")
            if link.startswith("/"):
                raise self.refuse(name, f"is a symlink to the absolute path '{_shown(link)}'")
            if len(link.encode("utf-8", "surrogateescape")) > MAX_LINK_TARGET:
                raise self.refuse(name, "is a symlink with an over-long target")
            self._count_size(name, len(link))
        elif raw.kind == "hardlink":
            link, size = self._hardlink_target(name, raw.link)
            self._count_size(name, size, link_to=raw.link)
        kind = _PLANNED_KINDS[raw.kind]
        planned = PlannedMember(name, rel, kind, size, bool(raw.mode & 0o111), link)
        return self._record(planned)

    def _check_shape(self, name: str, parts: list[str], rel: str) -> None:
        """Depth and path length: the walks that later hash, verify and remove the tree
        (and every tool a user points at it) must be able to reach each path."""
        limits = self.limits
        if len(parts) > limits.max_depth:
            raise self.refuse(
                name,
                f"is nested {len(parts)} levels deep, over the limit of {limits.max_depth} levels",
            )
        if len(rel) * 4 <= limits.max_path_length:
            return  # nearly every path: short enough in any encoding, nothing to encode
        length = len(rel.encode("utf-8", "surrogateescape"))
        if length > limits.max_path_length:
            raise self.refuse(
                name,
                f"has a path of {length} bytes, over the limit of {limits.max_path_length} bytes",
            )

    def _count_size(self, name: str, size: int, *, link_to: str | None = None) -> None:
        self._total += max(size, 0)
        what = (
            f"is a hard link to '{_shown(link_to)}', extracted as a copy of its {size} bytes,"
            " which brings"
            if link_to is not None
            else "brings"
        )
        if self._total > self.limits.max_total_size:
            raise self.refuse(
                name,
                f"{what} the uncompressed size to {self._total} bytes, over the limit of"
                f" {self.limits.max_total_size}",
            )
        if self.archive_size is None:
            return
        ratio = self._total / max(self.archive_size, 1)
        if ratio > self.limits.max_ratio:
            raise self.refuse(
                name,
                f"{what} the uncompressed size to {self._total} bytes, {ratio:.0f} times the"
                f" archive's {self.archive_size} bytes, over the limit of"
                f" {self.limits.max_ratio:g} (a decompression bomb?)",
            )

    def _hardlink_target(self, name: str, target: str) -> tuple[str, int]:
        """The ``rel`` of the file a hard link copies, and that file's size."""
        parts = self._components(name, target, "hard link target")
        if self.layout == "tree":
            below = parts
        elif not parts or parts[0] != self._top:
            raise self.refuse(name, f"is a hard link to '{_shown(target)}', outside the tree")
        else:
            below = parts[1:]
        found = self._by_rel.get("/".join(below))
        if found is None or found.kind not in ("file", "hardlink"):
            raise self.refuse(
                name,
                f"is a hard link to '{_shown(target)}', which is not an earlier regular file"
                " in the archive",
            )
        return (found.link if found.kind == "hardlink" else found.rel), found.size

    def _record(self, planned: PlannedMember, *, skip: bool = False) -> PlannedMember:
        self.members.append(planned)
        if not skip:
            self._by_rel[planned.rel] = planned
        return planned

    def finish(self) -> list[PlannedMember]:
        """The whole-archive checks, once every member is known; returns the plan."""
        if self._top is None and self.layout == "sdist":
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
                    f"lies under '{_shown(ancestor.original)}', which is {what}, not a directory",
                )

    def _check_symlink(self, planned: PlannedMember, links: dict[str, str]) -> None:
        parent = planned.rel.split("/")[:-1]
        try:
            inside = resolve_path(parent, planned.link, links) is not None
        except _SymlinkLoop:
            inside = False
            reason = "is part of a symlink loop"
        else:
            reason = f"is a symlink to '{_shown(planned.link)}', which leaves the extracted tree"
        if not inside:
            raise self.refuse(planned.original, reason)


def resolve_path(
    base: Sequence[str], target: str, links: Mapping[str, str] | None = None, depth: int = 0
) -> list[str] | None:
    """Where *target*, relative to directory *base*, lands: None if it leaves the root.

    Follows the archive's own symlinks (*links*: rel path -> target) the way the kernel
    would once they all exist, so ``x -> d/..`` with ``d -> .`` is seen to escape even
    though it looks harmless lexically; without *links* it is a lexical normalisation.
    Raises _SymlinkLoop past 40 links (the kernel's ELOOP).
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
        if links:
            key = "/".join(stack)
            if key in links:
                resolved = resolve_path(stack[:-1], links[key], links, depth + 1)
                if resolved is None:
                    return None
                stack = resolved
    return stack


def tar_raw(info: tarfile.TarInfo) -> RawMember:
    """A tar member as :class:`Planner` sees it (every tar the tool opens is read so)."""
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
