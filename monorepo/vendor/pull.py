"""``monorepo pull``: bring ``duni/`` in line with pylock.toml, one package at a time, atomically.

Each locked source becomes ``duni/<dir>/`` (fetched, extracted or exported, patched:
see :mod:`monorepo.sources`).  Pull is incremental, never half-done, and never
silently destroys work, so it keeps a record of what it wrote:

``duni/.monorepo/<dir>.manifest``
    the per-file manifest (:func:`monorepo.treehash.manifest`) of the tree pull last
    placed at ``duni/<dir>``, plus a ``# source`` line (the source's URL, size and
    sha256, or git URL and commit) and an ``# input`` line, a digest of the lock entry
    it was built from (that source and the patch hashes).
``duni/.monorepo/<dir>.pending``
    the manifest of a tree pull is about to rename into place (exists only while
    that happens, or after a run was killed in the middle of it).
``duni/.monorepo/<dir>.stat`` and ``<dir>.facts``
    caches keyed by what they describe: file stamps (so an unchanged file is not read
    again) and, under the tree hash, the facts workspace.toml takes from the tree.
``duni/.monorepo/lock``
    a file lock: two pulls of the same project serialise instead of interleaving.
    The extraction workers inherit it, so it stays taken until every process of a
    pull is gone, even a killed one's.
``duni/.monorepo/.gitignore``
    ``*``: the records describe this checkout, they are not to be committed.

None of these is ever reached through a symbolic link: duni/ is committed, so a
branch could plant ``duni/.monorepo`` (or a file in it) as a link to elsewhere.
Pull refuses to run until it is removed (:func:`state_problems`).

Rules, per locked package:

* **Up to date** when the manifest's input is this lock entry (the same source URL,
  size and sha256, or commit, and patches) and ``duni/<dir>`` hashes to the lock's
  ``tree-hash`` (to the manifest's when the lock has none).  Such a directory is not
  touched.  The source identity is checked whatever the tree hash says: when the
  lock names another source than the one vendored (or there is no record of it),
  the source is fetched again, a cached file only if it was downloaded from that
  very URL, and must match the lock, so an edited hash, size or URL fails with a
  hash mismatch instead of being recorded as describing the tree already there.
* Otherwise the tree is built beside it (``duni/.tmp-<dir>-new-*``).  If the lock
  records a tree hash and the new tree differs, pull stops: the upstream source or
  an overlay changed since ``lock``.  If the existing directory already has the new
  content it is adopted (only the manifest is written).
* A directory is **pull's own** when its content equals a manifest pull wrote:
  ``<dir>.manifest``, or ``<dir>.pending`` (which proves a run was killed after
  renaming that very tree into place).  Pull replaces or removes only its own
  directories.  A directory with a manifest but other content was **edited
  locally**; one without any record **was not created by pull**.  Both are refused,
  naming the edited files, unless ``force=True``.
* Replacement: write ``<dir>.pending``, rename the old directory aside
  (``.tmp-<dir>-old-*``), rename the new one in, rename ``.pending`` to
  ``.manifest``, delete the old one.  A SIGKILL at any point leaves either the old
  tree with its manifest, no tree (rebuilt next time), or the new tree with a
  ``.pending`` that matches it; the next pull deletes every ``.tmp-*`` left behind
  at its start and finishes the job.
* Directories the lock no longer names are removed when they are pull's own,
  refused when edited (unless forced), and left alone with a warning when pull
  never created them.  (Only when pulling every package; a partial pull removes
  nothing.)

``duni/README.md`` and ``duni/workspace.toml`` are regenerated after a successful
pull and rewritten only when their content changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import queue
import secrets
import shlex
import stat
import struct
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import filelock
from packaging.utils import canonicalize_name

from monorepo._core.atomic import write_bytes, write_text_if_changed
from monorepo._core.fstree import remove_tree
from monorepo._core.reporter import NullReporter, Reporter
from monorepo.errors import HashMismatchError, LockFileError, MonorepoError, PullError, disk_full
from monorepo.extract.archive import ExtractorPool
from monorepo.overlays.rules import Overlay, load_overlays
from monorepo.project import lockfile
from monorepo.project.config import load_config
from monorepo.project.lockfile import (
    ArchiveSource,
    LockDocument,
    LockedPackage,
    SdistSource,
    VcsSource,
)
from monorepo.sources.fetch import STAGING_PREFIX, Fetch, fetch_source, materialize_entries
from monorepo.sources.patches import Patch
from monorepo.sources.store import ContentStore
from monorepo.sources.treehash import (
    Entry,
    Stamp,
    TreeHashError,
    diff_entries,
    hash_entries,
    manifest,
    parse_manifest,
    scan_tree,
)
from monorepo.vendor.workspace import TreeFacts, read_tree_facts, render, workspace_data

__all__ = [
    "STATE_DIR",
    "PullResult",
    "describe_source_change",
    "pull",
    "source_identity",
    "state_problems",
]

STATE_DIR = ".monorepo"
"""pull's records inside duni/ (manifests, the file lock)."""
_GENERATED = frozenset({"README.md", "workspace.toml"})
STATE_GITIGNORE = """\
# Written by `monorepo pull`: its records of the trees it placed in duni/ on this
# machine (manifests, file stamps, its lock).  They describe this checkout only and
# are not committed; `monorepo pull` rebuilds them from the sources.
*
"""
_MAX_LISTED = 20

README = """\
# duni/: vendored sources

This directory is generated by `monorepo pull` from `pylock.toml`: one directory per
locked package (its sdist, archive or git commit, with the overlay's patches applied),
plus `workspace.toml`, which describes how to build them and in what order.

Do not edit it by hand.  To reproduce it exactly, from the project directory:

    monorepo lock && monorepo pull

To check that it still matches the lock, file by file:

    monorepo verify

A change to a vendored package belongs in an overlay patch (then `monorepo lock`);
`monorepo pull` refuses to overwrite local edits unless given `--force`.
`.monorepo/` holds pull's records of what it wrote on this machine (not committed:
it has its own `.gitignore`); leave it alone.
"""


@dataclass
class PullResult:
    """What a pull did, by directory name under ``duni``."""

    duni: Path
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        data = asdict(self)
        data["duni"] = str(self.duni)
        return data


@dataclass(frozen=True)
class _Record:
    """A manifest pull wrote: the entries of a tree and the lock entry it came from."""

    entries: Mapping[str, Entry]
    key: str | None
    source: Mapping[str, Any] | None = None
    """:func:`source_identity` of the lock entry (None in a record without it)."""

    @property
    def hash(self) -> str:
        return hash_entries(self.entries)


@dataclass(frozen=True)
class _Outcome:
    status: Literal["updated", "unchanged", "refused"]
    refusal: str = ""
    tree_hash: str | None = None
    """The tree hash of duni/<dir> as this run found or made it (not for refusals)."""
    entries: Mapping[str, Entry] | None = None
    """The entries of that tree."""


# ------------------------------------------------------------------ small file helpers


def _write_atomic(path: Path, text: str) -> bool:
    """Write *text* through a ``.tmp-`` file and a rename; False when already equal."""
    return write_text_if_changed(path, text, prefix=f"{STAGING_PREFIX}{path.name}-")


def _read_stamps(path: Path) -> dict[str, tuple[Stamp, str]]:
    """The stat cache of one directory; empty when missing or damaged (then files are read)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {rel: ((v[0], v[1], v[2], v[3]), str(v[4])) for rel, v in raw.items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return {}


def _write_stamps(path: Path, stamps: Mapping[str, tuple[Stamp, str]]) -> None:
    data = {rel: [*stamp, digest] for rel, (stamp, digest) in sorted(stamps.items())}
    with contextlib.suppress(OSError):
        write_bytes(
            path,
            json.dumps(data, separators=(",", ":")).encode(),
            prefix=f"{STAGING_PREFIX}{path.name}-",
        )


def _remove(path: Path) -> None:
    remove_tree(path)  # iterative: a tree of any depth (shutil.rmtree recurses on 3.11)


def source_identity(pkg: LockedPackage) -> dict[str, Any]:
    """What the lock entry says its source is: URL, size and sha256, or git URL and commit.

    Pull records it with every tree it writes and compares it with the lock on every
    run, whatever the tree hash says: a lock whose sha256, size or URL was edited
    (by hand, or by a branch) names another source than the one vendored, and pull
    must fetch that source and check it rather than keep the old tree under the new
    name (see :meth:`_Puller.sync`).
    """
    source = pkg.source
    if isinstance(source, VcsSource):
        return {
            "kind": "git",
            "url": source.url,
            "commit": source.commit,
            "subdirectory": source.subdirectory,
        }
    kind = "sdist" if isinstance(source, SdistSource) else "archive"
    return {"kind": kind, "url": source.url, "sha256": source.sha256.lower(), "size": source.size}


def describe_source_change(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """``sha256 abc -> def, size 10 -> 11``: the fields of two source identities that differ."""
    if old is None:
        return "the record of the pull does not name its source (written by an older monorepo)"
    parts = [
        f"{field} {old.get(field)} -> {new.get(field)}"
        for field in ("kind", "url", "sha256", "size", "commit", "subdirectory")
        if old.get(field) != new.get(field)
    ]
    return ", ".join(parts) if parts else "the overlay patches changed"


def _record_text(entries: Mapping[str, Entry], identity: Mapping[str, Any], key: str) -> str:
    source = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return manifest(entries) + f"# source {source}\n# input {key}\n"


def _read_record(path: Path) -> _Record | None:
    """The record at *path*, or None when absent or damaged (then it proves nothing)."""
    try:
        text = path.read_text(encoding="utf-8")
        entries = parse_manifest(text)
    except (OSError, UnicodeDecodeError, TreeHashError):
        return None
    key = None
    source: Mapping[str, Any] | None = None
    for line in text.splitlines():
        if line.startswith("# input "):
            key = line.removeprefix("# input ")
        elif line.startswith("# source "):
            source = _parse_source(line.removeprefix("# source "))
    return _Record(entries, key, source)


def _parse_source(text: str) -> Mapping[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _input_key(pkg: LockedPackage, patches: Sequence[Patch]) -> str:
    """A digest of everything in the lock entry that decides the tree's content.

    The source's URL is part of it: a hash proves what bytes are, but the lock also
    says where they come from, and an edited URL (another version's file name) must
    be checked like an edited hash.
    """
    data = {
        "source": source_identity(pkg),
        "patches": [[p.path, p.sha256] for p in patches],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _describe_diff(recorded: Mapping[str, Entry], current: Mapping[str, Entry]) -> str:
    diff = diff_entries(recorded, current)
    parts: list[str] = []
    listed = 0
    for label, paths in (
        ("modified", diff.modified),
        ("added", diff.added),
        ("removed", diff.removed),
        ("mode changed", tuple(p for p in diff.mode_changed if p not in diff.modified)),
        ("type changed", diff.type_changed),
    ):
        if not paths:
            continue
        room = max(0, _MAX_LISTED - listed)
        shown = list(paths[:room])
        listed += len(shown)
        more = f" and {len(paths) - len(shown)} more" if len(paths) > len(shown) else ""
        parts.append(f"{label} {', '.join(shown)}{more}" if shown else f"{label}: {len(paths)}")
    return "; ".join(parts)


_TOPDIR_FLAG = 0x00020000
"""``FS_TOPDIR_FL`` (``chattr +T``): "the top of a directory hierarchy" for ext2/3/4."""
_GENERIC_IOCTL_MACHINES = ("x86_64", "amd64", "i386", "i686", "aarch64", "arm64", "riscv64")


def _spread_package_trees(duni: Path) -> None:
    """Ask the file system to place each tree under *duni* in its own block group.

    ext4's allocator (Orlov) keeps a directory's subdirectories in their parent's
    group unless the parent is marked as the top of a hierarchy.  Without a journal,
    ext4 also skips inodes freed in the last seconds, one by one, for every new file:
    after a large tree was deleted nearby (a previous duni/, a replaced package),
    extraction slows down tenfold.  Each package tree is a hierarchy of its own, so
    duni/ gets the flag.  Best effort: other file systems and systems ignore it.
    """
    if sys.platform != "linux" or platform.machine() not in _GENERIC_IOCTL_MACHINES:
        return
    size = struct.calcsize("l")
    get_flags = (2 << 30) | (size << 16) | (ord("f") << 8) | 1  # _IOR('f', 1, long)
    set_flags = (1 << 30) | (size << 16) | (ord("f") << 8) | 2  # _IOW('f', 2, long)
    import fcntl  # POSIX only

    try:
        fd = os.open(duni, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        buffer = bytearray(size)
        fcntl.ioctl(fd, get_flags, buffer)
        flags = struct.unpack_from("i", buffer)[0]
        if not flags & _TOPDIR_FLAG:
            struct.pack_into("i", buffer, 0, flags | _TOPDIR_FLAG)
            fcntl.ioctl(fd, set_flags, buffer)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------------- overlays


def _patches_for(
    packages: Sequence[LockedPackage], lock: LockDocument, *, base: Path, offline: bool
) -> dict[str, tuple[Patch, ...]]:
    """Each package's overlay patches (by dir), read from the overlays the lock pins."""
    wanted = [p for p in packages if p.tool.get("patches")]
    if not wanted:
        return {}
    listed = lock.inputs.get("overlays", [])
    by_name: dict[str, Mapping[str, Any]] = {
        str(o.get("name")): o for o in listed if isinstance(o, Mapping)
    }
    needed: dict[str, Mapping[str, Any]] = {}
    for pkg in wanted:
        meta = pkg.tool.get("overlay")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if not isinstance(name, str) or name not in by_name:
            raise LockFileError(
                f"pylock.toml: {pkg.name} {pkg.version} has patches but names no overlay of"
                " [tool.monorepo.inputs] overlays; run `monorepo lock` to regenerate the lock"
            )
        needed[name] = by_name[name]
    specs = [str(needed[n]["spec"]) for n in sorted(needed)]
    pinned = {
        str(o["spec"]): str(o["fingerprint"])
        for o in needed.values()
        if str(o["spec"]).startswith("git+") and o.get("fingerprint")
    }
    loaded = load_overlays(specs, base=base, offline=offline, pinned=pinned)
    overlays: dict[str, Overlay] = {o.spec: o for o in loaded.overlays}
    out: dict[str, tuple[Patch, ...]] = {}
    for pkg in wanted:
        meta = pkg.tool["overlay"]
        overlay = overlays[str(needed[meta["name"]]["spec"])]
        out[pkg.dir] = tuple(_patch(pkg, overlay, entry) for entry in pkg.tool.get("patches", ()))
    return out


def _patch(pkg: LockedPackage, overlay: Overlay, entry: Mapping[str, Any]) -> Patch:
    path, sha256 = str(entry.get("path", "")), str(entry.get("sha256", "")).lower()
    text: bytes | None = None
    for rule in overlay.rules.get(pkg.name, ()):
        for patch in rule.patches:
            if patch.path == path:
                text = patch.text
    if text is None:
        rel = PurePosixPath(path)
        if not path or rel.is_absolute() or ".." in rel.parts:
            raise LockFileError(
                f"pylock.toml: {pkg.name} {pkg.version}: patch path {path!r} is not inside the"
                f" overlay {overlay.name!r}; run `monorepo lock` to regenerate the lock"
            )
        try:
            text = overlay.root.joinpath(*rel.parts).read_bytes()
        except OSError:
            raise PullError(
                f"{pkg.name} {pkg.version}: patch {path} is missing from overlay"
                f" {overlay.name!r} ({overlay.spec}): the overlay changed since the lock was"
                " written; run `monorepo lock`"
            ) from None
    actual = hashlib.sha256(text).hexdigest()
    if actual != sha256:
        raise PullError(
            f"{pkg.name} {pkg.version}: patch {path} of overlay {overlay.name!r} has sha256"
            f" {actual} but the lock records {sha256}: the overlay changed since the lock was"
            " written; run `monorepo lock`"
        )
    return Patch(path=path, sha256=actual, text=text)


# --------------------------------------------------------------------------- pulling


def state_problems(duni: Path) -> list[tuple[Path, str]]:
    """What makes ``duni/.monorepo`` unfit for pull's records: (path, why) pairs.

    duni/ is meant to be committed, so a branch can plant ``duni/.monorepo`` as a
    symbolic link, or a link in it: pull would read its records from, write them to,
    and delete ``*.manifest``, ``*.stat``, ``*.facts`` and ``.tmp-*`` files in
    wherever it points.  The directory must be a real one holding only regular
    files (its own records and lock; nothing else is ever put there).  Empty when
    it is (or does not exist yet).
    """
    state = duni / STATE_DIR
    try:
        st = os.lstat(state)
    except FileNotFoundError:
        return []
    except OSError as error:
        return [(state, f"cannot be examined ({error})")]
    if stat.S_ISLNK(st.st_mode):
        return [(state, f"is a symbolic link (to {_link_target(state)})")]
    if not stat.S_ISDIR(st.st_mode):
        return [(state, "is not a directory")]
    problems: list[tuple[Path, str]] = []
    try:
        entries = sorted(os.scandir(state), key=lambda e: e.name)
    except OSError as error:
        return [(state, f"cannot be listed ({error})")]
    for entry in entries:
        path = Path(entry.path)
        if entry.is_symlink():
            problems.append((path, f"is a symbolic link (to {_link_target(path)})"))
        elif not entry.is_file(follow_symlinks=False):
            problems.append((path, "is not a regular file"))
    return problems


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _state_dir(duni: Path) -> Path:
    """``duni/.monorepo``, created if missing; a :class:`PullError` if it is not safe.

    Checked before the lock inside it is taken (filelock would follow a planted link,
    or fail with a bare OSError): see :func:`state_problems`.
    """
    state = duni / STATE_DIR
    try:
        duni.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(state)
    except OSError as error:
        raise PullError(
            f"cannot create {state}: {error}; check the permissions of {duni.parent}"
        ) from error
    problems = state_problems(duni)
    if problems:
        paths = " ".join(shlex.quote(str(path)) for path, _ in problems)
        raise PullError(
            f"pull keeps its records in {state}, which must be a real directory of plain"
            " files, never reached through a symbolic link (duni/ is committed, and a"
            " planted link would have pull write and delete files where it points), but:\n  "
            + "\n  ".join(f"{path} {why}" for path, why in problems)
            + f"\nNothing was written. Remove them (`rm -r {paths}`): the records describe"
            " this checkout only, are not meant to be committed, and the next pull"
            " rebuilds them from the sources."
        )
    return state


@contextlib.contextmanager
def _exclusive(path: Path, reporter: Reporter) -> Iterator[int | None]:
    """Hold the pull lock of a duni/; yields its descriptor (None where there is none).

    The descriptor goes to the extraction workers, which inherit it (see
    :mod:`monorepo.workerproc`): a lock is held as long as any process holds its open
    file, so when a pull is killed the lock stays taken until the last of its workers
    has exited too.  Whoever gets the lock next is then sure that no process is left
    writing into duni/, and that every ``.tmp-*`` there is garbage to delete.
    """
    held: list[int] = []
    lock = filelock.FileLock(path, on_acquired=held.append)
    try:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            reporter.message("info", f"waiting for another monorepo pull to finish ({path})")
            lock.acquire()
    except OSError as error:
        raise PullError(
            f"cannot take the pull lock {path}: {error}; check the permissions of {path.parent}"
        ) from error
    try:
        yield held[-1] if held else None
    finally:
        lock.release()


def _write_failed(error: OSError, duni: Path, what: str) -> MonorepoError:
    """A failed write in duni/: its disk is full, or it cannot be written (permissions)."""
    fix = "set [tool.monorepo] duni to a directory on another disk"
    full = disk_full(error, duni, what=what, fix=fix)
    if full is not None:
        return full
    return PullError(
        f"{what}: {error}; check the permissions and free space of {duni}, then run"
        " `monorepo pull` again"
    )


def _check_dirs(lock: LockDocument) -> None:
    seen: dict[str, LockedPackage] = {}
    for pkg in lock.packages:
        d = pkg.dir
        if (
            not d
            or d in (".", "..")
            or d.startswith(".")
            or "/" in d
            or "\\" in d
            or "\0" in d
            or d in _GENERATED
        ):
            raise LockFileError(
                f"pylock.toml: {pkg.name} {pkg.version} has dir {d!r}, which is not a plain"
                " directory name pull may use in duni/; run `monorepo lock` to regenerate it"
            )
        if d in seen:
            raise LockFileError(
                f"pylock.toml: {seen[d].name} {seen[d].version} and {pkg.name} {pkg.version}"
                f" both use dir {d!r}; run `monorepo lock` to regenerate the lock"
            )
        seen[d] = pkg


def _select(lock: LockDocument, names: Sequence[str]) -> list[LockedPackage]:
    if not names:
        return list(lock.packages)
    wanted = {canonicalize_name(n): n for n in names}
    wanted_dirs = set(names)
    chosen = [p for p in lock.packages if p.name in wanted or p.dir in wanted_dirs]
    found = {p.name for p in chosen} | {p.dir for p in chosen}
    missing = sorted(n for key, n in wanted.items() if key not in found and n not in found)
    if missing:
        raise PullError(
            f"not in pylock.toml: {', '.join(missing)}; pull names locked packages (add them"
            " to pyproject.toml and run `monorepo lock` first)"
        )
    return chosen


def _largest_first(packages: Sequence[LockedPackage]) -> list[LockedPackage]:
    """The order packages are started in: largest source first, lock order among equals.

    Extraction is the long part of a pull, and a few large sdists dominate it; started
    last, one of them would leave every other core idle while it finishes alone.  A
    git source or an archive of unknown size counts as large (a clone takes a while).
    """

    def size(pkg: LockedPackage) -> float:
        source = pkg.source
        known = source.size if isinstance(source, SdistSource | ArchiveSource) else None
        return float("inf") if known is None else float(known)

    return sorted(packages, key=size, reverse=True)


_DOWNLOADS = 16
"""Sources downloaded at once (at least): as many as the HTTP client's connections.
Parallel curl with as many is the reference; 8 at once took a fifth longer here."""


def _download_ahead(
    packages: Sequence[LockedPackage],
    duni: Path,
    stack: contextlib.ExitStack,
    *,
    store: ContentStore,
    fetch: Fetch,
    offline: bool,
    jobs: int,
) -> dict[str, Future[Path]]:
    """Start fetching every archive whose directory is missing, *jobs* at a time.

    A package's thread fetches, then waits for an extractor: with the fetch in that
    thread, a cold pull downloaded only while a thread was free of extraction, and the
    network sat idle behind the extractors (data set: 7.8 s, of which 1.7 s is the
    download alone).  Fetching ahead on threads of their own keeps the network busy
    from the start.  Only missing directories are certain to need their source: for an
    existing one, :meth:`_Puller.sync` decides, and fetches only when the tree must be
    rebuilt.  The order is :func:`_download_order`'s.  The futures raise what
    :func:`fetch_source` raises; the pool is shut down (pending fetches cancelled)
    when the pull ends.
    """
    wanted = [
        pkg
        for pkg in _download_order(packages)
        if isinstance(pkg.source, SdistSource | ArchiveSource)
        and not os.path.lexists(duni / pkg.dir)
    ]
    if not wanted:
        return {}
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="fetch")
    stack.callback(pool.shutdown, wait=True, cancel_futures=True)
    return {
        pkg.dir: pool.submit(
            fetch_source, pkg, store=store, fetch=fetch, offline=offline, same_origin=True
        )
        for pkg in wanted
    }


def _download_order(packages: Sequence[LockedPackage]) -> list[LockedPackage]:
    """The largest and the smallest of the rest, alternately.

    Largest first alone fed the extractors nothing for the first second of a cold
    pull of the data set: sixteen large files shared the network and none was done
    before the others.  Alternating, half the downloads are small ones that finish
    at once, so extraction starts early, while the large ones, started first, are
    not left for the end either.
    """
    by_size = _largest_first(packages)
    order: list[LockedPackage] = []
    low, high = 0, len(by_size) - 1
    while low <= high:
        order.append(by_size[low])
        if low != high:
            order.append(by_size[high])
        low, high = low + 1, high - 1
    return order


def _ready_in_order(
    ordered: Sequence[LockedPackage], downloads: Mapping[str, Future[Path]]
) -> Callable[[], LockedPackage]:
    """A function that returns, each time it is called, the first package of *ordered*
    whose download is done (or that has none), waiting for one if need be.

    Taken strictly in order, every thread would first wait for the largest downloads
    (the last to finish, sharing the network), while the small sources already on disk
    could have been extracted: the web set started extracting 0.2 s late.  Among the
    ready ones the order still holds, so large sources still start first.  Call it once
    per package: each call takes one.
    """
    ready: queue.PriorityQueue[int] = queue.PriorityQueue()

    def when_done(rank: int) -> Callable[[Future[Path]], None]:
        return lambda _: ready.put(rank)

    for rank, pkg in enumerate(ordered):
        download = downloads.get(pkg.dir)
        if download is None:
            ready.put(rank)
        else:
            download.add_done_callback(when_done(rank))
    return lambda: ordered[ready.get()]


def _clean_leftovers(duni: Path, state: Path, store: ContentStore) -> None:
    """Delete what killed runs left: staging trees, set-aside trees, half-written files.

    Called with the pull lock held, which no process of an earlier pull holds any
    more (:func:`_exclusive`): nobody owns a ``.tmp-*`` in duni/ now.  In the download
    cache, shared with other projects, only the files of writers that are gone.
    """
    try:
        for directory in (duni, state):
            for entry in directory.iterdir():
                if entry.name.startswith(STAGING_PREFIX):
                    _remove(entry)
    except OSError as error:
        raise PullError(
            f"cannot delete what an interrupted pull left in {duni}: {error}; check the"
            f" permissions of {duni}, or delete its .tmp-* entries by hand"
        ) from error
    store.sweep()


class _Puller:
    def __init__(
        self,
        duni: Path,
        *,
        store: ContentStore,
        fetch: Fetch,
        offline: bool,
        force: bool,
        patches: Mapping[str, tuple[Patch, ...]],
        extractor: ExtractorPool | None = None,
        downloads: Mapping[str, Future[Path]] | None = None,
    ) -> None:
        self.duni = duni
        self.extractor = extractor
        self.downloads = downloads if downloads is not None else {}
        self.state = duni / STATE_DIR
        self.store = store
        self.fetch = fetch
        self.offline = offline
        self.force = force
        self.patches = patches
        self._checking = threading.Lock()

    def _paths(self, d: str) -> tuple[Path, Path, Path]:
        return self.duni / d, self.state / f"{d}.manifest", self.state / f"{d}.pending"

    def _scan(self, target: Path) -> tuple[bool, dict[str, Entry] | None]:
        """(exists, entries); entries None when the path is not a hashable directory.

        A stat cache (``duni/.monorepo/<dir>.stat``) spares re-reading files whose size,
        mtime, inode and ctime are unchanged, so a no-op pull reads no file content.
        """
        if not os.path.lexists(target):
            return False, None
        if target.is_symlink() or not target.is_dir():
            return True, None
        stamps = _read_stamps(self._stamp_path(target.name))
        before = dict(stamps)
        try:
            entries = scan_tree(target, stamps=stamps)
        except TreeHashError:
            return True, None
        if stamps != before:
            _write_stamps(self._stamp_path(target.name), stamps)
        return True, entries

    def _stamp_path(self, d: str) -> Path:
        return self.state / f"{d}.stat"

    def facts(
        self,
        d: str,
        tree: Path,
        tree_hash: str | None,
        entries: Mapping[str, Entry] | None = None,
    ) -> TreeFacts:
        """workspace.toml's facts of duni/<d>, kept in ``<d>.facts`` under its tree hash.

        *tree_hash* is the hash this run found or made for the tree, so the kept facts
        are those of exactly this content; without one (a partial pull did not look at
        the tree) they are read from the tree.  *entries*, the tree's, spare listing it.
        """
        if tree_hash is None:
            return read_tree_facts(tree)
        path = self.state / f"{d}.facts"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("tree-hash") == tree_hash:
                return TreeFacts.from_json(data)
        paths = None if entries is None else [e.path for e in entries.values() if e.kind != "dir"]
        found = read_tree_facts(tree, paths)
        text = json.dumps({"tree-hash": tree_hash, **found.to_json()}, sort_keys=True)
        _write_atomic(path, text + "\n")
        return found

    def sync(self, pkg: LockedPackage) -> _Outcome:
        d = pkg.dir
        target, manifest_path, pending_path = self._paths(d)
        patches = self.patches.get(d, ())
        identity = source_identity(pkg)
        key = _input_key(pkg, patches)
        # Checking a tree is Python under the GIL (a stat and a few objects per file,
        # the manifest parsed, entries hashed): threads doing it at once only fight over
        # the GIL (a no-op pull of the data set: 3.0 s with 8 threads, 1.8 s with 1), so
        # one checks at a time while the others download, extract and write.
        with self._checking:
            recorded = _read_record(manifest_path)
            exists, current = self._scan(target)
            current_hash = hash_entries(current) if current is not None else None

            pending = _read_record(pending_path)
            if pending is not None and current_hash == pending.hash:
                os.replace(pending_path, manifest_path)  # the killed run's tree is in place
                recorded = pending
            elif os.path.lexists(pending_path):
                pending_path.unlink()

            want = pkg.tree_hash
            # A tree is up to date only as what this very lock entry gave: the record
            # must name the entry's source (URL, size, sha256 or commit) and patches,
            # whatever the tree hash says.  Otherwise the source is fetched again
            # below and must match the lock, so an edited lock is never taken as
            # describing the tree that is there.
            if (
                current is not None
                and recorded is not None
                and recorded.key == key
                and current_hash == (want if want is not None else recorded.hash)
            ):
                if recorded.hash != current_hash or recorded.source != identity:
                    _write_atomic(manifest_path, _record_text(current, identity, key))
                return _Outcome("unchanged", tree_hash=current_hash, entries=current)

            own = not exists or (recorded is not None and recorded.hash == current_hash)
            if exists and not own and not self.force and recorded is not None:
                if current is None:
                    detail = "it is no longer a directory pull can read"
                else:
                    detail = _describe_diff(recorded.entries, current)
                return _Outcome(
                    "refused", f"duni/{d} ({pkg.name} {pkg.version}) was edited: {detail}"
                )

        token = secrets.token_hex(6)
        staging = self.duni / f"{STAGING_PREFIX}{d}-new-{token}"
        download = self.downloads.get(d)
        aside = self.duni / f"{STAGING_PREFIX}{d}-old-{token}"
        stamps: dict[str, tuple[Stamp, str]] = {}
        try:
            try:
                entries = materialize_entries(
                    pkg,
                    staging,
                    patches=patches,
                    store=self.store,
                    fetch=self.fetch,
                    offline=self.offline,
                    stamps=stamps,
                    extractor=self.extractor,
                    fetched=download.result if download is not None else None,
                    same_origin=True,
                )
            except HashMismatchError as error:
                if recorded is None or recorded.source == identity:
                    raise
                change = describe_source_change(recorded.source, identity)
                raise HashMismatchError(
                    f"duni/{d} was pulled from another source than pylock.toml now names for"
                    f" {pkg.name} {pkg.version} ({change}), so that source was downloaded"
                    f" again to check it, and it does not match: {error}"
                ) from error
            new_hash = hash_entries(entries)
            if want is not None and new_hash != want:
                raise PullError(
                    f"{pkg.name} {pkg.version}: the tree built from its locked source has tree"
                    f" hash {new_hash}, but pylock.toml records {want}: the upstream source or"
                    " an overlay changed since the lock was written; run `monorepo lock`"
                    " (and review the change) before pulling"
                )
            if current_hash == new_hash:
                _write_atomic(manifest_path, _record_text(entries, identity, key))
                return _Outcome("unchanged", tree_hash=new_hash, entries=entries)
            if exists and not own and not self.force:
                return _Outcome(
                    "refused",
                    f"duni/{d} ({pkg.name} {pkg.version}) was not created by monorepo pull"
                    " (no record of it in duni/.monorepo) and differs from the locked source",
                )
            _write_atomic(pending_path, _record_text(entries, identity, key))
            if exists:
                os.rename(target, aside)
            os.rename(staging, target)
            os.replace(pending_path, manifest_path)
            _write_stamps(self._stamp_path(d), stamps)  # a rename keeps every stamp
            if exists:
                _remove(aside)
            return _Outcome("updated", tree_hash=new_hash, entries=entries)
        except OSError as error:
            what = f"{pkg.name} {pkg.version}: cannot replace duni/{d}"
            raise _write_failed(error, self.duni, what) from error
        finally:
            if os.path.lexists(staging):
                _remove(staging)

    def remove_unlocked(self, locked: set[str], result: PullResult) -> list[str]:
        """Delete pull's own directories the lock no longer names; returns refusals."""
        refusals: list[str] = []
        for entry in sorted(self.duni.iterdir()):
            name = entry.name
            if name.startswith(".") or name in locked or name in _GENERATED:
                continue
            if not entry.is_dir() or entry.is_symlink():
                continue
            _, manifest_path, pending_path = self._paths(name)
            _, current = self._scan(entry)
            current_hash = hash_entries(current) if current is not None else None
            records = [r for r in (_read_record(manifest_path), _read_record(pending_path)) if r]
            if not records:
                warning = (
                    f"duni/{name} is not in the lock and was not created by monorepo pull;"
                    " left alone (delete it if it is not needed)"
                )
                result.warnings.append(warning)
                continue
            own = any(r.hash == current_hash for r in records)
            if not own and not self.force:
                detail = (
                    _describe_diff(records[0].entries, current)
                    if current is not None
                    else "it is no longer a directory pull can read"
                )
                refusals.append(f"duni/{name} (no longer locked) was edited: {detail}")
                continue
            aside = self.duni / f"{STAGING_PREFIX}{name}-old-{secrets.token_hex(6)}"
            os.rename(entry, aside)
            manifest_path.unlink(missing_ok=True)
            pending_path.unlink(missing_ok=True)
            self._stamp_path(name).unlink(missing_ok=True)
            (self.state / f"{name}.facts").unlink(missing_ok=True)
            _remove(aside)
            result.removed.append(name)
        # Records of directories that are gone and no longer locked.
        for record in sorted(self.state.iterdir()):
            stem, dot, suffix = record.name.rpartition(".")
            if (
                dot
                and suffix in ("manifest", "pending", "stat", "facts")
                and stem not in locked
                and not os.path.lexists(self.duni / stem)
            ):
                record.unlink(missing_ok=True)
        return refusals


def pull(
    project: str | os.PathLike[str] = ".",
    *,
    packages: Sequence[str] = (),
    offline: bool = False,
    force: bool = False,
    jobs: int | None = None,
    frozen: bool = False,
    reporter: Reporter | None = None,
    fetch: Callable[[str], Iterator[bytes] | bytes] | None = None,
) -> PullResult:
    """Make ``duni/`` match pylock.toml (see the module docstring for the rules).

    *packages* limits the pull to those locked names (nothing is removed then).
    *offline* uses only the download cache and cached git mirrors.  *force*
    overwrites local edits and directories pull did not create.  *jobs* is the
    number of packages extracted and hashed at once (default ``min(8, 2 * cpus)``);
    sixteen sources (or *jobs*, if more) download at once, ahead of them.  *frozen*
    pulls from the lock as it is; otherwise a lock that no longer fits pyproject.toml
    (the reasons ``lock --check`` gives) raises :class:`~monorepo.errors.StaleLockError`
    before anything is touched, like uv's ``--locked``.  *fetch* replaces the HTTP
    download (tests, embedding).
    Raises :class:`~monorepo.errors.MonorepoError` subclasses; packages that were
    brought up to date before an error stay so.
    """
    reporter = reporter if reporter is not None else NullReporter()
    config = load_config(Path(project))
    lock = lockfile.read(config.root / lockfile.LOCK_NAME)
    if not frozen:
        from monorepo.locking.freshness import require_fresh  # loads the resolver's markers

        require_fresh(config, lock, command="pull", offline=offline)
    _check_dirs(lock)
    selected = _select(lock, packages)
    duni = config.duni
    state = _state_dir(duni)
    _spread_package_trees(duni)
    workers = jobs if jobs is not None else min(8, (os.cpu_count() or 1) * 2)
    if workers < 1:
        raise PullError(f"--jobs must be at least 1, not {workers}")
    result = PullResult(duni=duni)

    with _exclusive(state / "lock", reporter) as lock_fd, contextlib.ExitStack() as stack:
        store = ContentStore()
        _clean_leftovers(duni, state, store)
        _write_atomic(state / ".gitignore", STATE_GITIGNORE)
        patches = _patches_for(selected, lock, base=config.root, offline=offline)
        if fetch is None:
            from monorepo.index.http import HttpClient

            client = stack.enter_context(HttpClient(offline=offline, reporter=reporter))
            fetch = client.stream
        # Extraction is mostly Python under the GIL: worker processes, one per core,
        # unpack the sdists while this process's threads fetch, hash and check trees.
        # Small ones too: this process's GIL is the scarce thing (a download's chunks,
        # every tree's walk), and a round trip to a worker costs about a millisecond
        # (web set, 53 sdists: 1.6 -> 1.3 s warm, 2.2 -> 1.9 s cold).
        extractor = stack.enter_context(
            ExtractorPool(
                min(workers, os.cpu_count() or 1),
                min_size=0,
                inherit_fds=() if lock_fd is None else (lock_fd,),
            )
        )
        downloads = _download_ahead(
            selected,
            duni,
            stack,
            store=store,
            fetch=fetch,
            offline=offline,
            jobs=max(_DOWNLOADS, workers),
        )
        if downloads:
            extractor.prestart()
        puller = _Puller(
            duni,
            store=store,
            fetch=fetch,
            offline=offline,
            force=force,
            patches=patches,
            extractor=extractor,
            downloads=downloads,
        )
        reporter.task("pull", f"Pulling {len(selected)} packages into {duni.name}/", len(selected))
        outcomes: dict[str, _Outcome] = {}
        facts: dict[str, TreeFacts] = {}
        errors: list[tuple[LockedPackage, Exception]] = []

        def run(pkg: LockedPackage) -> None:
            try:
                outcome = outcomes[pkg.dir] = puller.sync(pkg)
                if outcome.tree_hash is not None:
                    # Here rather than after the last package: a fresh tree's facts
                    # (pyproject.toml parsed, sources looked for) take a few ms each,
                    # done meanwhile other packages extract (data set: 0.15 s of tail).
                    facts[pkg.dir] = puller.facts(
                        pkg.dir, duni / pkg.dir, outcome.tree_hash, outcome.entries
                    )
            except Exception as exc:  # collected, re-raised below in lock order
                errors.append((pkg, exc))
            finally:
                reporter.advance("pull")

        ready = _ready_in_order(_largest_first(selected), downloads)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pull") as pool:
            list(pool.map(lambda _: run(ready()), selected))
        reporter.done("pull")

        refusals: list[str] = []
        for pkg in selected:
            outcome = outcomes.get(pkg.dir)
            if outcome is None:
                continue
            if outcome.status == "updated":
                result.updated.append(pkg.dir)
                reporter.message("debug", f"updated duni/{pkg.dir} ({pkg.name} {pkg.version})")
            elif outcome.status == "unchanged":
                result.unchanged.append(pkg.dir)
            else:
                refusals.append(outcome.refusal)
        if errors:
            order = {p.dir: i for i, p in enumerate(selected)}
            errors.sort(key=lambda item: order[item[0].dir])
            for pkg, other in errors[1:]:
                reporter.message("warning", f"{pkg.name} {pkg.version}: {other}")
            pkg, first = errors[0]
            if isinstance(first, OSError):  # a record in duni/.monorepo could not be written
                raise _write_failed(first, duni, f"{pkg.name} {pkg.version}") from first
            raise first
        if not packages:
            refusals += puller.remove_unlocked({p.dir for p in lock.packages}, result)
        if refusals:
            raise PullError(
                "duni/ has changes that pull would overwrite:\n  "
                + "\n  ".join(refusals)
                + "\nKeep a change as an overlay patch (then `monorepo lock`), move it out of"
                " duni/, or run `monorepo pull --force` to overwrite it."
            )
        trees = {p.dir: duni / p.dir for p in lock.packages if (duni / p.dir).is_dir()}
        workspace = render(
            workspace_data(
                lock, trees, facts=lambda d, t: facts[d] if d in facts else puller.facts(d, t, None)
            )
        )
        try:
            _write_atomic(duni / "README.md", README)
            _write_atomic(duni / "workspace.toml", workspace)
        except OSError as error:
            raise _write_failed(error, duni, "cannot write duni/workspace.toml") from error
    for warning in result.warnings:
        reporter.message("warning", warning)
    return result
