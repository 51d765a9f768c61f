"""Speed only: each sdist fetched into the content store as soon as the resolver pins it.

A cold lock with build dependencies is mostly waiting for the network: every source is
downloaded for the sources pass (its tree hash, its ``[build-system]``), and each
round of build requirements waits for the sources the last round chose.  Fetching
only once the resolution was over left the network idle while the resolver worked,
and then again behind the eight threads that fetch, extract and hash.  Instead every
version the resolver pins is fetched at once, sixteen at a time, into the store that
``pull`` reads from; the sources pass then finds the file there (the store's lock per
digest makes it wait for a download in flight rather than start a second one).

A pin that backtracking later drops costs one download that is not used; nothing
else depends on it.  Off with ``MONOREPO_NO_SPEEDUPS=sources-ahead``.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from resolvelib import BaseReporter

from monorepo._core.paths import CacheDir
from monorepo._core.speed.switches import enabled
from monorepo.project.lockfile import LockedPackage, SdistSource
from monorepo.resolve.finder import IndexRelease
from monorepo.resolve.model import Candidate, Req

if TYPE_CHECKING:
    from monorepo.overlays.rules import OverlaySet

#: Downloads at once: parallel curl with as many is the reference (pull's figure too).
DOWNLOADS = 16


class SourcesAhead(BaseReporter[Req, Candidate, str]):
    """A resolver reporter that starts the download of each pinned version's sdist."""

    def __init__(self, cache: CacheDir, overlays: OverlaySet, *, offline: bool) -> None:
        self.cache = cache
        self.overlays = overlays
        self.on = enabled("sources-ahead") and not offline
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()
        self._pool: ThreadPoolExecutor | None = None
        self._fetch: Any = None

    def __enter__(self) -> SourcesAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        """Wait for the downloads in flight (a thread must not outlive the lock that
        started it), dropping the ones not yet started."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._stack.close()

    def _start(self) -> ThreadPoolExecutor:
        if self._pool is None:
            from monorepo.index.http import HttpClient

            client = self._stack.enter_context(HttpClient(offline=False))
            self._fetch = client.stream
            self._pool = ThreadPoolExecutor(DOWNLOADS, thread_name_prefix="sources-ahead")
        return self._pool

    def pinning(self, candidate: Candidate) -> None:
        release = candidate.source
        if not self.on or not isinstance(release, IndexRelease):
            return
        sdist = release.sdist
        if sdist is None or sdist.sha256 is None:
            return
        matched = self.overlays.rule_for(candidate.name, candidate.version)
        if matched is not None and matched.rule.source is not None:
            return  # the overlay's source replaces the index's
        with self._lock:
            if sdist.sha256 in self._seen:
                return
            self._seen.add(sdist.sha256)
            pool = self._start()
        pkg = LockedPackage(
            candidate.name,
            candidate.version,
            SdistSource(
                url=sdist.url, sha256=sdist.sha256, size=sdist.size, upload_time=sdist.upload_time
            ),
        )
        pool.submit(self._one, pkg)

    def _one(self, pkg: LockedPackage) -> None:
        from monorepo.sources.fetch import fetch_source
        from monorepo.sources.store import ContentStore

        with contextlib.suppress(Exception):
            # the sources pass fetches it again, and reports a failure in its own words
            fetch_source(
                pkg, store=ContentStore(self.cache.store), cache=self.cache, fetch=self._fetch
            )
