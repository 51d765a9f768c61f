"""Decompression under the extractor's limits: a bomb stops one byte past what a tar may hold."""

from __future__ import annotations

import bz2
import functools
import importlib
import io
import lzma
import zlib
from types import ModuleType
from typing import Any, cast

from monorepo.errors import ExtractError
from monorepo.extract.rules import DEFAULT_LIMITS, Limits

_GZIP_MAGIC = b"\x1f\x8b"


_TAR_OVERHEAD = 16 * 1024 * 1024


def gunzip(data: bytes | None, limit: int) -> bytes | None:
    """The decompressed tar stream of gzip *data*, or None when it is not gzip, is
    damaged or exceeds *limit* (then the archive is read the ordinary way, which refuses
    or reports it exactly as it always did)."""
    if data is None or not data.startswith(_GZIP_MAGIC):
        return None
    out: list[bytes] = []
    total = 0
    inflate, errors = _inflate_library()
    try:
        while True:  # one gzip member after another, as GzipFile reads them
            # One call per member, capped one byte past the limit: the output is made
            # once, where 16 MiB steps joined at the end cost a fifth more time.
            inflater = inflate.decompressobj(16 + zlib.MAX_WBITS)
            chunk = inflater.decompress(data, limit - total + 1)
            total += len(chunk)
            if total > limit or not inflater.eof:
                return None  # over the limit, or truncated
            out.append(chunk)
            data = inflater.unused_data
            if not data.strip(b"\0"):
                break
            if not data.startswith(_GZIP_MAGIC):
                return None
    except errors:
        return None
    return out[0] if len(out) == 1 else b"".join(out)


@functools.cache
def _inflate_library() -> tuple[ModuleType, tuple[type[Exception], ...]]:
    """ISA-L's zlib interface where the ``isal`` package is installed, else zlib.

    Inflating is the largest single cost of a pull (the data set's 268 MB of sdists
    hold 900 MB of source) and ISA-L does it in about half of zlib's time, with the
    same ``decompressobj`` interface.  Its errors are not ``zlib.error``, hence the pair.
    """
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib, (zlib.error,)
    return isal_zlib, (zlib.error, cast(type[Exception], isal_zlib.error))  # typed as an instance


def stream_limit(archive_size: int, limits: Limits) -> int:
    """The most bytes a decompressed tar stream may have under *limits*: what its
    members may hold, plus room for tar headers and padding."""
    return min(limits.max_total_size, int(archive_size * limits.max_ratio)) + _TAR_OVERHEAD


def decompress(name: str, blob: bytes, *, package: str, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The tar stream inside *blob*, compressed as the suffix of *name* says (``.gz``,
    ``.xz``, ``.lzma``, ``.bz2``, ``.zst``; none: as it is), for :func:`tar_raw`.

    For archives inside archives (a ``.deb``'s ``data.tar.*``): decompression stops one
    byte past what a tar under *limits* can hold (:func:`stream_limit`), so a bomb is
    refused without being held in memory.  Raises :class:`ExtractError`.
    """
    limit = stream_limit(len(blob), limits)
    try:
        if name.endswith((".xz", ".lzma")):
            out = lzma.LZMADecompressor().decompress(blob, limit + 1)
        elif name.endswith(".gz"):
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = inflater.decompress(blob, limit + 1)
            if len(out) <= limit and not inflater.eof:
                raise EOFError("the gzip stream is truncated")
        elif name.endswith(".bz2"):
            out = bz2.BZ2Decompressor().decompress(blob, limit + 1)
        elif name.endswith(".zst"):
            out = _unzstd(blob, limit + 1, name, package)
        elif name.endswith(".tar") or "." not in name:
            out = blob
        else:
            raise ExtractError(f"{package}: unsupported compression of {name}")
    except (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError) as e:
        raise ExtractError(f"{package}: {name} cannot be decompressed ({e})") from e
    if len(out) > limit:
        raise ExtractError(
            f"{package}: refusing {name}: it decompresses to more than {limit} bytes, over"
            f" what {limits.max_total_size} bytes of members (or {limits.max_ratio:g} times"
            f" its {len(blob)} bytes) need (a decompression bomb?)"
        )
    return out


def _unzstd(blob: bytes, limit: int, name: str, package: str) -> bytes:
    try:
        zstandard: Any = importlib.import_module("zstandard")
    except ImportError as e:
        raise ExtractError(
            f"{package}: {name} is compressed with zstd, which needs the 'zstandard' module:"
            " pip install zstandard"
        ) from e
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)) as reader:
        out: bytes = reader.read(limit)
    return out
