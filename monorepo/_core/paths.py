"""Where monorepo keeps its caches (:class:`CacheDir`), and the path a ``file:`` URL names.

One root, so that the HTTP cache, the content-addressed source store, git mirrors,
overlay exports, build environments and the speed-only caches can be inspected and
wiped together.  The root is decided once, where a command or a library call starts
(:meth:`CacheDir.at`: an explicit directory, else ``MONOREPO_CACHE_DIR``, else
platformdirs' user cache directory), and the value is passed down from there: nothing
below the entry points reads the environment for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

__all__ = ["CACHE_ENV", "CacheDir", "url_path"]

CACHE_ENV = "MONOREPO_CACHE_DIR"
"""The environment variable that moves the cache root (tests always set it)."""


def url_path(path: str) -> Path:
    """The local path that a ``file:`` URL's (already split) path part names.

    What ``urllib.request.url2pathname`` does, without importing urllib.request,
    which loads http.client, email and ssl: verify and offline runs never need them.
    """
    if os.name == "nt":  # pragma: no cover - POSIX CI
        from nturl2path import url2pathname

        return Path(url2pathname(path))
    return Path(unquote(path))


@dataclass(frozen=True)
class CacheDir:
    """The cache root and the directory of each cache below it (none is created here)."""

    root: Path

    @classmethod
    def at(cls, path: str | os.PathLike[str] | None = None) -> CacheDir:
        """The cache at *path*, or where the environment says (:meth:`from_env`) when None."""
        if path is None:
            return cls.from_env()
        return cls(Path(path).expanduser().resolve())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CacheDir:
        """``MONOREPO_CACHE_DIR``, else platformdirs' user cache directory for monorepo."""
        env = os.environ if environ is None else environ
        override = env.get(CACHE_ENV)
        if override:
            return cls(Path(override).expanduser().resolve())
        import platformdirs

        return cls(Path(platformdirs.user_cache_dir("monorepo", appauthor=False)))

    @property
    def http(self) -> Path:
        """Index pages and files as the server sent them (:mod:`monorepo.index.httpcache`)."""
        return self.root / "http"

    @property
    def store(self) -> Path:
        """Downloaded sources by sha256 (:mod:`monorepo.sources.store`)."""
        return self.root / "store"

    @property
    def git(self) -> Path:
        """Bare git mirrors and exported commits (:mod:`monorepo.sources.git`)."""
        return self.root / "git"

    @property
    def overlays(self) -> Path:
        """Git overlays, exported per commit (:mod:`monorepo.overlays.loading`)."""
        return self.root / "overlays"

    @property
    def build_envs(self) -> Path:
        """Environments that run sdists' build backends for metadata (:mod:`monorepo.index.backend`)."""
        return self.root / "build-envs"

    @property
    def builds(self) -> Path:
        """Built wheels by the key of their inputs (:mod:`monorepo.building.cache`)."""
        return self.root / "builds"

    @property
    def debian(self) -> Path:
        """Debian indexes and packages of sysroots (:mod:`monorepo.sysroot`)."""
        return self.root / "debian"

    @property
    def pages(self) -> Path:
        """Speed only: parsed index pages (:mod:`monorepo.index.speed.pagecache`)."""
        return self.root / "pages"

    @property
    def metadata(self) -> Path:
        """Core metadata by file sha256 (:mod:`monorepo.index.speed.metadatacache`)."""
        return self.root / "metadata"

    @property
    def locks(self) -> Path:
        """Speed only: resolutions to reuse (:mod:`monorepo.locking.speed.reuse`)."""
        return self.root / "locks"

    @property
    def warmstart(self) -> Path:
        """Speed only: the pages each project's last lock read (:mod:`monorepo.locking.speed.warmstart`)."""
        return self.root / "warmstart"

    @property
    def rendered(self) -> Path:
        """Speed only: lock texts this version rendered (:mod:`monorepo.locking.speed.reuse`)."""
        return self.root / "rendered"
