"""A remote wheel's ``*.dist-info/METADATA`` read with HTTP byte ranges ("lazy wheel").

An index without PEP 658 metadata files would otherwise cost a whole wheel download per
candidate, tens of megabytes for a scientific package, to learn a few lines of
``Requires-Dist``.  A zip keeps its table of contents at the end, so the last few dozen KB
(``Range: bytes=-65536``) normally hold the end-of-central-directory record, the central
directory and, since wheel builders write ``.dist-info`` last, often ``METADATA`` itself.

:class:`zipfile.ZipFile` does the parsing (ZIP64 included) over :class:`_RangeFile`, a
read-only file whose bytes come from the ranges fetched so far; a read of bytes not yet
fetched fetches exactly the missing span, so a central directory bigger than the first
tail costs one more request, and the ``METADATA`` member (its local header and compressed
data, whose extent the central directory gives) at most one more.

A server that ignores ``Range`` answers with the whole file, which is then used as a
download; one that refuses ranges (416, 501) gets a plain download.  ``file://`` wheels are
read in place with seeks.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from packaging.utils import canonicalize_name

from monorepo._core.paths import url_path
from monorepo.errors import HashMismatchError, MetadataError
from monorepo.index.http import RangeNotSupported, RangeResponse

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

#: The first request's size: the tail that holds the central directory of most wheels.
DEFAULT_TAIL = 64 * 1024


class RangeClient(Protocol):
    """What is needed of :class:`monorepo.index.http.HttpClient`."""

    def get_range(self, url: str, start: int, end: int) -> RangeResponse: ...

    def get_suffix(self, url: str, length: int) -> RangeResponse: ...


def metadata_member(names: Sequence[str], filename: str) -> str:
    """The wheel's ``<name>-<version>.dist-info/METADATA`` among the archive *names*.

    A wheel may vendor other distributions' ``.dist-info`` deeper down; only top-level
    directories count, and when several exist the one named for the wheel's project wins.
    """
    candidates = [
        name for name in names if name.count("/") == 1 and name.endswith(".dist-info/METADATA")
    ]
    if len(candidates) > 1:
        project = canonicalize_name(filename.split("-", 1)[0])
        candidates = [
            name
            for name in candidates
            if canonicalize_name(name.split("/", 1)[0].rsplit("-", 1)[0]) == project
        ]
    if len(candidates) != 1:
        raise MetadataError(
            f"{filename}: expected one top-level *.dist-info/METADATA, found "
            f"{len(candidates)}. The wheel is malformed; use its sdist or another version."
        )
    return candidates[0]


def _read_member(
    archive: zipfile.ZipFile, filename: str, prepare: _RangeFile | None, size: int
) -> bytes:
    """The wheel's METADATA, read once the whole member list passed the extractor's rules.

    A wheel is an archive like any other: its listing is checked by
    :func:`monorepo.extract.archive.read_zip` (paths, member count, declared and real sizes,
    ratio, depth) before the one member is inflated, so a wheel whose METADATA is a
    bomb, or whose other members are, is refused rather than read.  *size* is the
    wheel's size in bytes.
    """
    # Imported here: tar and zip reading, only when a wheel is opened.
    from monorepo.extract.archive import read_zip
    from monorepo.extract.rules import PlannedMember

    chosen: list[str] = []

    def choose(members: Sequence[PlannedMember]) -> list[str]:
        files = {m.rel: m.original for m in members if m.kind in ("file", "hardlink")}
        member = metadata_member(list(files), filename)
        chosen.append(member)
        if prepare is not None:
            # The member's local header and data lie between its offset and the next
            # member's (or the central directory): fetch that in one request, not three.
            info = archive.getinfo(files[member])
            later = [
                i.header_offset for i in archive.infolist() if i.header_offset > info.header_offset
            ]
            prepare.fetch(info.header_offset, min(later, default=archive.start_dir))
        return chosen

    listing = read_zip(
        archive,
        package=filename,
        name=filename,
        size=size,
        want=choose,
        advice="Its metadata was not read; lock another version of the package",
    )
    return listing.contents[chosen[0]]


def metadata_from_zip(data: bytes, filename: str) -> bytes:
    """The ``METADATA`` member's bytes from a whole wheel."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return _read_member(archive, filename, None, len(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, KeyError) as error:
        raise MetadataError(f"{filename}: not a readable wheel (zip): {error}.") from error


class _ServedWhole(Exception):
    """A range request was answered with the whole file."""

    def __init__(self, body: bytes) -> None:
        super().__init__("the server ignored Range")
        self.body = body


class _RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file of known size, fetched range by range."""

    def __init__(self, url: str, client: RangeClient, size: int, first: RangeResponse) -> None:
        super().__init__()
        self.url = url
        self.client = client
        self.size = size
        self.position = 0
        self.requests = 1
        self._segments: list[tuple[int, bytes]] = [(first.start, first.body)]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(f"seek to {base + offset} before the start of {self.url}")
        self.position = base + offset
        return self.position

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.position + size)
        if end <= self.position:
            return b""
        self.fetch(self.position, end)
        for start, data in self._segments:
            if start <= self.position and end <= start + len(data):
                chunk = data[self.position - start : end - start]
                self.position = end
                return chunk
        raise AssertionError("fetched range not found")  # pragma: no cover

    def fetch(self, start: int, end: int) -> None:
        """Make bytes ``[start, end)`` available, requesting only the spans still missing."""
        end = min(end, self.size)
        for gap_start, gap_end in self._gaps(start, end):
            reply = self.client.get_range(self.url, gap_start, gap_end - 1)
            self.requests += 1
            if not reply.partial:
                raise _ServedWhole(reply.body)
            if reply.start != gap_start or len(reply.body) != gap_end - gap_start:
                raise MetadataError(
                    f"{self.url}: asked for bytes {gap_start}-{gap_end - 1}, received "
                    f"{len(reply.body)} from {reply.start}. The server mishandles byte ranges."
                )
            self._add(gap_start, reply.body)

    def _gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        gaps: list[tuple[int, int]] = []
        cursor = start
        for seg_start, data in self._segments:
            seg_end = seg_start + len(data)
            if seg_end <= cursor:
                continue
            if seg_start >= end:
                break
            if seg_start > cursor:
                gaps.append((cursor, seg_start))
            cursor = max(cursor, seg_end)
        if cursor < end:
            gaps.append((cursor, end))
        return gaps

    def _add(self, start: int, data: bytes) -> None:
        merged: list[tuple[int, bytes]] = []
        for seg_start, seg in sorted([*self._segments, (start, data)], key=lambda s: s[0]):
            if merged and seg_start <= merged[-1][0] + len(merged[-1][1]):
                last_start, last = merged[-1]
                overlap = last_start + len(last) - seg_start
                merged[-1] = (last_start, last + seg[overlap:])
            else:
                merged.append((seg_start, seg))
        self._segments = merged


def _check_whole(url: str, body: bytes, sha256: str | None, size: int | None) -> None:
    if size is not None and len(body) != size:
        raise HashMismatchError(
            f"{url} has {len(body)} bytes where the index records {size}: the file changed "
            "upstream or the download was damaged. Retry, or refresh the lock."
        )
    if sha256 is not None and hashlib.sha256(body).hexdigest() != sha256.lower():
        raise HashMismatchError(
            f"{url} does not have the sha256 the index records ({sha256.lower()}): the file "
            "changed upstream or the download was damaged. Retry, or refresh the lock."
        )


def wheel_metadata(
    url: str,
    filename: str,
    *,
    client: RangeClient,
    download: Callable[[], bytes],
    sha256: str | None = None,
    size: int | None = None,
    tail: int = DEFAULT_TAIL,
) -> bytes:
    """The ``*.dist-info/METADATA`` bytes of the wheel at *url*, read with byte ranges.

    *download* returns the whole wheel (hash-checked): the fallback for servers that refuse
    ranges.  *sha256* and *size* check a whole file a server sent instead of a range, and
    *size* also the file size a range answer reports.
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = url_path(parts.path)
        try:
            with path.open("rb") as handle, zipfile.ZipFile(handle) as archive:
                return _read_member(archive, filename, None, os.fstat(handle.fileno()).st_size)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, KeyError) as error:
            raise MetadataError(f"{filename}: not a readable wheel (zip): {error}.") from error
        except OSError as error:
            raise MetadataError(f"{url} cannot be read: {error}.") from error
    try:
        first = client.get_suffix(url, tail)
    except RangeNotSupported:
        return metadata_from_zip(download(), filename)
    if not first.partial:
        _check_whole(url, first.body, sha256, size)
        return metadata_from_zip(first.body, filename)
    total = first.total if first.total is not None else size
    if total is None:
        return metadata_from_zip(download(), filename)
    if size is not None and total != size:
        raise HashMismatchError(
            f"{url} has {total} bytes where the index records {size}: the file changed "
            "upstream. Retry; if it persists, refresh the lock with 'monorepo lock'."
        )
    remote = _RangeFile(url, client, total, first)
    try:
        with zipfile.ZipFile(remote) as archive:
            return _read_member(archive, filename, remote, total)
    except _ServedWhole as whole:
        _check_whole(url, whole.body, sha256, size)
        return metadata_from_zip(whole.body, filename)
    except RangeNotSupported:
        return metadata_from_zip(download(), filename)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, KeyError) as error:
        raise MetadataError(f"{filename}: not a readable wheel (zip): {error}.") from error
