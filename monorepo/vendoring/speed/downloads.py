"""Speed only: sources downloaded ahead of extraction, in an order that keeps every core busy.

The network stays busy from the start of a cold pull while the extractors work (data
set: 7.8 s, of which 1.7 s is the download alone).  Turn it off with
``MONOREPO_NO_SPEEDUPS=download-ahead``: each package's thread then fetches its own
source before extracting it.
"""

from __future__ import annotations

import contextlib
import os
import queue
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from monorepo._core.paths import CacheDir
from monorepo._core.speed.switches import enabled
from monorepo.project.lockfile import (
    ArchiveSource,
    LockedPackage,
    SdistSource,
)
from monorepo.sources.fetch import Fetch, fetch_source
from monorepo.sources.store import ContentStore


def largest_first(packages: Sequence[LockedPackage]) -> list[LockedPackage]:
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


DOWNLOADS = 16
"""Sources downloaded at once (at least): as many as the HTTP client's connections.
Parallel curl with as many is the reference; 8 at once took a fifth longer here."""


def download_ahead(
    packages: Sequence[LockedPackage],
    duni: Path,
    stack: contextlib.ExitStack,
    *,
    store: ContentStore,
    cache: CacheDir,
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
    existing one, pull decides, and fetches only when the tree must be
    rebuilt.  The order is :func:`download_order`'s.  The futures raise what
    :func:`fetch_source` raises; the pool is shut down (pending fetches cancelled)
    when the pull ends.
    """
    if not enabled("download-ahead"):
        return {}  # each package's thread fetches its own source
    wanted = [
        pkg
        for pkg in download_order(packages)
        if isinstance(pkg.source, SdistSource | ArchiveSource)
        and not os.path.lexists(duni / pkg.dir)
    ]
    if not wanted:
        return {}
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="fetch")
    stack.callback(pool.shutdown, wait=True, cancel_futures=True)
    return {
        pkg.dir: pool.submit(
            fetch_source,
            pkg,
            store=store,
            cache=cache,
            fetch=fetch,
            offline=offline,
            same_origin=True,
        )
        for pkg in wanted
    }


def download_order(packages: Sequence[LockedPackage]) -> list[LockedPackage]:
    """The largest and the smallest of the rest, alternately.

    Largest first alone fed the extractors nothing for the first second of a cold
    pull of the data set: sixteen large files shared the network and none was done
    before the others.  Alternating, half the downloads are small ones that finish
    at once, so extraction starts early, while the large ones, started first, are
    not left for the end either.
    """
    by_size = largest_first(packages)
    order: list[LockedPackage] = []
    low, high = 0, len(by_size) - 1
    while low <= high:
        order.append(by_size[low])
        if low != high:
            order.append(by_size[high])
        low, high = low + 1, high - 1
    return order


def ready_in_order(
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
