"""Fetch a locked source and build its vendored tree: the one path from lock entry to files.

``lock`` (to record a tree hash), ``pull`` (to write ``duni/<dir>/``) and ``verify``
all need the same tree for the same lock entry, so the steps live here once:

1. :func:`fetch_source` gets the bytes: an sdist or archive into the content store
   (:class:`~monorepo.sources.store.ContentStore`, keyed and verified by the sha256 the lock
   records, so a machine downloads each file once and ``--offline`` works from the
   store alone), or a git commit exported from the cached mirror.
2. :func:`materialize` turns them into a directory: safe extraction (top directory
   stripped) or a copy of the git export, then the overlay's patches in order, then
   the tree hash.  The directory is built under a ``.tmp-`` name beside its
   destination and renamed into place only when complete, so an interrupted or
   failed run never leaves a half-built tree under the real name; whatever
   ``.tmp-*`` it leaves behind is garbage that ``pull`` deletes on its next start.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from monorepo._core import fstree
from monorepo._core.fstree import Stamp, remove_tree
from monorepo._core.paths import CacheDir, url_path
from monorepo.errors import IndexClientError, MonorepoError, PullError, disk_full
from monorepo.extract.archive import extract_sdist
from monorepo.extract.sinks import FileStamps
from monorepo.extract.speed.pool import ExtractorPool
from monorepo.project.lockfile import ArchiveSource, LockedPackage, SdistSource, VcsSource
from monorepo.sources.patches import Patch, apply_patches
from monorepo.sources.store import ContentStore
from monorepo.sources.treehash import Entry, TreeHashError, hash_entries, scan_tree

__all__ = ["STAGING_PREFIX", "Fetch", "fetch_source", "materialize", "materialize_entries"]

Fetch = Callable[[str], "Iterator[bytes] | bytes"]
"""Download a URL: the whole body, or its chunks (hashed while they are written)."""

STAGING_PREFIX = ".tmp-"
"""Names starting with this beside a destination are unfinished work, safe to delete."""

_CHUNK = 1 << 16


def _label(pkg: LockedPackage) -> str:
    return f"{pkg.name} {pkg.version}"


def _read_file_url(url: str, pkg: LockedPackage) -> Iterator[bytes]:
    path = url_path(urlsplit(url).path)
    try:
        f = path.open("rb")
    except OSError as error:
        raise PullError(
            f"{_label(pkg)}: cannot read its source {url} ({error.strerror or error}); restore"
            " the file or run `monorepo lock` to lock another source"
        ) from error
    with f:
        while chunk := f.read(_CHUNK):
            yield chunk


def fetch_source(
    pkg: LockedPackage,
    *,
    store: ContentStore,
    cache: CacheDir,
    fetch: Fetch | None = None,
    offline: bool = False,
    same_origin: bool = False,
) -> Path:
    """The locked source of *pkg* on disk: the stored archive file, or the exported git tree.

    Archives are looked up in *store* by the lock's sha256 and downloaded with *fetch*
    only when missing (default: a streaming download with :class:`HttpClient`'s retry
    policy).  A download whose size or sha256 differs from the lock is deleted and
    raises :class:`~monorepo.errors.HashMismatchError` naming the package, the URL and
    both digests.  ``file://`` URLs are read from disk and checked the same way.
    With *same_origin*, a stored file counts only if it was downloaded from the URL
    the lock names (see :mod:`monorepo.sources.store`): the URL is part of what the lock
    says, and a stored file with the right hash does not show that the URL serves it.
    A git source is exported (without ``.git``) from the mirror in *cache* at the locked
    commit; the returned directory is shared and must not be modified.
    """
    source = pkg.source
    if isinstance(source, VcsSource):
        return _export_git(pkg, source, cache=cache, offline=offline)
    if not isinstance(source, SdistSource | ArchiveSource):  # pragma: no cover - exhaustive
        raise PullError(f"{_label(pkg)}: unknown source kind {type(source).__name__}")
    url = source.url
    what = f"{_label(pkg)} ({url})"
    found = store.get(source.sha256, size=source.size, origin=url if same_origin else None)
    if found is not None:
        return found
    is_file = urlsplit(url).scheme == "file"
    if offline and not is_file:
        if same_origin and store.get(source.sha256, size=source.size) is not None:
            raise PullError(
                f"{_label(pkg)}: the download cache ({store.root}) has a file with its sha256,"
                f" but not downloaded from {url}, and --offline forbids downloading it to check"
                " that this URL serves it; run `monorepo pull` once online"
            )
        raise PullError(
            f"{_label(pkg)}: {url} is not in the download cache ({store.root}) and --offline"
            " forbids downloading it; run `monorepo pull` once online to fill the cache"
        )
    with contextlib.ExitStack() as stack:
        if is_file:

            def download() -> Iterator[bytes] | bytes:
                return _read_file_url(url, pkg)

        else:
            if fetch is None:
                from monorepo.index.http import HttpClient  # loads httpx: only when downloading

                client = stack.enter_context(HttpClient())
                fetch = client.stream
            get = fetch

            def download() -> Iterator[bytes] | bytes:
                return get(url)

        try:
            return store.get_or_fetch(
                source.sha256,
                download,
                size=source.size,
                what=what,
                origin=url,
                same_origin=same_origin,
            )
        except IndexClientError as error:
            raise PullError(
                f"{_label(pkg)}: cannot download its source: {error}",
                package=str(pkg.name),
                url=url,
            ) from error
        except MonorepoError as error:  # a hash mismatch: say which package and URL
            error.annotate(package=str(pkg.name), url=url)
            raise


def _export_git(pkg: LockedPackage, source: VcsSource, *, cache: CacheDir, offline: bool) -> Path:
    from monorepo.sources import git  # loads pygit2: only for git sources

    try:
        tree = git.export_commit(source.url, source.commit, cache=cache, offline=offline)
    except git.GitError as error:
        raise PullError(f"{_label(pkg)}: cannot export commit {source.commit}: {error}") from error
    if source.subdirectory:
        sub = PurePosixPath(source.subdirectory)
        if sub.is_absolute() or ".." in sub.parts:
            raise PullError(
                f"{_label(pkg)}: subdirectory {source.subdirectory!r} of {source.url} must be a"
                " relative path inside the repository; correct it and run `monorepo lock`"
            )
        tree = tree.joinpath(*sub.parts)
        if not tree.is_dir():
            raise PullError(
                f"{_label(pkg)}: commit {source.commit} of {source.url} has no directory"
                f" {source.subdirectory!r}; correct the subdirectory and run `monorepo lock`"
            )
    return tree


def _copy_tree(src: Path, dest: Path, pkg: LockedPackage) -> None:
    """A plain copy of an export: symlinks kept as links, modes normalised, no ``.git``."""

    try:
        fstree.copy_tree(src, dest, skip={".git"})
        for dirpath, dirnames, filenames in fstree.walk(dest, strict=True):
            for name in filenames:
                path = Path(dirpath, name)
                if path.is_symlink():
                    continue
                executable = bool(path.stat().st_mode & 0o111)
                path.chmod(0o755 if executable else 0o644)
            for name in dirnames:
                path = Path(dirpath, name)
                if not path.is_symlink():
                    path.chmod(0o755)
    except OSError as error:
        what = f"{_label(pkg)}: cannot copy its git export to {dest}"
        raise disk_full(error, dest.parent, what=what) or PullError(
            f"{_label(pkg)}: cannot copy its git export {src} to {dest}: {error}; check the free"
            f" space and permissions of {dest.parent}"
        ) from error


def _archive_name(url: str) -> str:
    """The file name a URL ends with, which tells the extractor the archive format."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        return "source.tar.gz"
    return name


def _extract(
    pkg: LockedPackage, archive: Path, dest: Path, extractor: ExtractorPool | None
) -> FileStamps:
    """Extract a store entry (named by its hash) under the name of its URL.

    The extractor picks tar or zip from the file name, which a content-addressed store
    does not keep; its errors then name the file the user knows (``lib-1.0.tar.gz``),
    not a digest.
    """
    assert isinstance(pkg.source, SdistSource | ArchiveSource)
    name = _archive_name(pkg.source.url)
    if extractor is not None:
        return extractor.extract(archive, dest, package=str(pkg.name), name=name)
    return extract_sdist(archive, dest, package=str(pkg.name), name=name)


def _patched_paths(patches: Sequence[Patch]) -> set[str]:
    """Every path a patch may create, change or delete (old and new names)."""
    import pygit2  # only when there are patches

    paths: set[str] = set()
    for patch in patches:
        try:
            diff = pygit2.Diff.parse_diff(patch.text)
        except (pygit2.GitError, KeyError, ValueError):
            continue  # apply_patches has refused it already
        for delta in diff.deltas:
            paths.update((delta.old_file.path, delta.new_file.path))
    return paths


def materialize_entries(
    pkg: LockedPackage,
    dest: Path,
    *,
    patches: Sequence[Patch] = (),
    store: ContentStore,
    cache: CacheDir,
    fetch: Fetch | None = None,
    offline: bool = False,
    stamps: dict[str, tuple[Stamp, str]] | None = None,
    extractor: ExtractorPool | None = None,
    fetched: Callable[[], Path] | None = None,
    same_origin: bool = False,
) -> Mapping[str, Entry]:
    """Like :func:`materialize`, returning the tree's entries (for a manifest) instead.

    *stamps*, when given, receives the stat cache of the new tree (see
    :func:`~monorepo.sources.treehash.scan_tree`), valid at *dest* since a rename keeps inodes.
    *extractor* runs the extraction (in its worker processes) instead of this thread.
    *fetched* returns what :func:`fetch_source` would (or raises what it would), for a
    caller that fetched the source ahead (pull downloads while it extracts).
    *same_origin* is :func:`fetch_source`'s.
    """
    if os.path.lexists(dest):
        raise PullError(
            f"{_label(pkg)}: cannot build its tree at {dest}: the path already exists; remove it"
            " (monorepo pull replaces directories itself)"
        )
    if fetched is not None:
        source = fetched()
    else:
        source = fetch_source(
            pkg, store=store, cache=cache, fetch=fetch, offline=offline, same_origin=same_origin
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        what = f"{_label(pkg)}: cannot create {dest.parent}"
        raise disk_full(error, dest.parent, what=what) or PullError(f"{what}: {error}") from error
    staging = dest.parent / f"{STAGING_PREFIX}{dest.name}-{secrets.token_hex(6)}"
    known: FileStamps = {}
    try:
        if isinstance(pkg.source, VcsSource):
            _copy_tree(source, staging, pkg)
        else:
            known = _extract(pkg, source, staging, extractor)
        apply_patches(staging, patches, package=str(pkg.name))
        if patches:
            for path in _patched_paths(patches):
                known.pop(path, None)
        try:
            # Files the extractor hashed while writing them are not read again; the
            # walk still lists and stats the tree, so the entries are the tree's own.
            entries = scan_tree(staging, stamps=known)
        except TreeHashError as error:
            raise PullError(f"{_label(pkg)}: {error}") from error
        os.rename(staging, dest)
    except OSError as error:
        remove_tree(staging, ignore_errors=True)
        what = f"{_label(pkg)}: cannot build its tree in {dest.parent}"
        raise disk_full(error, dest.parent, what=what) or PullError(
            f"{_label(pkg)}: cannot move its tree into {dest}: {error}; check the free space and"
            f" permissions of {dest.parent}"
        ) from error
    except BaseException:
        remove_tree(staging, ignore_errors=True)
        raise
    if stamps is not None:
        stamps.update(known)
    return entries


def materialize(
    pkg: LockedPackage,
    dest: Path,
    *,
    patches: Sequence[Patch] = (),
    store: ContentStore,
    cache: CacheDir,
    fetch: Fetch | None = None,
    offline: bool = False,
) -> str:
    """Build *pkg*'s vendored tree at *dest* (which must not exist); return its tree hash.

    The tree is built in ``dest.parent / ".tmp-<dest.name>-<random>"`` (extracted with
    the top directory stripped, or copied from the git export without ``.git``), the
    *patches* applied in order, hashed, then renamed to *dest*.  On any failure the
    staging directory is removed and *dest* does not exist; errors are the typed
    :mod:`monorepo.errors` ones (:class:`HashMismatchError`, :class:`ExtractError`,
    :class:`OverlayError` for a patch, :class:`PullError`).
    """
    return hash_entries(
        materialize_entries(
            pkg, dest, patches=patches, store=store, cache=cache, fetch=fetch, offline=offline
        )
    )
