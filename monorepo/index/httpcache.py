"""The on-disk HTTP cache behind the index client.

Index pages change, distribution files never do, and a lock run asks for hundreds of both:
keeping responses on disk lets a second run (and ``--offline``) answer from the cache, and
keeping the validators (``ETag``, ``Last-Modified``) lets a stale page be revalidated with a
cheap ``304`` instead of being downloaded again.

Each entry is one file: a single line of JSON (status, final URL, selected headers, the time
it was stored, the body's sha256) followed by the body.  :meth:`HttpCache.peek` reads only
that line: enough to revalidate, and to see that a page downloaded again is the page already
kept, which is then not written again (most indexes send no validators, so every run
downloads every page; rewriting megabytes of unchanged pages was a measurable part of a
lock).  One file per entry means one ``os.replace`` makes the store atomic, so a crash or a
concurrent writer never leaves a body paired with another response's headers.  Freshness is decided by :func:`is_fresh`, a pure function of the stored
headers and the clock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from monorepo._core.atomic import write_bytes

#: Response headers kept with an entry: what freshness, revalidation and parsing need.
STORED_HEADERS = ("etag", "last-modified", "cache-control", "date", "content-type")

_FORMAT = 2


@dataclass(frozen=True)
class CacheEntry:
    """A stored response: enough to answer a request again or to revalidate it."""

    url: str
    """The final URL after redirects: relative links on a page resolve against it."""
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    """Lower-case header names from :data:`STORED_HEADERS`."""
    stored_at: float = 0.0
    """Seconds since the epoch when the response (or its last ``304``) arrived."""
    sha256: str = ""
    """Of :attr:`body`; filled in when stored or loaded."""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def validators(self) -> dict[str, str]:
        """The conditional request headers that revalidate this entry."""
        conditional: dict[str, str] = {}
        if "etag" in self.headers:
            conditional["If-None-Match"] = self.headers["etag"]
        if "last-modified" in self.headers:
            conditional["If-Modified-Since"] = self.headers["last-modified"]
        return conditional

    def refreshed(self, headers: dict[str, str], now: float) -> CacheEntry:
        """The entry after a ``304``: same body, the new validators and a new age."""
        merged = dict(self.headers)
        merged.update({k: v for k, v in headers.items() if k in STORED_HEADERS})
        return replace(self, headers=merged, stored_at=now)


def parse_cache_control(value: str) -> dict[str, str | None]:
    """Directives of a ``Cache-Control`` header, names lower-cased (``max-age=60`` -> "60")."""
    directives: dict[str, str | None] = {}
    for part in value.split(","):
        name, sep, arg = part.strip().partition("=")
        if not name:
            continue
        directives[name.strip().lower()] = arg.strip().strip('"') if sep else None
    return directives


def is_storable(headers: dict[str, str]) -> bool:
    """``no-store`` forbids keeping the response at all."""
    return "no-store" not in parse_cache_control(headers.get("cache-control", ""))


def is_fresh(entry: CacheEntry, now: float) -> bool:
    """Whether the entry may be used without asking the server (RFC 9111 ``max-age``).

    Without an explicit ``max-age`` nothing is fresh: an index page must not hide a new
    release for a heuristic lifetime, and revalidation of an unchanged page is cheap.
    """
    directives = parse_cache_control(entry.headers.get("cache-control", ""))
    if "no-cache" in directives or "no-store" in directives:
        return False
    max_age = directives.get("max-age")
    if max_age is None:
        return False
    try:
        lifetime = int(max_age)
    except ValueError:
        return False
    return now - entry.stored_at < lifetime


def cache_key(url: str, accept: str | None) -> str:
    """One entry per URL and representation: a JSON and an HTML page are different bodies."""
    return hashlib.sha256(f"{url}\n{accept or ''}".encode()).hexdigest()


def already_kept(kept: CacheEntry | None, new: CacheEntry) -> bool:
    """Whether storing *new* would change nothing that matters: same final URL, same body,
    same headers (``Date`` aside), and no ``max-age`` whose clock a store would restart."""
    if kept is None or kept.url != new.url or kept.sha256 != new.sha256:
        return False
    if "max-age" in parse_cache_control(new.headers.get("cache-control", "")):
        return False

    def selected(headers: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in headers.items() if k in STORED_HEADERS and k != "date"}

    return selected(kept.headers) == selected(new.headers)


class HttpCache:
    """Entries under ``<root>/<key>``; safe for concurrent threads and processes.

    Readers never see partial entries (writes go through a temporary file and
    ``os.replace``), and a damaged entry reads as a miss rather than an error, because the
    cache is only ever an optimisation of what the network can answer again.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        # Flat: a lock writes one entry per page, and on ext4 a directory costs an inode
        # allocation like a file (with many recent deletions, the slow part of a cold lock).
        return self.root / key

    def peek(self, url: str, accept: str | None) -> CacheEntry | None:
        """The entry without its body (``body`` is empty): reads one line, not megabytes."""
        try:
            with self._path(cache_key(url, accept)).open("rb") as file:
                header = file.readline()
        except OSError:
            return None
        return self._entry(header, b"")

    def load(self, url: str, accept: str | None) -> CacheEntry | None:
        path = self._path(cache_key(url, accept))
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        header, sep, body = raw.partition(b"\n")
        if not sep:
            return None
        return self._entry(header, body)

    @staticmethod
    def _entry(header: bytes, body: bytes) -> CacheEntry | None:
        try:
            meta: dict[str, Any] = json.loads(header)
            if meta.get("format") != _FORMAT:
                return None
            return CacheEntry(
                url=str(meta["url"]),
                status=int(meta["status"]),
                body=body,
                headers={str(k): str(v) for k, v in dict(meta["headers"]).items()},
                stored_at=float(meta["stored_at"]),
                sha256=str(meta["sha256"]),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def store(self, url: str, accept: str | None, entry: CacheEntry) -> None:
        """Keep *entry* for (url, accept); failures to write are ignored (cache is optional)."""
        path = self._path(cache_key(url, accept))
        meta = {
            "format": _FORMAT,
            "url": entry.url,
            "status": entry.status,
            "headers": {k: v for k, v in entry.headers.items() if k in STORED_HEADERS},
            "stored_at": entry.stored_at,
            "sha256": entry.sha256 or hashlib.sha256(entry.body).hexdigest(),
        }
        data = json.dumps(meta, sort_keys=True).encode() + b"\n" + entry.body
        with contextlib.suppress(OSError):
            write_bytes(path, data, prefix=".tmp-")

    def remove(self, url: str, accept: str | None) -> None:
        with contextlib.suppress(OSError):
            self._path(cache_key(url, accept)).unlink()


def now() -> float:
    """The clock the cache ages entries with (one place to read it)."""
    return time.time()
