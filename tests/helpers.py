"""Set-up shared by the tests: types of the conftest fixtures, the test's cache, an index
client wired like a lock's, overlays on disk, lock rewrites and tree snapshots.

Everything here builds real things (files, a real client with real caches); fixtures that
need pytest's machinery stay in conftest.py.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from fixtures.builder import FixtureIndex
from fixtures.server import IndexServer
from monorepo._core.paths import CacheDir
from monorepo._core.reporter import Reporter
from monorepo.index.backend import BuildBackend
from monorepo.index.client import IndexClient
from monorepo.index.deadline import Deadline
from monorepo.index.http import DEFAULT_BACKOFF, HttpClient
from monorepo.index.httpcache import HttpCache
from monorepo.index.speed.metadatacache import MetadataCache
from monorepo.index.speed.pagecache import PageCache
from monorepo.project import lockfile
from monorepo.project.lockfile import LockedPackage

MakeIndex = Callable[..., FixtureIndex]
"""The ``make_index`` fixture: ``make_index(releases, name=None)``."""
Serve = Callable[..., IndexServer]
"""The ``serve`` fixture: ``serve(index, **server options)``."""


def current_cache() -> CacheDir:
    """The cache directory of the running test (conftest points ``MONOREPO_CACHE_DIR`` at
    a fresh one): what the library's entry points use when given none."""
    return CacheDir.from_env()


def index_client(
    urls: list[str] | str,
    *,
    offline: bool = False,
    http_cache: Path | None = None,
    page_cache: Path | None = None,
    metadata_cache: Path | None = None,
    workers: int = 0,
    backoff: float = DEFAULT_BACKOFF,
    retries: int = 3,
    timeout: float = 30.0,
    deadline: Deadline | None = None,
    max_workers: int = 16,
    reporter: Reporter | None = None,
) -> IndexClient:
    """An index client with its collaborators made the way a lock makes them.

    Each cache defaults to its directory in the test's cache (:func:`current_cache`); the
    build backend fills its environments from *urls*.
    """
    cache = current_cache()
    index_urls = [urls] if isinstance(urls, str) else list(urls)
    http = HttpClient(
        cache=HttpCache(http_cache or cache.http),
        offline=offline,
        reporter=reporter,
        timeout=timeout,
        retries=retries,
        backoff=backoff,
        max_connections=max_workers,
        deadline=deadline,
    )
    return IndexClient(
        index_urls,
        http=http,
        page_cache=PageCache(page_cache or cache.pages),
        metadata_cache=MetadataCache(metadata_cache or cache.metadata),
        backend=BuildBackend(cache.build_envs, tuple(index_urls), offline),
        workers=workers,
        reporter=reporter,
        max_workers=max_workers,
    )


def write_overlay(
    root: Path, name: str, packages: Mapping[str, str], files: Mapping[str, bytes] | None = None
) -> Path:
    """An overlay directory named *name*: *packages* maps a package directory to its
    overlay.toml text (dedented), *files* maps paths below *root* (patches) to bytes."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "overlay.toml").write_text(
        f'[overlay]\nname = "{name}"\nformat = 1\ndescription = "test overlay"\n'
    )
    for pkg, text in packages.items():
        directory = root / "packages" / pkg
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "overlay.toml").write_text(textwrap.dedent(text))
    for rel, data in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def rewrite_lock(
    project: Path, change: Callable[[LockedPackage], LockedPackage], **document: Any
) -> None:
    """Rewrite *project*'s pylock.toml with *change* applied to every package (and the
    document fields given), as a hand edit or another branch would."""
    path = project / lockfile.LOCK_NAME
    old = lockfile.read(path)
    new = dataclasses.replace(old, packages=tuple(change(p) for p in old.packages), **document)
    lockfile.write_atomic(path, lockfile.render(new))


def reqs(*items: str) -> list[Requirement]:
    return [Requirement(item) for item in items]


def stat_snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, mtime_ns, mode) of every path below *root*, the pull lock's file aside:
    anything written, replaced or chmodded changes it."""
    out: dict[str, tuple[int, int, int]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        if path.name == "lock" and path.parent.name == ".monorepo":
            continue  # the file lock is opened (not written) on every run
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_ino, st.st_mtime_ns, st.st_mode)
    return out
