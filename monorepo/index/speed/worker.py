"""Index pages and wheel metadata, read by a second process while the resolver runs.

A cold lock of a hundred packages is CPU-bound on one core: its threads download and
decode megabytes of JSON pages and parse wheels' zip directories while the resolver
works, all under one GIL.  Measured on the data bench set, the process held the GIL for
the whole two-second run, and a page request that takes 25 ms alone took 100 to 250 ms
in it, because every socket read waited for the interpreter.  The resolver's chain of
page, metadata, next page is made of exactly those requests.

So :class:`IndexWorker` moves the part that needs no resolver state to another
interpreter (another core): fetching a project page and turning it into
:data:`~monorepo.index.pages.Groups` (through the shared page cache), reading a wheel's
``METADATA`` with byte ranges, and fetching a wheel's PEP 658 metadata file.  The
resolving process then needs no HTTP client of its own: it never imports httpx or loads
the CA bundle, 60 ms of its start-up.  The resolving process keeps every decision and every
cache lookup that decides something; the worker only does I/O and parsing the resolving
process would otherwise do itself, with the same functions (:func:`read_page`,
:func:`read_wheel_metadata`).  Errors come back as the same exceptions.  If the worker
cannot start or dies, :class:`WorkerLost` tells the caller to do the work in-process,
so a lost worker costs time, never a result.

Saves about a tenth of a cold lock on two cores.  Turn it off with
``MONOREPO_NO_SPEEDUPS=index-workers``: the lock then reads everything with its own
threads, through the same functions.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from packaging.utils import NormalizedName

from monorepo._core.reporter import Level, NullReporter, Reporter
from monorepo._core.speed import workerproc
from monorepo._core.speed.switches import enabled
from monorepo._core.speed.workerproc import WorkerLost
from monorepo._core.speed.writebehind import WriteBehind
from monorepo.errors import IndexClientError
from monorepo.index import lazywheel
from monorepo.index.deadline import Deadline
from monorepo.index.http import HttpClient
from monorepo.index.http import prepare as http_prepare
from monorepo.index.httpcache import CacheEntry, HttpCache
from monorepo.index.pages import Groups, html_page_records, json_page_records
from monorepo.index.speed.dns import share_dns_lookups
from monorepo.index.speed.metadatacache import MetadataCache
from monorepo.index.speed.pagecache import PageCache, body_digest

__all__ = ["IndexWorker", "PageRead", "WorkerLost", "WorkerSettings", "read_page"]

#: A page as read: its files grouped by version, how many files of other projects it
#: listed, and the sha256 of the body (what ``monorepo.locking.speed.reuse`` compares).
PageRead = tuple[Groups, int, str]


def read_page(
    http: HttpClient,
    page_cache: PageCache | None,
    candidates: Sequence[tuple[str, str | None]],
    name: NormalizedName,
) -> PageRead | None:
    """The first of *candidates* (page URL, Accept header) that exists, parsed; None if none.

    A body already parsed once (same sha256) comes from *page_cache* instead.
    """
    for page_url, accept in candidates:
        response = http.get(page_url, accept=accept, not_found_ok=True)
        if response.status == 404:
            continue
        content_type = response.content_type.split(";")[0].strip().lower()
        is_json = content_type.endswith("+json") or content_type == "application/json"
        cache_url = f"{response.url}\n{'json' if is_json else 'html'}"
        digest = response.sha256 or body_digest(response.body)
        cached = page_cache.load(cache_url, name, digest) if page_cache is not None else None
        if cached is not None:
            return (*cached, digest)
        parse = json_page_records if is_json else html_page_records
        groups, foreign = parse(response.body, response.url, name)
        if page_cache is not None:
            page_cache.store(cache_url, name, digest, groups, foreign)
        return groups, foreign, digest
    return None


def read_wheel_metadata(
    http: HttpClient, url: str, filename: str, sha256: str | None, size: int | None
) -> bytes:
    """A wheel's ``METADATA``: byte ranges where the server allows, else the whole file."""

    def download() -> bytes:
        return http.get(url, sha256=sha256, size=size).body

    return lazywheel.wheel_metadata(
        url, filename, client=http, download=download, sha256=sha256, size=size
    )


@dataclass(frozen=True)
class WorkerSettings:
    """What the worker's own :class:`~monorepo.index.http.HttpClient` and caches are made with."""

    http_cache: Path | None
    page_cache: Path | None
    metadata_cache: Path | None
    """Where the worker stores the metadata it reads, by the wheel's sha256 (None: nowhere)."""
    offline: bool
    timeout: float
    retries: int
    backoff: float
    max_connections: int
    deadline: Deadline = field(default_factory=Deadline)
    """The parent's, so both read the environment the same way, and once."""


class IndexWorker:
    """One worker process serving :func:`read_page`, :func:`read_wheel_metadata` and small
    checked fetches.

    Thread-safe: any number of threads may wait on requests at once; the worker runs them
    concurrently.  Start-up does not block: requests queue in the pipe while the worker
    imports.  Its reporter messages (retries, warnings) are passed to *reporter*.
    """

    def __init__(self, settings: WorkerSettings, reporter: Reporter | None = None) -> None:
        self.reporter: Reporter = reporter if reporter is not None else NullReporter()
        self._process = workerproc.spawn(__name__, "_serve")
        assert self._process.stdin is not None and self._process.stdout is not None
        self._requests = self._process.stdin.fileno()
        self._replies = self._process.stdout.fileno()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._pending: dict[int, Future[Any]] = {}
        self._next = 0
        self._lost: str | None = None
        self._closed = False
        self.answered = 0
        """How many requests the worker answered (for diagnostics and tests)."""
        self._send(settings)
        self._reader = threading.Thread(target=self._read, name="index-worker", daemon=True)
        self._reader.start()

    def page(
        self, candidates: Sequence[tuple[str, str | None]], name: NormalizedName
    ) -> PageRead | None:
        """:func:`read_page` in the worker; raises :class:`WorkerLost` if it is gone."""
        return cast("PageRead | None", self._call("page", tuple(candidates), name))

    def wheel_metadata(
        self, url: str, filename: str, sha256: str | None, size: int | None
    ) -> bytes:
        """:func:`read_wheel_metadata` in the worker; raises :class:`WorkerLost` if it is gone."""
        return cast(bytes, self._call("wheel_metadata", url, filename, sha256, size))

    def core_metadata(self, url: str, sha256: str | None, wheel_sha256: str | None) -> bytes:
        """A wheel's PEP 658 file at *url*, checked against *sha256*, read in the worker
        (and cached under *wheel_sha256*); raises :class:`WorkerLost` if it is gone."""
        return cast(bytes, self._call("core_metadata", url, sha256, wheel_sha256))

    def shutdown(self) -> None:
        """Tell the worker to finish (it ends once its requests under way are answered);
        returns at once, so several workers can be told before :meth:`close` waits."""
        with contextlib.suppress(OSError), self._write_lock:
            self._closed = True  # no write after this: the descriptor may be reused
            if self._process.stdin is not None:
                self._process.stdin.close()

    def close(self) -> None:
        """Let the worker finish what it is doing, then stop it."""
        self.shutdown()
        workerproc.stop(self._process, then=lambda: self._reader.join(timeout=10))
        self._lose("closed")

    @property
    def pending(self) -> int:
        """Requests sent and not yet answered."""
        with self._lock:
            return len(self._pending)

    @property
    def alive(self) -> bool:
        with self._lock:
            return self._lost is None

    def _call(self, operation: str, *arguments: object) -> object:
        future: Future[Any] = Future()
        with self._lock:
            if self._lost is not None:
                raise WorkerLost(self._lost)
            self._next += 1
            number = self._next
            self._pending[number] = future
        self._send((number, operation, arguments))
        return future.result()

    def _send(self, value: object) -> None:
        try:
            with self._write_lock:
                if self._closed:
                    raise OSError("the worker was told to stop")
                workerproc.send(self._requests, value)
        except OSError as error:
            self._lose(f"cannot write to the index worker: {error}")

    def _read(self) -> None:
        while True:
            try:
                number, status, value = cast(
                    "tuple[int, str, Any]", workerproc.receive(self._replies)
                )
            except Exception as error:  # EOF, a closed pipe, a broken frame: all mean gone
                self._lose(f"the index worker stopped ({error or type(error).__name__})")
                return
            if status == "message":
                level, text = value
                self.reporter.message(level, text)
                continue
            with self._lock:
                future = self._pending.pop(number, None)
                self.answered += 1
            if future is None:
                continue
            if status == "ok":
                future.set_result(value)
            else:
                future.set_exception(value)

    def _lose(self, why: str) -> None:
        with self._lock:
            if self._lost is None:
                self._lost = why
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(WorkerLost(why))


class _ForwardingReporter(NullReporter):
    """The worker's reporter: messages go back to the parent's, progress is the parent's."""

    def __init__(self, reply: Callable[[object], None]) -> None:
        self._reply = reply

    def message(self, level: Level, text: str) -> None:
        self._reply((0, "message", (level, text)))


class _LaterHttpCache(HttpCache):
    """The worker's HTTP cache: entries are written when the worker is idle (see
    :mod:`monorepo._core.speed.writebehind`); reads are as usual."""

    def __init__(self, root: Path, behind: WriteBehind) -> None:
        super().__init__(root)
        self._behind = behind

    def store(self, url: str, accept: str | None, entry: CacheEntry) -> None:
        self._behind.defer(lambda: HttpCache.store(self, url, accept, entry), len(entry.body))


class _LaterPageCache(PageCache):
    """The worker's page cache, written like :class:`_LaterHttpCache`."""

    def __init__(self, root: Path, behind: WriteBehind) -> None:
        super().__init__(root)
        self._behind = behind

    def store(self, page_url: str, project: str, digest: str, groups: Groups, foreign: int) -> None:
        size = sum(len(blob) for blob in groups.values())
        self._behind.defer(
            lambda: PageCache.store(self, page_url, project, digest, groups, foreign), size
        )


def _serve() -> None:
    """The worker: settings first, then requests until stdin closes."""
    requests, replies = workerproc.serving_fds()
    write_lock = threading.Lock()

    def reply(frame: object) -> None:
        try:
            with write_lock:
                workerproc.send(replies, frame)
        except OSError:
            pass  # the parent has gone; stdin's EOF ends the loop

    if enabled("dns"):
        share_dns_lookups()
    http_prepare()  # while the parent has not sent the settings yet
    try:
        settings = cast(WorkerSettings, workerproc.receive(requests))
    except EOFError:
        return
    behind = WriteBehind()
    later = enabled("write-behind")
    http_cache: HttpCache | None = None
    if settings.http_cache is not None:
        http_cache = (
            _LaterHttpCache(settings.http_cache, behind)
            if later
            else HttpCache(settings.http_cache)
        )
    page_cache: PageCache | None = None
    if settings.page_cache is not None:
        page_cache = (
            _LaterPageCache(settings.page_cache, behind)
            if later
            else PageCache(settings.page_cache)
        )
    http = HttpClient(
        cache=http_cache,
        offline=settings.offline,
        reporter=_ForwardingReporter(reply),
        timeout=settings.timeout,
        retries=settings.retries,
        backoff=settings.backoff,
        max_connections=settings.max_connections,
        deadline=settings.deadline,
    )
    # Stored here, where the text arrives, rather than by the resolving process, which
    # would spend its own time (and GIL) on a temporary file and a rename per release;
    # and at once, not behind: a lock of several targets may ask for one wheel's again.
    metadata_cache = MetadataCache(settings.metadata_cache) if settings.metadata_cache else None

    def handle(number: int, operation: str, arguments: tuple[Any, ...]) -> None:
        with behind.busy():
            answer(number, operation, arguments)

    def answer(number: int, operation: str, arguments: tuple[Any, ...]) -> None:
        try:
            if operation == "page":
                value: object = read_page(http, page_cache, *arguments)
            elif operation == "wheel_metadata":
                value = read_wheel_metadata(http, *arguments)
                if metadata_cache is not None:
                    metadata_cache.store(arguments[2], value)
            elif operation == "core_metadata":
                url, sha256, wheel_sha256 = arguments
                value = http.get(url, sha256=sha256).body
                if metadata_cache is not None:
                    metadata_cache.store(wheel_sha256, value)
            else:
                raise IndexClientError(f"the index worker has no operation {operation!r}")
            frame: tuple[int, str, object] = (number, "ok", value)
        except Exception as error:  # raised again in the parent, same type and message
            sent = error if workerproc.picklable(error) else IndexClientError(str(error))
            frame = (number, "error", sent)
        reply(frame)

    pool = ThreadPoolExecutor(settings.max_connections, thread_name_prefix="worker")
    while True:
        try:
            number, operation, arguments = cast(
                "tuple[int, str, tuple[Any, ...]]", workerproc.receive(requests)
            )
        except EOFError:
            break
        pool.submit(handle, number, operation, arguments)
    # The parent closed the pipe: it wants no more answers. Requests not started are
    # dropped; those under way finish, so no cache entry is left half-written.  Then the
    # process ends without tearing down its objects (megabytes of parsed pages) or saying
    # goodbye on each connection: the parent waits for this exit.
    pool.shutdown(wait=True, cancel_futures=True)
    behind.close()
    os._exit(0)
