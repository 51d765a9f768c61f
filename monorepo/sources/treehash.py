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
import itertools
import os
import re
import stat
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Literal, TypeVar

from monorepo._core.fstree import Stamp, file_stamp
from monorepo.errors import MonorepoError

Kind = Literal["file", "symlink", "dir"]
_P = TypeVar("_P", str, Path)
_D = TypeVar("_D")

MANIFEST_HEADER = "# monorepo tree manifest 1"
"""First line of a manifest; the number is the format of the tree hash definition."""

_KINDS: dict[str, Kind] = {"file": "file", "symlink": "symlink", "dir": "dir"}
_PARALLEL_THRESHOLD = 16
"""Below this many files a thread pool costs more than it saves."""
_READ_SIZE = 1 << 20
"""Bytes per read: large enough that hashlib releases the GIL for nearly every byte hashed."""
_BATCH = 32
"""Files a hashing thread takes at a time: one handover per batch, not one future per file."""
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
_HEX64 = re.compile(r"[0-9a-f]{64}")


class TreeHashError(MonorepoError):
    """A tree cannot be hashed (special file, unreadable file) or a manifest is malformed."""

    code = "tree-hash"


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


def hash_entries(entries: Mapping[str, Entry]) -> str:
    """The tree hash of a set of entries: the definition itself, with no I/O.

    Keys are ignored in favour of ``Entry.path`` so that a caller cannot make the
    hash disagree with the entries it describes.
    """
    return _hash_keyed(_keyed(entries))


def _keyed(entries: Mapping[str, Entry]) -> list[tuple[bytes, Entry]]:
    """(path bytes, entry) in tree-hash order: a stable sort, as by :func:`_path_key`."""
    keyed = [(_path_key(e.path), e) for e in entries.values()]
    keyed.sort(key=itemgetter(0))
    return keyed


def _hash_keyed(keyed: Iterable[tuple[bytes, Entry]]) -> str:
    records = b"".join(
        f"{e.kind} {e.mode} {e.digest} ".encode("ascii") + key + b"\0" for key, e in keyed
    )
    return "sha256:" + hashlib.sha256(records).hexdigest()


def _digest(path: str | Path) -> str:
    """sha256 of a file, opened without following a symlink that replaced it meanwhile."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        return _read_digest(fd)
    finally:
        os.close(fd)


def _digest_and_mode(path: str) -> tuple[str, bool]:
    """sha256 and executable bit of a file, the bit from the very file that was read."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        return _read_digest(fd, st.st_size), bool(st.st_mode & 0o111)
    finally:
        os.close(fd)


def _read_digest(fd: int, size: int = -1) -> str:
    """Plain ``os.read`` calls of a large buffer: no file object per file (most vendored
    files are a few kB, so per-file overhead matters as much as hashing speed).

    *size*, the file's size from ``fstat`` of *fd*, saves the read that would return
    nothing when one read returned all of it (a file growing meanwhile returns more).
    """
    chunk = os.read(fd, _READ_SIZE)
    digest = hashlib.sha256(chunk)
    if len(chunk) == size and size < _READ_SIZE:
        return digest.hexdigest()
    while chunk:
        chunk = os.read(fd, _READ_SIZE)
        digest.update(chunk)
    return digest.hexdigest()


def _hash_file(path: Path) -> str:
    """sha256 of the file at *path* (what :func:`scan_tree` calls for each file it reads)."""
    return _digest(path)


def _symlink_digest(path: Path) -> str:
    target = os.readlink(path)
    return hashlib.sha256(target.encode("utf-8", "surrogateescape")).hexdigest()


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
    entries, files, fresh_stamps = _walk(root, exclude, stamps)
    digests = _hash_many([root / rel for rel, _ in files], _hash_file, _default_workers())
    for (rel, executable), digest in zip(files, digests, strict=True):
        if isinstance(digest, OSError):
            raise _read_error(root / rel, digest) from digest
        entries[rel] = Entry(rel, "file", executable, digest)
    if stamps is not None:
        for rel in [r for r in stamps if r not in entries or entries[r].kind != "file"]:
            del stamps[rel]
        for rel, stamp in fresh_stamps.items():
            stamps[rel] = (stamp, entries[rel].digest)
    return entries


def scan_trees(
    roots: Sequence[Path],
    *,
    jobs: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Entry] | TreeHashError]:
    """:func:`scan_tree` of each of *roots*, every file of every tree hashed by one pool.

    One flat pool of *jobs* threads (default: twice the CPUs, at most 8) serves many
    small trees and one large tree alike, where a pool per tree would start and stop
    threads per tree, and trees hashed in parallel each with its own pool would run far
    more threads than there are cores.  A tree that cannot be hashed gets the
    :class:`TreeHashError` in place of its entries; the other trees are still scanned.
    *progress(i)*, when given, is called (from any thread) once tree *i* is complete.
    """
    results: list[dict[str, Entry] | TreeHashError] = []
    trees: list[list[tuple[str, bool]]] = []
    paths: list[str] = []
    owners: list[int] = []
    for index, root in enumerate(roots):
        try:
            # no stat per file while listing: a hashing thread fstat()s the open file
            entries, files, _ = _walk(root, None, None, stat_files=False)
        except TreeHashError as error:
            entries, files = {}, []
            results.append(error)
        else:
            results.append(entries)
        trees.append(files)
        base = os.fspath(root)
        paths += [f"{base}/{rel}" for rel, _ in files]
        owners += [index] * len(files)
    remaining = [len(files) for files in trees]
    lock = threading.Lock()

    def finished(start: int, end: int) -> None:
        assert progress is not None
        with lock:
            for k in range(start, end):
                owner = owners[k]
                remaining[owner] -= 1
                if remaining[owner] == 0:
                    progress(owner)

    if progress is not None:
        for index, count in enumerate(remaining):
            if count == 0:
                progress(index)
    workers = jobs if jobs is not None else _default_workers()
    digests = _hash_many(
        paths, _digest_and_mode, workers, finished if progress is not None else None
    )
    k = 0
    for index, files in enumerate(trees):
        entries_or_error = results[index]
        for rel, _ in files:
            done = digests[k]
            k += 1
            if isinstance(entries_or_error, TreeHashError):
                continue
            if isinstance(done, OSError):
                entries_or_error = _read_error(roots[index] / rel, done)
                results[index] = entries_or_error
                continue
            entries_or_error[rel] = Entry(rel, "file", done[1], done[0])
    return results


def _walk(
    root: Path,
    exclude: Callable[[str], bool] | None,
    stamps: Mapping[str, tuple[Stamp, str]] | None,
    *,
    stat_files: bool = True,
) -> tuple[dict[str, Entry], list[tuple[str, bool]], dict[str, Stamp]]:
    """Every entry of *root* but the files to read, which come back as (rel, executable).

    Files whose stat stamp matches *stamps* get their digest from there; the stamps of
    the files to read are returned for the caller to record.  With *stat_files* False
    (and no *stamps*), a regular file is known from the directory listing alone and
    comes back as (rel, False): the caller takes the executable bit when it reads it.
    """
    if not root.is_dir():
        raise TreeHashError(
            f"cannot hash tree {root}: it is not a directory; run 'monorepo pull' to create it"
        )
    entries: dict[str, Entry] = {}
    files: list[tuple[str, bool]] = []
    fresh_stamps: dict[str, Stamp] = {}
    base = os.fspath(root)
    stack: list[str] = [""]
    while stack:
        rel_dir = stack.pop()
        directory = f"{base}/{rel_dir}" if rel_dir else base
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
                # the directory listing's file type saves a stat per directory
                if child.is_dir(follow_symlinks=False):
                    stack.append(rel)
                    continue
                if not stat_files and child.is_file(follow_symlinks=False):
                    files.append((rel, False))
                    continue
                st = child.stat(follow_symlinks=False)
            except OSError as e:
                raise TreeHashError(
                    f"cannot stat {child.path}: {e.strerror}; is something changing the tree?"
                ) from e
            mode = st.st_mode
            if stat.S_ISREG(mode):
                executable = bool(mode & 0o111)
                known = stamps.get(rel) if stamps is not None else None
                if known is None:
                    files.append((rel, executable))
                    if stamps is not None:
                        fresh_stamps[rel] = file_stamp(st)
                    continue
                stamp = file_stamp(st)
                if known[0] == stamp:
                    entries[rel] = Entry(rel, "file", executable, known[1])
                else:
                    files.append((rel, executable))
                    fresh_stamps[rel] = stamp
            elif stat.S_ISLNK(mode):
                entries[rel] = Entry(rel, "symlink", False, _symlink_digest(Path(child.path)))
            elif stat.S_ISDIR(mode):
                stack.append(rel)  # replaced by a directory since it was listed
            else:
                raise TreeHashError(
                    f"cannot hash {child.path}: it is a {_describe(mode)}, which a vendored"
                    " source tree must not contain; remove it"
                )
        if kept == 0 and rel_dir:
            entries[rel_dir] = Entry(rel_dir, "dir", False, "")
    return entries, files, fresh_stamps


def _read_error(path: Path, error: OSError) -> TreeHashError:
    return TreeHashError(f"cannot read {path}: {error.strerror}; check that it is a readable file")


def _default_workers() -> int:
    return min(8, (os.cpu_count() or 1) * 2)


def _hash_many(
    paths: Sequence[_P],
    hash_one: Callable[[_P], _D],
    workers: int,
    finished: Callable[[int, int], None] | None = None,
) -> list[_D | OSError]:
    """``hash_one(path)`` of every path, in order; an OSError takes the place of its digest.

    The calling thread and *workers* - 1 others take batches of paths from a shared
    counter.  No future per file: for the many small files of a source tree, handing
    work to a pool per file costs more than hashing it.  *finished(start, end)* is
    called, from the thread that did it, after each batch of indexes.
    """
    results: list[_D | OSError] = [OSError()] * len(paths)  # each one replaced
    failures: list[BaseException] = []
    total = len(paths)
    batches = itertools.count(0, _BATCH)

    def work() -> None:
        try:
            while not failures:
                start = next(batches)  # atomic: itertools.count holds the GIL
                if start >= total:
                    return
                end = min(start + _BATCH, total)
                for k in range(start, end):
                    try:
                        results[k] = hash_one(paths[k])
                    except OSError as error:
                        results[k] = error
                if finished is not None:
                    finished(start, end)
        except BaseException as error:  # re-raised by the calling thread
            failures.append(error)

    count = 1 if total < _PARALLEL_THRESHOLD else max(1, min(workers, total // _BATCH + 1))
    threads = [
        threading.Thread(target=work, name=f"treehash-{n}", daemon=True) for n in range(count - 1)
    ]
    for thread in threads:
        thread.start()
    work()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return results


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
    if path.isascii() and "\\" not in path and "\n" not in path and "\r" not in path:
        return path  # nearly every path: nothing to escape
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
    if "\\" not in text:
        return text  # nearly every path: nothing escaped
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
    return _HEX64.fullmatch(text) is not None


def manifest(entries: Mapping[str, Entry]) -> str:
    """A text listing of *entries*, one line each, that :func:`parse_manifest` reads back.

    Lines are ``<kind> <mode> <digest or -> <path>`` in tree-hash order, after a header
    and a ``# tree-hash`` comment that lets a reader detect a damaged manifest.  Paths
    escape backslash, newline, carriage return and undecodable bytes (``\\xNN``) so the
    file stays one entry per line and valid UTF-8.
    """
    return manifest_and_hash(entries)[0]


def manifest_and_hash(entries: Mapping[str, Entry]) -> tuple[str, str]:
    """(:func:`manifest`, :func:`hash_entries`) of *entries*, sorting them once."""
    keyed = _keyed(entries)
    tree = _hash_keyed(keyed)
    lines = [MANIFEST_HEADER, f"# tree-hash {tree}"]
    lines += [f"{e.kind} {e.mode} {e.digest or '-'} {_escape_path(e.path)}" for _, e in keyed]
    return "\n".join(lines) + "\n", tree


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
