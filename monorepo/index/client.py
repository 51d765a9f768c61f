"""The package index client: what files a project has, and their core metadata.

:class:`IndexClient` asks the indexes for project pages (negotiating PEP 691 JSON, accepting
PEP 503 HTML), memoises results so the resolver can ask freely, and fetches concurrently in
a thread pool so that prefetching a whole frontier of names costs one round trip, not one per
name.  Parsing lives in :mod:`monorepo.index.pages` (a page becomes a lazily parsed
:class:`~monorepo.index.pages.ProjectReleases`), and an unchanged page body is not parsed again:
:mod:`monorepo.index.speed.pagecache` keeps the parsed form by the body's digest.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from packaging.tags import Tag
from packaging.utils import NormalizedName, canonicalize_name

from monorepo._core.memo import Memo
from monorepo._core.reporter import NullReporter, Reporter
from monorepo.errors import IndexClientError, MonorepoError
from monorepo.index.backend import BuildBackend
from monorepo.index.http import HttpClient
from monorepo.index.pages import (
    DistFile,
    Groups,
    ProjectReleases,
    dist_files,
    html_page_records,
    json_page_records,
)
from monorepo.index.speed.metadatacache import MetadataCache
from monorepo.index.speed.pagecache import PageCache
from monorepo.index.speed.worker import (
    IndexWorker,
    PageRead,
    WorkerLost,
    WorkerSettings,
    read_page,
    read_wheel_metadata,
)
from monorepo.project.indexurl import normalize_index_url

if TYPE_CHECKING:
    from packaging.metadata import Metadata

__all__ = ["ACCEPT", "DistFile", "IndexClient", "parse_html_page", "parse_json_page"]

#: What we ask an index for: JSON preferred, HTML accepted (PEP 691 content negotiation).
ACCEPT = (
    "application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)


def parse_json_page(data: bytes, page_url: str, index_url: str) -> list[DistFile]:
    """Every file of a PEP 691 project page (PEP 700 fields included when present)."""
    return dist_files(json_page_records(data, page_url)[0], index_url)


def parse_html_page(data: bytes, page_url: str, index_url: str) -> list[DistFile]:
    """Every file of a PEP 503 project page, with PEP 592/658/714 ``data-`` attributes."""
    return dist_files(html_page_records(data, page_url)[0], index_url)


# --------------------------------------------------------------------------- the client

T = TypeVar("T")
K = TypeVar("K")


class IndexClient:
    """Reads projects' files and metadata from one or more simple indexes.

    Several indexes follow uv's first-index strategy: the first index that knows a project
    supplies all of its files, so a same-named project planted on a later index cannot
    shadow the real one (dependency confusion).  All public methods are thread-safe.

    Its collaborators are passed in, made by the caller from the one cache directory:
    *http* (which the client owns from then on: :meth:`close` closes it; offline when it
    is), the speed-only *page_cache* and *metadata_cache* (None: none), and the build
    *backend* that computes metadata no file of a release holds (None: such a release
    fails with a :class:`~monorepo.errors.MetadataError` naming it).

    With *workers*, pages are downloaded and parsed, and wheels' ``METADATA`` read, by
    that many :class:`~monorepo.index.speed.worker.IndexWorker` processes (not for
    ``file://`` indexes or offline), each request going to the least busy, with *http*'s
    settings and caches; anything they cannot do is done here, so the answers are the
    same.  *max_workers* threads fetch in this process.
    """

    def __init__(
        self,
        index_urls: Sequence[str],
        *,
        http: HttpClient,
        page_cache: PageCache | None = None,
        metadata_cache: MetadataCache | None = None,
        backend: BuildBackend | None = None,
        workers: int = 0,
        reporter: Reporter | None = None,
        max_workers: int = 16,
    ) -> None:
        if not index_urls:
            raise IndexClientError(
                "No package index is configured: set [tool.monorepo] index-url or "
                "MONOREPO_INDEX_URL."
            )
        # The one rule for index URLs; a relative path is a directory below the working
        # directory (callers that have a project have made theirs absolute already).
        self.index_urls = tuple(
            normalize_index_url(url, base=Path.cwd(), where="index URL") for url in index_urls
        )
        self.http = http
        self.offline = http.offline
        self.reporter: Reporter = reporter if reporter is not None else NullReporter()
        self.page_cache = page_cache
        self.metadata_cache = metadata_cache
        self.backend = backend
        self._workers: list[IndexWorker] = []
        self._turn = 0
        if workers > 0 and not self.offline:
            settings = WorkerSettings(
                http_cache=http.cache.root if http.cache is not None else None,
                page_cache=page_cache.root if page_cache is not None else None,
                metadata_cache=metadata_cache.root if metadata_cache is not None else None,
                offline=self.offline,
                timeout=http.timeout,
                retries=http.retries,
                backoff=http.backoff,
                max_connections=max(4, max_workers // workers),
                deadline=http.deadline,
            )
            with contextlib.suppress(WorkerLost):
                for _ in range(workers):
                    self._workers.append(IndexWorker(settings, self.reporter))
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="index")
        self._projects = Memo()
        self._metadata = Memo()
        self._read_lock = threading.Lock()
        self._pages_read: dict[NormalizedName, dict[str, str | None]] = {}
        self._used: set[NormalizedName] = set()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for worker in self._workers:
            worker.shutdown()  # all at once, then wait for each
        for worker in self._workers:
            worker.close()
        self.http.close()

    def __enter__(self) -> IndexClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- project pages

    def project(self, name: str) -> ProjectReleases:
        """Project *name*'s files from the first index that knows it (none if no index does)."""
        key = canonicalize_name(name)
        with self._read_lock:
            self._used.add(key)
        return self._page(key)

    def _page(self, key: NormalizedName) -> ProjectReleases:
        return self._projects.get(key, lambda: self._fetch_project(key))

    def project_files(self, name: str) -> tuple[DistFile, ...]:
        """Every file of project *name* (parses the whole page; the resolver uses
        :meth:`project`, which parses only the versions it looks at)."""
        return self.project(name).all_files()

    def prefetch(self, names: Iterable[str]) -> None:
        """Start fetching these projects' pages in the background; returns at once."""
        for name in names:
            key = canonicalize_name(name)
            if not self._projects.known(key):
                self.background(self._page, key)  # a guess: not "used" until asked for

    def background(self, function: Callable[[K], object], argument: K) -> None:
        """Run ``function(argument)`` in the client's pool; its errors are dropped (hints only)."""

        def run() -> None:
            # Errors stay memoised in the shared future and reach the caller who asks.
            with contextlib.suppress(Exception):
                function(argument)

        with contextlib.suppress(RuntimeError):  # the pool is shut down: nothing to do
            self._pool.submit(run)

    def _fetch_project(self, name: NormalizedName) -> ProjectReleases:
        for index_url in self.index_urls:
            page = self._fetch_page(index_url, name)
            if page is not None:
                groups, foreign = page
                if foreign:
                    self.reporter.message(
                        "debug",
                        f"{index_url}{name}/ lists {foreign} file(s) of another project; ignored",
                    )
                return ProjectReleases(name, index_url, groups)
        return ProjectReleases(name, self.index_urls[0], {})

    def _page_candidates(self, index_url: str, name: str) -> Iterator[tuple[str, str | None]]:
        if urlsplit(index_url).scheme == "file":
            # A directory tree has no content negotiation: prefer index.json when present.
            yield f"{index_url}{name}/index.json", None
            yield f"{index_url}{name}/index.html", None
        else:
            yield f"{index_url}{name}/", ACCEPT

    def pages_read(self) -> dict[str, str | None]:
        """The pages of every project asked for so far (prefetch guesses left out):
        ``"<index URL> <name>"`` -> the body's sha256, None where that index lacks it.

        With :meth:`pages_unchanged`, this tells whether a resolution's every input from
        the index is still byte for byte the same (``monorepo.locking.speed.reuse``).
        """
        with self._read_lock:
            return {
                key: digest
                for name in self._used
                for key, digest in self._pages_read.get(name, {}).items()
            }

    def pages_unchanged(self, pages: dict[str, str | None]) -> bool:
        """Whether reading these projects now gives exactly the recorded *pages*.

        Fetches them (concurrently with any prefetch already started); a page that
        changed, moved to another index or cannot be read makes the answer False.
        """
        names = {key.rpartition(" ")[2] for key in pages}
        self.prefetch(names)
        for name in names:
            try:
                self.project(name)
            except MonorepoError:
                return False
        current = self.pages_read()
        return all(key in current and current[key] == digest for key, digest in pages.items())

    def _record(self, index_url: str, name: NormalizedName, digest: str | None) -> None:
        with self._read_lock:
            self._pages_read.setdefault(name, {})[f"{index_url} {name}"] = digest

    def _fetch_page(self, index_url: str, name: NormalizedName) -> tuple[Groups, int] | None:
        """*name*'s files on *index_url*'s page; None when the index lacks the project."""
        page = self._read_page(index_url, name)
        self._record(index_url, name, page[2] if page is not None else None)
        return page[:2] if page is not None else None

    def _read_page(self, index_url: str, name: NormalizedName) -> PageRead | None:
        candidates = list(self._page_candidates(index_url, name))
        return self._in_worker(
            index_url,
            lambda worker: worker.page(candidates, name),
            lambda: read_page(self.http, self.page_cache, candidates, name),
        )

    def _in_worker(self, url: str, remote: Callable[[IndexWorker], T], local: Callable[[], T]) -> T:
        """``remote(worker)`` in the worker :meth:`_worker_for` picks; ``local()`` here
        when there is none or it is lost on the way (the answer is the same)."""
        worker = self._worker_for(url)
        if worker is not None:
            try:
                return remote(worker)
            except WorkerLost:
                pass
        return local()

    def _worker_for(self, url: str) -> IndexWorker | None:
        """The live worker with the fewest requests under way, taking turns among equals;
        None for local files."""
        if not self._workers or urlsplit(url).scheme == "file":
            return None
        with self._read_lock:
            self._turn += 1
            turn = self._turn
        count = len(self._workers)
        order = [self._workers[(turn + i) % count] for i in range(count)]
        live = [w for w in order if w.alive]
        return min(live, key=lambda w: w.pending) if live else None

    def _read_wheel(self, wheel: DistFile) -> bytes:
        arguments = (wheel.url, wheel.filename, wheel.sha256, wheel.size)
        return self._in_worker(
            wheel.url,
            lambda worker: worker.wheel_metadata(*arguments),
            lambda: read_wheel_metadata(self.http, *arguments),
        )

    def _read_core_metadata(self, wheel: DistFile) -> bytes:
        """*wheel*'s PEP 658 file, checked against its advertised sha256."""
        sha256 = wheel.core_metadata if isinstance(wheel.core_metadata, str) else None
        return self._in_worker(
            wheel.metadata_url,
            lambda worker: worker.core_metadata(wheel.metadata_url, sha256, wheel.sha256),
            lambda: self.fetch(wheel.metadata_url, sha256=sha256),
        )

    # -- files and metadata

    def fetch(self, url: str, *, sha256: str | None = None, size: int | None = None) -> bytes:
        """The whole body of *url*, checked against *sha256* and *size* when given."""
        return self.http.get(url, sha256=sha256, size=size).body

    def metadata(self, dist: DistFile) -> Metadata:
        """Core metadata of the one file *dist* (see :meth:`release_metadata`); memoised."""
        return self.release_metadata((dist,), dist.tags)

    def release_metadata(self, files: Sequence[DistFile], tags: frozenset[Tag]) -> Metadata:
        """Core metadata of one version from any of its *files*; memoised.

        *tags* are the target's wheel tags: a wheel it would install is the preferred
        source.  See :func:`monorepo.index.metadata.release_metadata` for the order of sources.
        """
        key = (tuple(sorted(f.url for f in files)), tags)
        return self._metadata.get(key, lambda: self._release_metadata(files, tags))

    def _release_metadata(self, files: Sequence[DistFile], tags: frozenset[Tag]) -> Metadata:
        # Imported here: packaging.metadata, filelock and the build hooks are a tenth of
        # a second that a lock's start spends better on sending its first page requests.
        from monorepo.index import metadata as _metadata

        return _metadata.release_metadata(
            files,
            target_tags=tags,
            http=self.http,
            cache=self.metadata_cache,
            backend=self.backend,
            reporter=self.reporter,
            read_wheel=self._read_wheel,
            read_core_metadata=self._read_core_metadata,
        )

    def prefetch_metadata(
        self, releases: Iterable[Sequence[DistFile]], tags: frozenset[Tag]
    ) -> None:
        """Start :meth:`release_metadata` for these versions in the background; returns at once."""
        for files in releases:
            files = tuple(files)
            if files and not self._metadata.known((tuple(sorted(f.url for f in files)), tags)):
                self.background(lambda fs: self.release_metadata(fs, tags), files)
