"""What every check of verify needs: the project, its lock, paths for messages, a thread pool."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from monorepo._core.paths import CacheDir
from monorepo._core.reporter import Reporter
from monorepo.project.config import ProjectConfig
from monorepo.project.lockfile import (
    LockDocument,
    LockedPackage,
    Source,
    VcsSource,
)

_T = TypeVar("_T")
_R = TypeVar("_R")


# ---------------------------------------------------------------------------- helpers


class Context:
    """What every check needs: the config, the lock (when readable), paths and options."""

    def __init__(
        self, config: ProjectConfig, reporter: Reporter, jobs: int, cache: CacheDir
    ) -> None:
        self.config = config
        self.cache = cache
        """The cache directory: cached sources and git mirrors, read offline."""
        self.root = config.root
        self.duni = config.duni
        self.reporter = reporter
        self.jobs = jobs
        self.lock: LockDocument | None = None
        self.records = True
        """Whether pull's records in duni/.monorepo may be read (not through a link)."""

    def rel(self, path: Path) -> str:
        """*path* relative to the project, POSIX form, for messages and ``paths``."""
        return Path(os.path.relpath(path, self.root)).as_posix()

    def dir_rel(self, pkg: LockedPackage, inner: str = "") -> str:
        base = self.rel(self.duni / pkg.dir)
        return f"{base}/{inner}" if inner else base


def label(pkg: LockedPackage) -> str:
    return f"{pkg.name} {pkg.version}"


def describe_source(source: Source) -> str:
    if isinstance(source, VcsSource):
        return f"{source.url}@{source.commit}"
    return source.url


def parallel(jobs: int, function: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    if len(items) <= 1 or jobs <= 1:
        return [function(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(jobs, len(items)), thread_name_prefix="verify") as p:
        return list(p.map(function, items))
