"""The tree hash: one digest for a vendored directory, the same on every machine.

``pull`` records the tree hash of each ``duni/<dir>/`` in the lock and ``verify``
recomputes it, so the definition must not depend on anything but what a build can
observe: file contents, the executable bit, symlink targets and empty directories.
It ignores mtimes, owners, the absolute path of the root and the order in which the
file system lists a directory.  docs/tree-hash.md holds the same definition.

Definition (format 1)
---------------------
1. Walk *root* without following symlinks.  Every non-excluded path becomes one
   entry, named by its POSIX path relative to the root (``/`` separated):

   - a regular file: kind ``file``, mode ``755`` if any executable bit (``0o111``)
     is set and ``644`` otherwise, digest = hex sha256 of its content;
   - a symlink (to anything, dangling or not): kind ``symlink``, mode ``120000``,
     digest = hex sha256 of the UTF-8 bytes of the link target string;
   - a directory that has no non-excluded children: kind ``dir``, mode ``040000``,
     digest = the empty string.  Non-empty directories are implied by their
     children and have no entry (as in git);
   - anything else (socket, fifo, device) is an error.

   The root itself never has an entry.  ``exclude(relpath)`` drops a path, and for
   a directory everything below it; a directory whose children are all excluded
   counts as empty.
2. Sort the entries by the UTF-8 bytes of their path.
3. Serialise each entry as the bytes ``<kind> <mode> <digest> <path>\\0`` (single
   spaces, so an empty directory reads ``dir 040000  <path>\\0``).
4. The tree hash is ``"sha256:"`` + hex sha256 of the concatenation.  An empty tree
   hashes the empty string.

Paths that are not valid UTF-8 are taken as their raw bytes (Python's
``surrogateescape``), which is what a POSIX file system stores.

The per-entry records (:func:`scan_tree`) are kept as well as the digest so that
``verify`` can say *which* files differ (:func:`diff_entries`) and so that ``pull``
can store a :func:`manifest` beside duni/ to diagnose local edits later.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from monorepo.errors import MonorepoError

Kind = Literal["file", "symlink", "dir"]

MANIFEST_HEADER = "# monorepo tree manifest 1"
"""First line of a manifest; the number is the format of the tree hash definition."""

_KINDS: dict[str, Kind] = {"file": "file", "symlink": "symlink", "dir": "dir"}
_PARALLEL_THRESHOLD = 16
"""Below this many files a thread pool costs more than it saves."""


class TreeHashError(MonorepoError):
    """A tree cannot be hashed (special file, unreadable file) or a manifest is malformed."""


@dataclass(frozen=True)
class Entry:
    """One path of a tree as the hash sees it: everything else is deliberately dropped."""

    path: str
    kind: Kind
    executable: bool
    digest: str

    @property
    def mode(self) -> str:
        """The git-like mode string that the record carries."""
        if self.kind == "file":
            return "755" if self.executable else "644"
        if self.kind == "symlink":
            return "120000"
        return "040000"


def _path_key(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _record(entry: Entry) -> bytes:
    return (
        f"{entry.kind} {entry.mode} {entry.digest} ".encode("ascii") + _path_key(entry.path) + b"\0"
    )


def hash_entries(entries: Mapping[str, Entry]) -> str:
    """The tree hash of a set of entries: the definition itself, with no I/O.

    Keys are ignored in favour of ``Entry.path`` so that a caller cannot make the
    hash disagree with the entries it describes.
    """
    digest = hashlib.sha256()
    for entry in sorted(entries.values(), key=lambda e: _path_key(e.path)):
        digest.update(_record(entry))
    return "sha256:" + digest.hexdigest()


def _hash_file(path: Path) -> str:
    """sha256 of a file, opened without following a symlink that replaced it meanwhile."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _symlink_digest(path: Path) -> str:
    target = os.readlink(path)
    return hashlib.sha256(target.encode("utf-8", "surrogateescape")).hexdigest()


#: what identifies an unchanged file without reading it: size, mtime, inode, ctime (ns)
Stamp = tuple[int, int, int, int]


def file_stamp(st: os.stat_result) -> Stamp:
    """The stat fields a content change cannot leave all equal (ctime moves on any write,
    even one that restores the mtime), as git's index uses them."""
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def scan_tree(
    root: Path,
    *,
    exclude: Callable[[str], bool] | None = None,
    stamps: dict[str, tuple[Stamp, str]] | None = None,
) -> dict[str, Entry]:
    """Entries of the tree under *root*, keyed by relative POSIX path.

    Symlinks are recorded, never followed, so a link pointing outside the tree cannot
    pull foreign content into the hash.  Files are hashed in a thread pool because
    hashlib releases the GIL: ``verify`` over a large duni/ runs at disk speed.

    *stamps* (a stat cache, rel -> (stamp, digest)) lets a caller that saw this tree
    before skip re-reading files whose stamp is unchanged; it is updated in place to
    describe the tree as scanned.  ``verify`` never passes one: an audit reads everything.
    """
    if not root.is_dir():
        raise TreeHashError(
            f"cannot hash tree {root}: it is not a directory; run 'monorepo pull' to create it"
        )
    entries: dict[str, Entry] = {}
    files: list[tuple[str, bool]] = []
    fresh_stamps: dict[str, Stamp] = {}
    stack: list[str] = [""]
    while stack:
        rel_dir = stack.pop()
        directory = root / rel_dir if rel_dir else root
        kept = 0
        try:
            with os.scandir(directory) as it:
                children = list(it)
        except OSError as e:
            raise TreeHashError(
                f"cannot list {directory}: {e.strerror}; check its permissions"
            ) from e
        for child in children:
            rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
            if exclude is not None and exclude(rel):
                continue
            kept += 1
            try:
                st = child.stat(follow_symlinks=False)
            except OSError as e:
                raise TreeHashError(
                    f"cannot stat {child.path}: {e.strerror}; is something changing the tree?"
                ) from e
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = Entry(rel, "symlink", False, _symlink_digest(Path(child.path)))
            elif stat.S_ISDIR(st.st_mode):
                stack.append(rel)
            elif stat.S_ISREG(st.st_mode):
                known = stamps.get(rel) if stamps is not None else None
                stamp = file_stamp(st)
                if known is not None and known[0] == stamp:
                    entries[rel] = Entry(rel, "file", bool(st.st_mode & 0o111), known[1])
                else:
                    files.append((rel, bool(st.st_mode & 0o111)))
                    if stamps is not None:
                        fresh_stamps[rel] = stamp
            else:
                raise TreeHashError(
                    f"cannot hash {child.path}: it is a {_describe(st.st_mode)}, which a vendored"
                    " source tree must not contain; remove it"
                )
        if kept == 0 and rel_dir:
            entries[rel_dir] = Entry(rel_dir, "dir", False, "")
    for rel, digest, executable in _hash_files(root, files):
        entries[rel] = Entry(rel, "file", executable, digest)
    if stamps is not None:
        for rel in [r for r in stamps if r not in entries or entries[r].kind != "file"]:
            del stamps[rel]
        for rel, stamp in fresh_stamps.items():
            stamps[rel] = (stamp, entries[rel].digest)
    return entries


def _hash_files(root: Path, files: list[tuple[str, bool]]) -> Iterable[tuple[str, str, bool]]:
    def one(item: tuple[str, bool]) -> tuple[str, str, bool]:
        rel, executable = item
        try:
            return rel, _hash_file(root / rel), executable
        except OSError as e:
            raise TreeHashError(
                f"cannot read {root / rel}: {e.strerror}; check that it is a readable file"
            ) from e

    if len(files) < _PARALLEL_THRESHOLD:
        return [one(item) for item in files]
    workers = min(32, (os.cpu_count() or 1) * 4)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, files))


def _describe(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"


def tree_hash(root: Path, *, exclude: Callable[[str], bool] | None = None) -> str:
    """``"sha256:<hex>"`` of the tree under *root* (see the module docstring)."""
    return hash_entries(scan_tree(root, exclude=exclude))


@dataclass(frozen=True)
class TreeDiff:
    """What differs between a recorded tree and the one on disk, per path, sorted."""

    modified: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    mode_changed: tuple[str, ...]
    type_changed: tuple[str, ...]

    def is_empty(self) -> bool:
        """True when the two trees hash the same."""
        return not (
            self.modified or self.added or self.removed or self.mode_changed or self.type_changed
        )


def _sorted(paths: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(paths, key=_path_key))


def _has_children(path: str, entries: Mapping[str, Entry]) -> bool:
    prefix = path + "/"
    return any(p.startswith(prefix) for p in entries)


def diff_entries(expected: Mapping[str, Entry], actual: Mapping[str, Entry]) -> TreeDiff:
    """Classify every difference so that ``verify`` can name each edited file.

    A file whose content and executable bit both changed is listed in ``modified`` and
    in ``mode_changed``.  An empty directory that gained (or a directory that lost all)
    files is not reported itself: the files are, and they explain the change.
    """
    modified: list[str] = []
    mode_changed: list[str] = []
    type_changed: list[str] = []
    for path in expected.keys() & actual.keys():
        old, new = expected[path], actual[path]
        if old.kind != new.kind:
            type_changed.append(path)
            continue
        if old.digest != new.digest:
            modified.append(path)
        if old.kind == "file" and old.executable != new.executable:
            mode_changed.append(path)
    added = [
        p
        for p in actual.keys() - expected.keys()
        if not (actual[p].kind == "dir" and _has_children(p, expected))
    ]
    removed = [
        p
        for p in expected.keys() - actual.keys()
        if not (expected[p].kind == "dir" and _has_children(p, actual))
    ]
    return TreeDiff(
        modified=_sorted(modified),
        added=_sorted(added),
        removed=_sorted(removed),
        mode_changed=_sorted(mode_changed),
        type_changed=_sorted(type_changed),
    )


def _escape_path(path: str) -> str:
    out: list[str] = []
    for ch in path:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def _unescape_path(text: str, lineno: int) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt == "\\":
            out.append("\\")
            i += 2
        elif nxt == "n":
            out.append("\n")
            i += 2
        elif nxt == "r":
            out.append("\r")
            i += 2
        elif nxt == "x" and len(text) >= i + 4:
            try:
                byte = int(text[i + 2 : i + 4], 16)
            except ValueError:
                byte = -1
            if not 0x80 <= byte <= 0xFF:
                raise _manifest_error(lineno, f"bad escape {text[i : i + 4]!r}")
            out.append(chr(0xDC00 + byte))
            i += 4
        else:
            raise _manifest_error(lineno, f"bad escape {text[i : i + 2]!r}")
    return "".join(out)


def _manifest_error(lineno: int, reason: str) -> TreeHashError:
    return TreeHashError(
        f"tree manifest line {lineno}: {reason}; the manifest is damaged, run 'monorepo pull'"
        " to rewrite it"
    )


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def manifest(entries: Mapping[str, Entry]) -> str:
    """A text listing of *entries*, one line each, that :func:`parse_manifest` reads back.

    Lines are ``<kind> <mode> <digest or -> <path>`` in tree-hash order, after a header
    and a ``# tree-hash`` comment that lets a reader detect a damaged manifest.  Paths
    escape backslash, newline, carriage return and undecodable bytes (``\\xNN``) so the
    file stays one entry per line and valid UTF-8.
    """
    lines = [MANIFEST_HEADER, f"# tree-hash {hash_entries(entries)}"]
    for entry in sorted(entries.values(), key=lambda e: _path_key(e.path)):
        digest = entry.digest or "-"
        lines.append(f"{entry.kind} {entry.mode} {digest} {_escape_path(entry.path)}")
    return "\n".join(lines) + "\n"


def parse_manifest(text: str) -> dict[str, Entry]:
    """Entries from a :func:`manifest`, checked against its recorded tree hash."""
    lines = text.splitlines()
    if not lines or lines[0] != MANIFEST_HEADER:
        raise _manifest_error(1, f"expected the header {MANIFEST_HEADER!r}")
    recorded: str | None = None
    entries: dict[str, Entry] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith("# tree-hash "):
                recorded = line.removeprefix("# tree-hash ")
            continue
        parts = line.split(" ", 3)
        if len(parts) != 4:
            raise _manifest_error(lineno, "expected '<kind> <mode> <digest> <path>'")
        name, mode, digest, raw_path = parts
        kind = _KINDS.get(name)
        if kind is None:
            raise _manifest_error(lineno, f"unknown kind {name!r}")
        if digest != "-" and not _is_sha256(digest):
            raise _manifest_error(lineno, f"digest {digest!r} is not a sha256 hex digest")
        entry = Entry(
            path=_unescape_path(raw_path, lineno),
            kind=kind,
            executable=kind == "file" and mode == "755",
            digest="" if digest == "-" else digest,
        )
        if entry.mode != mode:
            raise _manifest_error(lineno, f"mode {mode!r} does not fit kind {kind!r}")
        if (kind == "dir") != (digest == "-"):
            raise _manifest_error(lineno, "only empty directories have no digest ('-')")
        if entry.path in entries:
            raise _manifest_error(lineno, f"path {entry.path!r} is listed twice")
        entries[entry.path] = entry
    if recorded is not None and recorded != hash_entries(entries):
        raise _manifest_error(len(lines), f"the entries do not hash to the recorded {recorded}")
    return entries
