"""The package index client: what files a project has, and their core metadata.

Two halves.  The pure half turns a simple-repository page into :class:`DistFile` records:
:func:`parse_json_page` for PEP 691 JSON (with PEP 700 ``size``/``upload-time``) and
:func:`parse_html_page` for PEP 503 HTML (with the PEP 592/658/714 ``data-`` attributes).
Both keep every fact the resolver and the lock need (hash, yanked, ``requires-python``,
whether a PEP 658 metadata file exists) and drop files that are not sdists or wheels.

The I/O half, :class:`IndexClient`, asks the indexes for pages (negotiating JSON, accepting
HTML), memoises results so the resolver can ask freely, and fetches concurrently in a thread
pool so that prefetching a whole frontier of names costs one round trip, not one per name.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from packaging.metadata import Metadata
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from monorepo import metadata as _metadata
from monorepo.errors import IndexClientError
from monorepo.http import DEFAULT_BACKOFF, HttpClient
from monorepo.httpcache import HttpCache
from monorepo.reporter import NullReporter, Reporter

#: What we ask an index for: JSON preferred, HTML accepted (PEP 691 content negotiation).
ACCEPT = (
    "application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)
_JSON_TYPE = "application/vnd.pypi.simple.v1+json"


@dataclass(frozen=True)
class DistFile:
    """One distribution file of a project as an index lists it."""

    filename: str
    url: str
    """Absolute, without the ``#sha256=`` fragment (the hash is in :attr:`sha256`)."""
    index_url: str
    """The simple index base (with trailing slash) the file was found on."""
    name: NormalizedName
    version: Version
    kind: Literal["sdist", "wheel"]
    tags: frozenset[Tag]
    """Wheels only; empty for sdists."""
    sha256: str | None
    requires_python: SpecifierSet | None
    """``None`` when absent or unparsable: an unreadable constraint does not hide a file."""
    yanked: str | None
    """``None`` when not yanked; otherwise the reason, ``""`` when none was given (PEP 592)."""
    size: int | None
    upload_time: datetime | None
    """Timezone-aware UTC (PEP 700)."""
    core_metadata: str | bool
    """PEP 658/714: the sha256 of ``<url>.metadata``, True if present without a hash."""

    @property
    def metadata_url(self) -> str:
        """Where PEP 658 puts this file's core metadata."""
        return self.url + ".metadata"


# --------------------------------------------------------------------------- pure parsing


def _parse_filename(
    filename: str,
) -> tuple[NormalizedName, Version, Literal["sdist", "wheel"], frozenset[Tag]] | None:
    """Name, version, kind and tags from a file name; None for anything else (eggs, .exe)."""
    try:
        if filename.endswith(".whl"):
            name, version, _build, tags = parse_wheel_filename(filename)
            return name, version, "wheel", tags
        if filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
            return name, version, "sdist", frozenset()
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion, ValueError):
        return None
    return None


def _parse_requires_python(value: object) -> SpecifierSet | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return _specifier_set(value)


@functools.lru_cache(maxsize=4096)
def _specifier_set(value: str) -> SpecifierSet | None:
    """Parsed once per distinct string: a project's files repeat a few specifiers
    thousands of times, and sharing the object lets callers memoise by identity."""
    try:
        return SpecifierSet(value)
    except InvalidSpecifier:
        return None


def _parse_upload_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _hash_fragment(url: str) -> tuple[str, str | None]:
    """Split ``url#sha256=...`` into the bare URL and the sha256 (other hashes ignored)."""
    bare, fragment = urldefrag(url)
    for part in fragment.split("&"):
        algorithm, sep, digest = part.partition("=")
        if sep and algorithm.lower() == "sha256" and digest:
            return bare, digest.lower()
    return bare, None


def _make(
    filename: str,
    url: str,
    index_url: str,
    *,
    sha256: str | None,
    requires_python: SpecifierSet | None,
    yanked: str | None,
    size: int | None,
    upload_time: datetime | None,
    core_metadata: str | bool,
) -> DistFile | None:
    parsed = _parse_filename(filename)
    if parsed is None:
        return None
    name, version, kind, tags = parsed
    return DistFile(
        filename=filename,
        url=url,
        index_url=index_url,
        name=name,
        version=version,
        kind=kind,
        tags=tags,
        sha256=sha256,
        requires_python=requires_python,
        yanked=yanked,
        size=size,
        upload_time=upload_time,
        core_metadata=core_metadata,
    )


def _json_core_metadata(entry: Mapping[str, Any]) -> str | bool:
    # PEP 714 renamed the key; old servers only send the PEP 658 spelling.
    value = entry.get("core-metadata", entry.get("dist-info-metadata", False))
    if isinstance(value, Mapping):
        digest = value.get("sha256")
        return digest.lower() if isinstance(digest, str) and digest else True
    return value is True


def parse_json_page(data: bytes, page_url: str, index_url: str) -> list[DistFile]:
    """The files of a PEP 691 project page (PEP 700 fields included when present)."""
    try:
        page = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise IndexClientError(
            f"{page_url} is not valid JSON ({error}); the index sent a broken PEP 691 page."
        ) from error
    if not isinstance(page, dict) or not isinstance(page.get("files"), list):
        raise IndexClientError(
            f"{page_url} is not a PEP 691 project page (no 'files' list); check the index URL."
        )
    api_version = str(page.get("meta", {}).get("api-version", "1.0"))
    if api_version.split(".")[0] != "1":
        raise IndexClientError(
            f"{page_url} uses simple API version {api_version}; only major version 1 is "
            "understood. Upgrade monorepo or point it at another index."
        )
    files: list[DistFile] = []
    for entry in page["files"]:
        if not isinstance(entry, dict):
            continue
        filename, href = entry.get("filename"), entry.get("url")
        if not isinstance(filename, str) or not isinstance(href, str):
            continue
        url, fragment_hash = _hash_fragment(urljoin(page_url, href))
        hashes = entry.get("hashes")
        sha256 = hashes.get("sha256") if isinstance(hashes, dict) else None
        yanked_value = entry.get("yanked", False)
        yanked = yanked_value if isinstance(yanked_value, str) else None
        if yanked_value is True:
            yanked = ""
        size = entry.get("size")
        dist = _make(
            filename,
            url,
            index_url,
            sha256=sha256.lower() if isinstance(sha256, str) and sha256 else fragment_hash,
            requires_python=_parse_requires_python(entry.get("requires-python")),
            yanked=yanked,
            size=size if isinstance(size, int) and not isinstance(size, bool) else None,
            upload_time=_parse_upload_time(entry.get("upload-time")),
            core_metadata=_json_core_metadata(entry),
        )
        if dist is not None:
            files.append(dist)
    return files


class _AnchorCollector(HTMLParser):
    """Collects ``<a>`` elements (attributes and text) and an optional ``<base href>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self.base: str | None = None
        self._current: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._close_anchor()
            self._current = dict(attrs)
            self._text = []
        elif tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._close_anchor()

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._text.append(data)

    def close(self) -> None:
        super().close()
        self._close_anchor()

    def _close_anchor(self) -> None:
        if self._current is not None:
            self.anchors.append((self._current, "".join(self._text).strip()))
            self._current = None


def _html_core_metadata(attrs: Mapping[str, str | None]) -> str | bool:
    for key in ("data-core-metadata", "data-dist-info-metadata"):
        if key in attrs:
            value = (attrs[key] or "").strip()
            algorithm, sep, digest = value.partition("=")
            if sep and algorithm.lower() == "sha256" and digest:
                return digest.lower()
            return value.lower() != "false"
    return False


def parse_html_page(data: bytes, page_url: str, index_url: str) -> list[DistFile]:
    """The files of a PEP 503 project page, with PEP 592/658/714 ``data-`` attributes."""
    collector = _AnchorCollector()
    collector.feed(data.decode("utf-8", errors="replace"))
    collector.close()
    base = urljoin(page_url, collector.base) if collector.base else page_url
    files: list[DistFile] = []
    for attrs, text in collector.anchors:
        href = attrs.get("href")
        if not href:
            continue
        url, sha256 = _hash_fragment(urljoin(base, href))
        # PEP 503: the link text is the file name; fall back to the URL's last segment.
        candidates = [text, unquote(urlsplit(url).path.rsplit("/", 1)[-1])]
        yanked = (attrs["data-yanked"] or "") if "data-yanked" in attrs else None
        for filename in candidates:
            dist = _make(
                filename,
                url,
                index_url,
                sha256=sha256,
                requires_python=_parse_requires_python(attrs.get("data-requires-python")),
                yanked=yanked,
                size=None,
                upload_time=None,
                core_metadata=_html_core_metadata(attrs),
            )
            if dist is not None:
                files.append(dist)
                break
    return files


# --------------------------------------------------------------------------- the client

T = TypeVar("T")
K = TypeVar("K")


class _Memo:
    """Compute each key once, share the result with concurrent callers, keep failures too.

    The first caller computes in its own thread (so a synchronous call never waits for a
    pool slot); later and concurrent callers wait on the same future.  Failures are kept:
    the retries already happened, and asking again would only repeat the wait.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: dict[object, Future[Any]] = {}

    def get(self, key: object, compute: Callable[[], T]) -> T:
        with self._lock:
            future = self._futures.get(key)
            owner = future is None
            if future is None:
                future = Future()
                self._futures[key] = future
        if owner:
            try:
                future.set_result(compute())
            except BaseException as error:
                future.set_exception(error)
        result: T = future.result()
        return result

    def known(self, key: object) -> bool:
        with self._lock:
            return key in self._futures


def _normalise_index_url(url: str) -> str:
    url = url.strip()
    if "://" not in url:
        # A bare path is a local index: make it a file:// URL (relative to the cwd).
        url = Path(url).resolve().as_uri()
    return url if url.endswith("/") else url + "/"


class IndexClient:
    """Reads projects' files and metadata from one or more simple indexes.

    Several indexes follow uv's first-index strategy: the first index that knows a project
    supplies all of its files, so a same-named project planted on a later index cannot
    shadow the real one (dependency confusion).  All public methods are thread-safe.
    """

    def __init__(
        self,
        index_urls: Sequence[str],
        *,
        offline: bool = False,
        cache_dir: Path | None = None,
        reporter: Reporter | None = None,
        max_workers: int = 16,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = DEFAULT_BACKOFF,
        metadata_cache_dir: Path | None = None,
    ) -> None:
        if not index_urls:
            raise IndexClientError(
                "No package index is configured: set [tool.monorepo] index-url or "
                "MONOREPO_INDEX_URL."
            )
        self.index_urls = tuple(_normalise_index_url(url) for url in index_urls)
        self.offline = offline
        self.reporter: Reporter = reporter if reporter is not None else NullReporter()
        self.http = HttpClient(
            cache=HttpCache(cache_dir),
            offline=offline,
            reporter=self.reporter,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_connections=max_workers,
        )
        self.metadata_cache = _metadata.MetadataCache(metadata_cache_dir)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="index")
        self._projects = _Memo()
        self._metadata = _Memo()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.http.close()

    def __enter__(self) -> IndexClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- project pages

    def project_files(self, name: str) -> tuple[DistFile, ...]:
        """Every file of project *name* from the first index that knows it; () if none does."""
        key = canonicalize_name(name)
        return self._projects.get(key, lambda: self._fetch_project(key))

    def prefetch(self, names: Iterable[str]) -> None:
        """Start fetching these projects' pages in the background; returns at once."""
        for name in names:
            key = canonicalize_name(name)
            if not self._projects.known(key):
                self._submit(self.project_files, key)

    def _submit(self, function: Callable[[K], object], argument: K) -> None:
        def run() -> None:
            # Errors stay memoised in the shared future and reach the caller who asks.
            with contextlib.suppress(Exception):
                function(argument)

        with contextlib.suppress(RuntimeError):  # the pool is shut down: nothing to do
            self._pool.submit(run)

    def _fetch_project(self, name: NormalizedName) -> tuple[DistFile, ...]:
        for index_url in self.index_urls:
            files = self._fetch_page(index_url, name)
            if files is not None:
                kept = tuple(dist for dist in files if dist.name == name)
                if len(kept) != len(files):
                    self.reporter.message(
                        "debug",
                        f"{index_url}{name}/ lists {len(files) - len(kept)} file(s) of "
                        "another project; ignored",
                    )
                return kept
        return ()

    def _page_candidates(self, index_url: str, name: str) -> Iterator[tuple[str, str | None]]:
        if urlsplit(index_url).scheme == "file":
            # A directory tree has no content negotiation: prefer index.json when present.
            yield f"{index_url}{name}/index.json", None
            yield f"{index_url}{name}/index.html", None
        else:
            yield f"{index_url}{name}/", ACCEPT

    def _fetch_page(self, index_url: str, name: str) -> list[DistFile] | None:
        """The files on *index_url*'s page for *name*; None when the index lacks the project."""
        for page_url, accept in self._page_candidates(index_url, name):
            response = self.http.get(page_url, accept=accept, not_found_ok=True)
            if response.status == 404:
                continue
            content_type = response.content_type.split(";")[0].strip().lower()
            if content_type == _JSON_TYPE or content_type.endswith("+json"):
                return parse_json_page(response.body, response.url, index_url)
            if content_type == "application/json":
                return parse_json_page(response.body, response.url, index_url)
            return parse_html_page(response.body, response.url, index_url)
        return None

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
        source.  See :func:`monorepo.metadata.release_metadata` for the order of sources.
        """
        key = (tuple(sorted(f.url for f in files)), tags)
        return self._metadata.get(key, lambda: self._release_metadata(files, tags))

    def _release_metadata(self, files: Sequence[DistFile], tags: frozenset[Tag]) -> Metadata:
        return _metadata.release_metadata(
            files,
            target_tags=tags,
            fetch=self.fetch,
            ranges=self.http,
            cache=self.metadata_cache,
            index_urls=self.index_urls,
            offline=self.offline,
            reporter=self.reporter,
        )

    def prefetch_metadata(
        self, releases: Iterable[Sequence[DistFile]], tags: frozenset[Tag]
    ) -> None:
        """Start :meth:`release_metadata` for these versions in the background; returns at once."""
        for files in releases:
            files = tuple(files)
            if files and not self._metadata.known((tuple(sorted(f.url for f in files)), tags)):
                self._submit(lambda fs: self.release_metadata(fs, tags), files)
