"""A project's page on a simple index: its files, grouped by version, parsed lazily.

A lock run reads every page of the closure, and popular projects list thousands of files
(most for versions and platforms the resolver never looks at).  Turning each into a
:class:`DistFile` up front (a :class:`~packaging.version.Version`, a set of
:class:`~packaging.tags.Tag`, a parsed ``requires-python`` and upload time per file) was the
largest cost of a warm lock, and even checking each file's fields was the largest CPU cost
of a cold one (two thirds of a page's parse, after ``json.loads``).  So the page is read in
two steps:

1. :func:`json_page_records` / :func:`html_page_records` only sort the page's file entries
   under the version spelled in their file names, as PEP 691 spells them (plain dicts, the
   URL made absolute): a string split per file.  The groups are plain data, so they cross
   to the resolving process and are cached on disk (:mod:`monorepo.index.speed.pagecache`) cheaply.
2. :class:`ProjectReleases` parses each distinct version string once, and checks a group's
   entries and turns them into :class:`DistFile` records (with ``packaging``'s file-name
   parsers, which stay the authority on what a valid file name is) only when the resolver
   asks for that version.
"""

from __future__ import annotations

import functools
import json
import marshal
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote, urljoin, urlsplit

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

from monorepo.errors import IndexClientError

#: One file as a page lists it, in PEP 691's shape (``filename``, ``url`` made absolute,
#: ``hashes``, ``requires-python``, ``yanked``, ``size``, ``upload-time``,
#: ``core-metadata``), unchecked: :func:`_dist_file` checks the fields it reads.
FileEntry = dict[str, Any]

#: A page's files of one project: version string (as spelled in file names) -> the
#: marshalled list of its :data:`FileEntry` dicts.  Plain data: cacheable with marshal.
Groups = dict[str, bytes]

_ABSOLUTE = ("https://", "http://")


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


# --------------------------------------------------------------------------- file names


def _name_and_version(filename: str) -> tuple[str, str] | None:
    """The project name and version *as spelled* in a wheel or sdist file name.

    Only a grouping key: :func:`parse_filename` (packaging's parsers) decides validity
    when the group is used, so a name this split accepts wrongly is still dropped there.
    """
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        if len(parts) not in (5, 6):
            return None
        return parts[0], parts[1]
    for suffix in (".tar.gz", ".zip"):
        if filename.endswith(suffix):
            name, sep, version = filename[: -len(suffix)].rpartition("-")
            return (name, version) if sep and name and version else None
    return None


def parse_filename(
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


@functools.lru_cache(maxsize=8192)
def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


@functools.lru_cache(maxsize=4096)
def specifier_set(value: str) -> SpecifierSet | None:
    """Parsed once per distinct string: a project's files repeat a few specifiers
    thousands of times, and sharing the object lets callers memoise by identity."""
    try:
        return SpecifierSet(value)
    except InvalidSpecifier:
        return None


def _parse_requires_python(value: str | None) -> SpecifierSet | None:
    if not value or not value.strip():
        return None
    return specifier_set(value)


def _parse_upload_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _split_fragment(url: str) -> tuple[str, str | None]:
    """Split ``url#sha256=...`` into the bare URL and the sha256 (other hashes ignored)."""
    bare, sep, fragment = url.partition("#")
    if not sep:
        return url, None
    for part in fragment.split("&"):
        algorithm, eq, digest = part.partition("=")
        if eq and algorithm.lower() == "sha256" and digest:
            return bare, digest.lower()
    return bare, None


class _Joiner:
    """``urljoin`` against one page, skipping the work for the usual absolute links."""

    def __init__(self, base: str) -> None:
        self.base = base

    def __call__(self, href: str) -> str:
        if href.startswith(("https://", "http://")):
            return href
        return urljoin(self.base, href)


# --------------------------------------------------------------------------- page parsing


class _Grouper:
    """Collects a page's file entries of one project under the version their names spell.

    Called once per file of every page a lock reads, so it does as little as it can: the
    project check is made once per spelling of the name, not per file.
    """

    def __init__(self, project: NormalizedName | None) -> None:
        self.project = project
        self.groups: dict[str, list[FileEntry]] = {}
        self.foreign = 0
        self._ours: dict[str, bool] = {}

    def add(self, filename: str, entry: FileEntry) -> bool:
        """File *entry* under its version; False if *filename* is no sdist or wheel name."""
        parts = _name_and_version(filename)
        if parts is None:
            return False
        name, version = parts
        ours = self._ours.get(name)
        if ours is None:
            ours = self._ours[name] = self.project is None or (
                canonicalize_name(name) == self.project
            )
        if not ours:
            self.foreign += 1
            return True
        group = self.groups.get(version)
        if group is None:
            self.groups[version] = [entry]
        else:
            group.append(entry)
        return True

    def result(self) -> Groups:
        return {version: marshal.dumps(files) for version, files in self.groups.items()}


def _json_core_metadata(entry: Mapping[str, Any]) -> str | bool:
    # PEP 714 renamed the key; old servers only send the PEP 658 spelling.
    value = entry.get("core-metadata", entry.get("dist-info-metadata", False))
    if isinstance(value, Mapping):
        digest = value.get("sha256")
        return digest.lower() if isinstance(digest, str) and digest else True
    return value is True


def json_page_records(
    data: bytes, page_url: str, project: NormalizedName | None = None
) -> tuple[Groups, int]:
    """A PEP 691 page's files (PEP 700 fields included), grouped by version string.

    With *project*, files of another project are left out; their count is returned.
    """
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
    meta = page.get("meta")
    api_version = str(meta.get("api-version", "1.0") if isinstance(meta, dict) else "1.0")
    if api_version.split(".")[0] != "1":
        raise IndexClientError(
            f"{page_url} uses simple API version {api_version}; only major version 1 is "
            "understood. Upgrade monorepo or point it at another index."
        )
    join = _Joiner(page_url)
    grouper = _Grouper(project)
    for entry in page["files"]:
        if type(entry) is not dict:
            continue
        filename, href = entry.get("filename"), entry.get("url")
        if type(filename) is not str or type(href) is not str:
            continue
        if not href.startswith(_ABSOLUTE):
            entry["url"] = join(href)
        grouper.add(filename, entry)
    return grouper.result(), grouper.foreign


def _html_core_metadata(attrs: Mapping[str, str | None]) -> dict[str, str] | bool:
    """PEP 658/714 ``data-`` attributes, as PEP 691's ``core-metadata`` value."""
    for key in ("data-core-metadata", "data-dist-info-metadata"):
        if key in attrs:
            value = (attrs[key] or "").strip()
            algorithm, sep, digest = value.partition("=")
            if sep and algorithm.lower() == "sha256" and digest:
                return {"sha256": digest}
            return value.lower() != "false"
    return False


def html_page_records(
    data: bytes, page_url: str, project: NormalizedName | None = None
) -> tuple[Groups, int]:
    """A PEP 503 page's files (PEP 592/658/714 ``data-`` attributes), grouped by version.

    Each anchor becomes the :data:`FileEntry` a PEP 691 page would list for it.
    """
    # Imported here: most indexes serve PEP 691 JSON, and every process that reads pages
    # would otherwise pay for the HTML parser's import at start-up.
    from monorepo.index.anchors import page_anchors

    anchors, base = page_anchors(data.decode("utf-8", errors="replace"))
    join = _Joiner(urljoin(page_url, base) if base else page_url)
    grouper = _Grouper(project)
    for attrs, text in anchors:
        href = attrs.get("href")
        if not href:
            continue
        url = join(href)
        # PEP 503: the link text is the file name; fall back to the URL's last segment.
        names = [text, unquote(urlsplit(url).path.rsplit("/", 1)[-1])]
        for filename in names:
            if parse_filename(filename) is None:
                continue
            entry: FileEntry = {"filename": filename, "url": url}
            if (requires_python := attrs.get("data-requires-python")) is not None:
                entry["requires-python"] = requires_python
            if "data-yanked" in attrs:
                entry["yanked"] = attrs["data-yanked"] or True
            core_metadata = _html_core_metadata(attrs)
            if core_metadata is not False:
                entry["core-metadata"] = core_metadata
            if grouper.add(filename, entry):
                break
    return grouper.result(), grouper.foreign


# --------------------------------------------------------------------------- releases


def _dist_file(entry: object, index_url: str) -> DistFile | None:
    """The file a page entry describes; None for a malformed entry or a name that is no
    valid sdist or wheel.  Fields of the wrong type count as absent, as they did when
    the page was parsed (a server's odd field must not hide a file)."""
    if type(entry) is not dict:
        return None
    filename, href = entry.get("filename"), entry.get("url")
    if not isinstance(filename, str) or not isinstance(href, str):
        return None
    parsed = parse_filename(filename)
    if parsed is None:
        return None
    name, version, kind, tags = parsed
    url, fragment_hash = _split_fragment(href)
    hashes = entry.get("hashes")
    sha256 = hashes.get("sha256") if isinstance(hashes, dict) else None
    yanked_value = entry.get("yanked", False)
    yanked = yanked_value if isinstance(yanked_value, str) else None
    if yanked_value is True:
        yanked = ""
    size = entry.get("size")
    requires_python = entry.get("requires-python")
    upload_time = entry.get("upload-time")
    return DistFile(
        filename=filename,
        url=url,
        index_url=index_url,
        name=name,
        version=version,
        kind=kind,
        tags=tags,
        sha256=sha256.lower() if isinstance(sha256, str) and sha256 else fragment_hash,
        requires_python=_parse_requires_python(
            requires_python if isinstance(requires_python, str) else None
        ),
        yanked=yanked,
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        upload_time=_parse_upload_time(upload_time if isinstance(upload_time, str) else None),
        core_metadata=_json_core_metadata(entry),
    )


class ProjectReleases:
    """The files of one project on one index, by version; each version parsed on first use.

    Thread-safe: concurrent first uses of a version may both build it, with equal results.
    """

    def __init__(self, name: NormalizedName, index_url: str, groups: Groups) -> None:
        self.name = name
        self.index_url = index_url
        self._groups = groups
        spelled: dict[Version, list[str]] = {}
        for text in groups:
            version = _version(text)
            if version is not None:
                spelled.setdefault(version, []).append(text)
        # "1.0" and "1.0.0" are one version: both spellings' files belong to it.
        self._spelled = spelled
        self._files: dict[Version, tuple[DistFile, ...]] = {}
        self._lock = threading.Lock()

    def versions(self) -> tuple[Version, ...]:
        """Every version with at least one sdist or wheel listed, in page order."""
        return tuple(self._spelled)

    def files(self, version: Version) -> tuple[DistFile, ...]:
        """The files of *version* (page order); () for a version the page does not list."""
        cached = self._files.get(version)
        if cached is not None:
            return cached
        files = tuple(
            dist
            for text in self._spelled.get(version, ())
            for dist in _dist_files(self._groups[text], self.index_url)
            if dist.name == self.name and dist.version == version
        )
        with self._lock:
            self._files[version] = files
        return files

    def all_files(self) -> tuple[DistFile, ...]:
        """Every file, version by version (parses the whole page: for audits, not locks)."""
        return tuple(f for version in self._spelled for f in self.files(version))

    def __iter__(self) -> Iterator[DistFile]:
        return iter(self.all_files())


def _dist_files(blob: bytes, index_url: str) -> Iterator[DistFile]:
    """The valid files of one marshalled group."""
    for entry in marshal.loads(blob):
        dist = _dist_file(entry, index_url)
        if dist is not None:
            yield dist


def dist_files(groups: Groups, index_url: str) -> list[DistFile]:
    """Every valid file of *groups*, in page order within each version (any project)."""
    return [dist for blob in groups.values() for dist in _dist_files(blob, index_url)]
