"""HTTP GET for the index client: retries, the on-disk cache, offline mode and file:// URLs.

Everything the index client reads goes through :meth:`HttpClient.get`, so the rules that
make a lock run robust live in one place: transient failures (5xx, resets, read timeouts,
truncated bodies) are retried with exponential backoff and jitter, while failures that
another attempt cannot fix (4xx, TLS and certificate errors, redirect loops) fail at once;
every request, all its attempts together, has a :class:`Deadline` scaled by its size, so a
server that trickles its answer cannot hold a run forever; every httpx exception becomes a
typed error naming the URL; responses are kept
in :class:`~monorepo.index.httpcache.HttpCache` and revalidated; ``offline=True`` answers only from
that cache.  One :class:`httpx.Client` is shared by all threads so connections are pooled
over HTTP/1.1 keep-alive connections.  Not HTTP/2: httpcore's synchronous HTTP/2 reads all
streams of a connection behind one lock, so the index pool's threads wait on each other's
big pages (a warm lock of 117 packages measured 15% slower in ten alternated runs, one of
them an 11 s outlier); separate connections read in parallel and fail one at a time.
:meth:`HttpClient.get_range` and :meth:`HttpClient.get_suffix` read part of a file (HTTP
``Range``) under the same retry rules; partial answers are never cached; and
:meth:`HttpClient.stream` hands large files over in pieces, again under the same rules:
one loop (:meth:`HttpClient._exchange`) makes every network request of the client.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from monorepo._core.paths import url_path
from monorepo._core.reporter import NullReporter, Reporter
from monorepo.errors import (
    HashMismatchError,
    IndexClientError,
    MonorepoError,
    OfflineError,
)
from monorepo.index import httpcache
from monorepo.index.deadline import DEFAULT_TIMEOUT, Budget, Deadline
from monorepo.index.httpcache import CacheEntry, HttpCache
from monorepo.index.retry import RETRYABLE_STATUS, Retryable, dropped, is_tls_error

if TYPE_CHECKING:
    import ssl

    import httpx

# httpx (and ssl) are imported by the methods that use the network, not here: loading
# them takes a process about 60 ms, and a lock whose index workers do all its requests,
# or a run that reads only the cache or file:// URLs, never needs them.

#: Seconds before the first retry; doubled for each further one (plus up to as much jitter).
DEFAULT_BACKOFF = 0.5


_T = TypeVar("_T")
_M = TypeVar("_M", bound=Callable[..., object])


def _names_url(method: _M) -> _M:
    """Errors of *method* (whose first argument is a URL) carry that URL as their ``url``."""

    @functools.wraps(method)
    def wrapper(self: object, url: str, *args: object, **kwargs: object) -> object:
        try:
            return method(self, url, *args, **kwargs)
        except MonorepoError as error:
            error.annotate(url=url)
            raise

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class _Reply:
    """An answer read to its end within its deadline (the body decoded)."""

    url: str
    status_code: int
    reason_phrase: str
    headers: dict[str, str]
    """Lower-cased names."""
    content: bytes


def prepare() -> None:
    """Import httpx and load the CA certificates now, ahead of the first request.

    Together about 60 ms; a process that is idle before its first request (an index
    worker waiting for its settings) calls this so that request does not wait for them.
    """
    _tls_context()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``),
    made once per process: loading the CA bundle takes about 25 ms."""
    import httpx

    return httpx.create_ssl_context()


@dataclass(frozen=True)
class Response:
    """A successful (or tolerated not-found) answer, from the network, the cache or disk."""

    url: str
    """The final URL after redirects: what relative links resolve against."""
    status: int
    body: bytes
    content_type: str
    from_cache: bool = False
    sha256: str = ""
    """Of :attr:`body`, when already computed (by the cache); empty otherwise."""


@dataclass(frozen=True)
class RangeResponse:
    """Part of a file: ``body`` holds the file's bytes from offset ``start``."""

    url: str
    body: bytes
    start: int
    total: int | None
    """The whole file's size, when the server said (``Content-Range: bytes a-b/total``)."""
    partial: bool
    """False when the server ignored ``Range`` and sent the whole file (HTTP 200)."""


class RangeNotSupported(IndexClientError):
    """The server refuses byte ranges for this URL (HTTP 416 or 501, or a multipart answer)."""


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


def _content_type_for_path(path: Path) -> str:
    if path.suffix == ".json":
        return "application/vnd.pypi.simple.v1+json"
    if path.suffix in (".html", ".htm"):
        return "text/html"
    return "application/octet-stream"


def _check_integrity(url: str, body: bytes, sha256: str | None, size: int | None) -> None:
    if size is not None and len(body) != size:
        raise HashMismatchError(
            f"{url} has {len(body)} bytes where the index (or lock) records {size}: the file "
            "changed upstream or the download was damaged. Retry; if it persists, the file "
            "was replaced upstream and the lock must be refreshed with 'monorepo lock'."
        )
    if sha256 is not None:
        actual = hashlib.sha256(body).hexdigest()
        if actual != sha256.lower():
            raise HashMismatchError(
                f"{url} has sha256 {actual}, expected {sha256.lower()}: the file changed "
                "upstream or the download was damaged. Retry; if it persists, the file was "
                "replaced upstream and the lock must be refreshed with 'monorepo lock'."
            )


class HttpClient:
    """Thread-safe GET with retries, a deadline, caching and offline mode.

    *retries* is the number of further attempts after the first.  *backoff* is the delay
    before the first retry, so tests can make retries instantaneous.  *cache* of ``None``
    disables caching (and makes ``offline`` able to read only ``file://`` URLs).
    *timeout* is the per-read (and connect) timeout; *deadline* bounds each request as a
    whole (default: :meth:`Deadline.from_env`).
    """

    def __init__(
        self,
        *,
        cache: HttpCache | None = None,
        offline: bool = False,
        reporter: Reporter | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = DEFAULT_BACKOFF,
        max_connections: int = 16,
        deadline: Deadline | None = None,
    ) -> None:
        self.cache = cache
        self.offline = offline
        self.reporter: Reporter = reporter if reporter is not None else NullReporter()
        self.retries = max(0, retries)
        self.backoff = backoff
        self.deadline = deadline if deadline is not None else Deadline.from_env()
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self.timeout = timeout
        self.max_connections = max_connections

    def _http(self) -> httpx.Client:
        """Created on first network use: offline and file:// runs never open a pool."""
        import httpx

        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    verify=_tls_context(),
                    http2=False,
                    follow_redirects=True,
                    timeout=self.timeout,
                    limits=httpx.Limits(
                        max_connections=self.max_connections,
                        max_keepalive_connections=self.max_connections,
                    ),
                    headers={"User-Agent": "monorepo (index client)"},
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @_names_url
    def get(
        self,
        url: str,
        *,
        accept: str | None = None,
        sha256: str | None = None,
        size: int | None = None,
        not_found_ok: bool = False,
    ) -> Response:
        """The body of *url*.

        With *sha256* (and/or *size*) the content is immutable: a cached copy that hashes
        right is used without asking the server, and a download that does not raises
        :class:`HashMismatchError` and is not cached.  With *not_found_ok* a 404/410 is
        returned (status 404, empty body) instead of raised: for an index page it means
        "this index does not know the project".
        """
        if urlsplit(url).scheme == "file":
            response = self._get_file(url, not_found_ok=not_found_ok)
            if response.status == 200:
                _check_integrity(url, response.body, sha256, size)
            return response

        immutable = sha256 is not None or size is not None
        cache = self.cache
        if cache is not None and (immutable or self.offline):
            entry = cache.load(url, accept)
        else:
            # Revalidation needs only the stored headers; the body is read if used.
            entry = cache.peek(url, accept) if cache is not None else None
        if entry is not None and immutable:
            try:
                _check_integrity(url, entry.body, sha256, size)
            except HashMismatchError:
                entry = None
            else:
                return self._from_entry(entry)
        if self.offline:
            if entry is not None:
                return self._from_entry(entry)
            raise OfflineError(
                f"{url} is not in the HTTP cache ({self._cache_location()}) and --offline "
                "forbids downloading it. Run the same command once without --offline to "
                "fill the cache."
            )
        if cache is not None and entry is not None and httpcache.is_fresh(entry, httpcache.now()):
            full = cache.load(url, accept)
            if full is not None:
                return self._from_entry(full)
            entry = None

        headers: dict[str, str] = {}
        if accept:
            headers["Accept"] = accept
        if entry is not None:
            headers.update(entry.validators())
        reply = self._request(url, headers, size=size)
        received = httpcache.now()
        reply_headers = reply.headers

        if reply.status_code == 304 and entry is not None and cache is not None:
            full = cache.load(url, accept)
            if full is not None:
                refreshed = full.refreshed(reply_headers, received)
                if httpcache.is_storable(reply_headers):
                    cache.store(url, accept, refreshed)
                return self._from_entry(refreshed)
            # the entry vanished under us: ask again, unconditionally
            reply = self._request(url, {"Accept": accept} if accept else {}, size=size)
            received = httpcache.now()
            reply_headers = reply.headers
        if reply.status_code in (404, 410) and not_found_ok:
            return Response(url=reply.url, status=404, body=b"", content_type="")
        if reply.status_code != 200:
            raise IndexClientError(
                f"GET {url} answered HTTP {reply.status_code} {reply.reason_phrase}. Check "
                "the index URL and, for 401/403, the credentials the index needs."
            )
        body = reply.content
        if immutable:
            _check_integrity(url, body, sha256, size)
        fresh = CacheEntry(
            url=reply.url,
            status=200,
            body=body,
            headers={k: v for k, v in reply_headers.items() if k in httpcache.STORED_HEADERS},
            stored_at=received,
            sha256=hashlib.sha256(body).hexdigest(),
        )
        if (
            cache is not None
            and httpcache.is_storable(reply_headers)
            and not httpcache.already_kept(entry, fresh)
        ):
            cache.store(url, accept, fresh)
        return Response(
            url=fresh.url,
            status=200,
            body=body,
            content_type=fresh.content_type,
            sha256=fresh.sha256,
        )

    @_names_url
    def get_range(self, url: str, start: int, end: int) -> RangeResponse:
        """Bytes *start* to *end* (inclusive, as HTTP counts) of *url*.

        A server that ignores ``Range`` answers with the whole file (``partial`` False); one
        that refuses it raises :class:`RangeNotSupported`.  Ranges are never cached, so
        ``offline`` raises :class:`OfflineError`.  ``file://`` URLs are read with a seek.
        """
        if start < 0 or end < start:
            raise ValueError(f"bad byte range {start}-{end}")
        return self._get_range(url, start, end)

    @_names_url
    def get_suffix(self, url: str, length: int) -> RangeResponse:
        """The last *length* bytes of *url* (all of it when shorter); see :meth:`get_range`."""
        if length <= 0:
            raise ValueError(f"bad suffix length {length}")
        return self._get_range(url, -length, None)

    def _get_range(self, url: str, start: int, end: int | None) -> RangeResponse:
        """*start* < 0 asks for the last ``-start`` bytes (a suffix range)."""
        if urlsplit(url).scheme == "file":
            return self._file_range(url, start, end)
        spec = f"bytes={start}" if start < 0 else f"bytes={start}-{end}"
        if self.offline:
            raise OfflineError(
                f"{url}: --offline forbids reading part of a file from the network (byte "
                "ranges are not cached). Run the same command once without --offline."
            )
        headers = {"Range": spec, "Accept-Encoding": "identity"}
        length = -start if end is None else end - start + 1
        reply = self._request(url, headers, final_status=frozenset({501}), size=length)
        what = f"GET {url} (Range {spec})"
        if reply.status_code in (416, 501):
            raise RangeNotSupported(
                f"{what} answered HTTP {reply.status_code} {reply.reason_phrase}."
            )
        if reply.status_code == 200:
            body = reply.content
            return RangeResponse(reply.url, body, 0, len(body), partial=False)
        if reply.status_code != 206:
            raise IndexClientError(
                f"{what} answered HTTP {reply.status_code} {reply.reason_phrase}. Check the "
                "index URL and, for 401/403, the credentials the index needs."
            )
        match = _CONTENT_RANGE.match(reply.headers.get("content-range", ""))
        if match is None or reply.headers.get("content-type", "").lower().startswith("multipart/"):
            raise RangeNotSupported(f"{what} answered 206 without a single Content-Range.")
        first, last = int(match.group(1)), int(match.group(2))
        total = None if match.group(3) == "*" else int(match.group(3))
        body = reply.content
        # A suffix longer than the file is the whole file (RFC 9110 14.1.2).
        suffix_first = first if total is None else max(0, total + start)
        expected = start if start >= 0 else suffix_first
        if (
            len(body) != last - first + 1
            or first != expected
            or (total is not None and last >= total)
        ):
            raise IndexClientError(
                f"{what} answered bytes {first}-{last}/{match.group(3)} with {len(body)} "
                "bytes: not the range asked for. The server or a proxy mishandles ranges."
            )
        return RangeResponse(reply.url, body, first, total, partial=True)

    @staticmethod
    def _file_range(url: str, start: int, end: int | None) -> RangeResponse:
        path = url_path(urlsplit(url).path)
        try:
            with path.open("rb") as handle:
                total = handle.seek(0, 2)
                first = max(0, total + start) if start < 0 else start
                stop = total if end is None else min(end + 1, total)
                if first >= total > 0:
                    raise RangeNotSupported(f"{url}: bytes {start}-{end} lie beyond its end.")
                handle.seek(first)
                body = handle.read(max(0, stop - first))
        except OSError as error:
            raise IndexClientError(f"{url} cannot be read: {error}.") from error
        return RangeResponse(url, body, first, total, partial=True)

    def stream(
        self, url: str, *, chunk_size: int = 1 << 16, size: int | None = None
    ) -> Iterator[bytes]:
        """The body of *url* as chunks, for large immutable files the caller stores itself.

        Used for sdists and archives, which go to the content-addressed store (verified
        there by sha256), so the HTTP cache is bypassed rather than filled twice.  The
        retry policy and the deadline (for *size* bytes, when the caller knows it) are
        :meth:`get`'s; a retry after some chunks were already yielded resumes instead of
        restarting: it asks for the rest with a ``Range`` request and, when the server
        ignores it (200 instead of 206), skips the bytes already delivered, so the
        caller sees one continuous body.  Network chunks are yielded as they arrive (the
        deadline is checked on each); ``file://`` URLs are read from disk in chunks of
        *chunk_size*.  Offline, only ``file://`` works.
        """
        if urlsplit(url).scheme == "file":
            path = url_path(urlsplit(url).path)
            try:
                with path.open("rb") as f:
                    while chunk := f.read(chunk_size):
                        yield chunk
            except OSError as error:
                raise IndexClientError(
                    f"{url} cannot be read: {error.strerror or error}. Check that the file exists."
                ) from error
            return
        if self.offline:
            raise OfflineError(
                f"{url} is not available offline: --offline forbids downloading it. Run the "
                "same command once without --offline to fill the cache."
            )
        delivered = 0

        def attempt(reply: httpx.Response, budget: Budget) -> Iterator[bytes]:
            nonlocal delivered
            if reply.status_code == 206 and delivered:
                skip = 0
            elif reply.status_code == 200:
                skip = delivered
            else:
                raise IndexClientError(
                    f"GET {url} answered HTTP {reply.status_code} {reply.reason_phrase}."
                    " Check the URL in pylock.toml and, for 401/403, the credentials the"
                    " index needs."
                )
            total: int | None = None
            declared = _declared_length(reply)
            if declared is not None:
                total = declared + (delivered - skip)
                budget.expect(total)
            for chunk in self._body(reply, budget):
                if skip:
                    unwanted = min(skip, len(chunk))
                    chunk, skip = chunk[unwanted:], skip - unwanted
                    if not chunk:
                        continue
                delivered += len(chunk)
                yield chunk
            if skip or (total is not None and delivered != total):
                raise Retryable(f"truncated body: {delivered} of {total} bytes received")

        yield from self._exchange(
            url,
            lambda: {"Range": f"bytes={delivered}-"} if delivered else {},
            attempt,
            size=size,
        )

    def _request(
        self,
        url: str,
        headers: dict[str, str],
        *,
        final_status: frozenset[int] = frozenset(),
        size: int | None = None,
    ) -> _Reply:
        """One logical GET read into memory; non-retryable answers returned, not raised.

        A 5xx in *final_status* is an answer, not a transient failure (501 to a Range).
        """

        def attempt(reply: httpx.Response, budget: Budget) -> Iterator[_Reply]:
            declared = _declared_length(reply)
            if declared is not None:
                budget.expect(declared)
            body = b"".join(self._body(reply, budget))
            if declared is not None and declared != len(body):
                raise Retryable(f"truncated body: {len(body)} of {declared} bytes received")
            yield _Reply(
                url=str(reply.url),
                status_code=reply.status_code,
                reason_phrase=reply.reason_phrase,
                headers={k.lower(): v for k, v in reply.headers.items()},
                content=body,
            )

        for reply in self._exchange(
            url, lambda: headers, attempt, final_status=final_status, size=size
        ):
            return reply
        raise AssertionError("unreachable: an exchange yields or raises")  # pragma: no cover

    def _exchange(
        self,
        url: str,
        headers: Callable[[], dict[str, str]],
        attempt: Callable[[httpx.Response, Budget], Iterator[_T]],
        *,
        final_status: frozenset[int] = frozenset(),
        size: int | None = None,
    ) -> Iterator[_T]:
        """Every network request of the client: attempts, retries, the deadline, the errors.

        ``attempt(reply, budget)`` reads one answer (a streaming :class:`httpx.Response`,
        already known not to be a retryable 5xx) and yields what the caller gets; it
        raises :class:`Retryable` for a failure another attempt may fix.  *headers*
        is called before each attempt (a resumed download asks for the rest).  Up to
        ``1 + retries`` attempts, all within one :class:`Budget`; every httpx exception
        leaves as :class:`Retryable` (retried) or a typed error naming *url*.
        """
        budget = Budget(url, self.deadline, size or 0)
        attempts = self.retries + 1
        last: Retryable | None = None
        for number in range(attempts):
            try:
                with (
                    self._classified(url, budget),
                    self._http().stream(
                        "GET", url, headers=headers(), timeout=budget.timeout(self.timeout)
                    ) as reply,
                ):
                    if reply.status_code in RETRYABLE_STATUS and (
                        reply.status_code not in final_status
                    ):
                        raise Retryable(f"HTTP {reply.status_code} {reply.reason_phrase}")
                    yield from attempt(reply, budget)
                    return
            except Retryable as error:
                budget.attempt_over()
                if number + 1 < attempts:
                    self._wait_before_retry(url, number + 1, budget, error)
                last = error
        raise IndexClientError(
            f"GET {url} failed after {attempts} attempt{'s' if attempts != 1 else ''}; last "
            f"cause: {last}. The server may be down or the network unreliable: retry "
            "later, or use --offline if the cache already holds what is needed."
        )

    @staticmethod
    def _body(reply: httpx.Response, budget: Budget) -> Iterator[bytes]:
        """The body's pieces as they arrive, the deadline checked on each one."""
        for piece in reply.iter_bytes():
            budget.current = reply.num_bytes_downloaded
            budget.check()
            yield piece
        budget.current = reply.num_bytes_downloaded

    @contextlib.contextmanager
    def _classified(self, url: str, budget: Budget) -> Iterator[None]:
        """Turn every httpx exception into :class:`Retryable` or a typed error naming *url*.

        A timeout once the deadline has passed is :class:`TooSlowError` (the per-read
        timeout is cut to what is left of it); TLS set-up failures and redirect loops are
        not retried, as another attempt would fail the same way.
        """
        import httpx

        try:
            yield
        except httpx.TransportError as error:
            cause = f"{type(error).__name__}: {error}"
            if isinstance(error, httpx.TimeoutException) and budget.remaining() <= 0:
                raise budget.too_slow(cause) from error
            if is_tls_error(error):
                raise IndexClientError(
                    f"GET {url} failed: TLS error ({error}). Not retried: check the server "
                    "certificate, the system clock and SSL_CERT_FILE / the CA bundle."
                ) from error
            if isinstance(
                error, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError
            ):
                raise Retryable(cause, dropped=dropped(error)) from error
            raise IndexClientError(
                f"GET {url} failed: {cause}. Check the URL and the proxy settings"
                " (HTTPS_PROXY, HTTP_PROXY)."
            ) from error
        except httpx.TooManyRedirects as error:
            raise IndexClientError(
                f"GET {url} was redirected more than {self._http().max_redirects} times (last"
                f" to {error.request.url}): the server sends it round in a loop. Check the URL;"
                " if it is right, the server is misconfigured: report it to its operator."
            ) from error
        except httpx.DecodingError as error:
            raise Retryable(f"undecodable body: {error}") from error
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise IndexClientError(
                f"GET {url} failed: {type(error).__name__}: {error}. Check the URL."
            ) from error

    def _cache_location(self) -> str:
        return str(self.cache.root) if self.cache is not None else "no cache configured"

    @staticmethod
    def _from_entry(entry: CacheEntry) -> Response:
        return Response(
            url=entry.url,
            status=entry.status,
            body=entry.body,
            content_type=entry.content_type,
            from_cache=True,
            sha256=entry.sha256,
        )

    @staticmethod
    def _get_file(url: str, *, not_found_ok: bool) -> Response:
        parts = urlsplit(url)
        path = url_path(parts.path)
        try:
            body = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
            if not_found_ok:
                return Response(url=url, status=404, body=b"", content_type="")
            raise IndexClientError(
                f"{url} cannot be read: {error.strerror or error}. Check the path of the "
                "file:// index."
            ) from error
        except OSError as error:
            raise IndexClientError(f"{url} cannot be read: {error}.") from error
        return Response(url=url, status=200, body=body, content_type=_content_type_for_path(path))

    def _wait_before_retry(
        self, url: str, attempt: int, budget: Budget, failure: Retryable
    ) -> None:
        """Exponential backoff with jitter, so retrying clients do not arrive in step.

        A dropped connection is retried at once the first time (see :class:`Retryable`).
        The wait never goes past the deadline, and a request whose deadline has passed
        is not tried again: it raises :class:`TooSlowError` naming the last failure.
        """
        cause = str(failure)
        if failure.dropped and attempt == 1:
            budget.check(cause)
            self.reporter.message(
                "debug",
                f"GET {url} failed ({cause}); retry 1 of {self.retries} at once on a "
                "new connection",
            )
            return
        delay = self.backoff * 2 ** (attempt - 1)
        delay += random.uniform(0, delay)
        delay = min(delay, max(0.0, budget.remaining()))
        self.reporter.message(
            "debug",
            f"GET {url} failed ({cause}); retry {attempt} of {self.retries} in {delay:.2f}s",
        )
        time.sleep(delay)
        budget.check(cause)


def _declared_length(reply: httpx.Response) -> int | None:
    """The body's length as sent (``Content-Length``), when it is also the length read."""
    declared = reply.headers.get("content-length")
    if declared is None or "content-encoding" in reply.headers:
        return None
    try:
        value = int(declared)
    except ValueError:
        return None
    return value if value >= 0 else None
