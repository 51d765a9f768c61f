"""A fast reader of the member list of an ordinary tar stream held in memory.

:mod:`tarfile` spends about 75 microseconds on each member of a typical sdist (every
header field decoded, two checksums summed over ``struct`` tuples, a regular
expression over each pax record, seeks on the file object), which made reading the
headers of the data set's 117 sdists (57,000 members) cost more CPU than inflating
them.  Nearly every sdist is written by ``tarfile`` itself or GNU tar in the POSIX
(pax) or GNU format with a handful of member types and pax keys, so this module reads
exactly that subset, in about a fifth of the time, and gives up on anything else.

The contract is narrow on purpose: :func:`scan` returns the same :class:`tarfile.TarInfo`
fields that iterating ``tarfile.open(fileobj=BytesIO(stream), mode="r:")`` yields
(name, type, mode, size, mtime, linkname, offset, offset_data), or ``None`` as soon as
it meets something outside the subset (GNU long names, sparse files, global pax
headers, base-256 numbers, a pax key it does not know, bytes that are not UTF-8, a
checksum that only the signed sum matches, a truncated stream ...).  The caller then
reads the stream with :mod:`tarfile`, so every unusual archive, hostile ones included,
is read and refused exactly as before.  Where both readers accept an archive they
agree member for member (``tests/test_tarscan.py`` compares them).

Speed only: anything it does not read exactly as tarfile would is left to tarfile.
Turn it off with ``MONOREPO_NO_SPEEDUPS=tarscan``: every tar is then read by tarfile.
"""

from __future__ import annotations

import re
import tarfile
import zlib

__all__ = ["scan"]

_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_PAX_TYPE = tarfile.XHDTYPE[0]
_MAGICS = (b"ustar\x0000", b"ustar  \x00")  # POSIX ustar/pax, GNU
_OCTAL = frozenset(b"01234567")
_TYPES = frozenset(
    {tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE}
)
"""Member types read here; a pax extended header (``x``) is handled on its own."""
_PAX_KEYS = frozenset(
    {"path", "linkpath", "size", "mtime", "atime", "ctime", "uid", "gid", "uname", "gname"}
)
"""The keys of POSIX.1-2008 that tarfile applies (or stores) without side effects."""


class _Unsupported(Exception):
    """Outside the subset: the caller reads the stream with tarfile instead."""


_MODE, _UID, _GID, _SIZE, _MTIME, _CHKSUM = 100, 108, 116, 124, 136, 148
_DEVMAJOR, _DEVMINOR = 329, 337
_NUMBER_FIELDS = (
    (_MODE, 8),
    (_UID, 8),
    (_GID, 8),
    (_SIZE, 12),
    (_MTIME, 12),
    (_CHKSUM, 8),
    (_DEVMAJOR, 8),
    (_DEVMINOR, 8),
)
_USUAL_NUMBERS = re.compile(
    rb"([0-7]{7})\0[0-7]{7}\0[0-7]{7}\0([0-7]{11})\0([0-7]{11})\0([0-7]{6})\0 "
)
"""Bytes 100-156 as tarfile and GNU tar write them: zero-padded octal, NUL-terminated."""
_USUAL_DEVICES = re.compile(rb"(?:[0-7]{7}\0|\0{8}){2}")
"""Bytes 329-345: both device numbers zero-padded octal, or empty."""


def _octal(field: bytes) -> int:
    """A number field in plain octal (what tarfile's ``nti`` accepts, less its extensions)."""
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if not digits:
        return 0
    if not _OCTAL.issuperset(digits):
        raise _Unsupported  # base-256, or something tarfile may read otherwise or refuse
    return int(digits, 8)


def _byte_sum(header: bytes) -> int:
    """``sum(header)`` without a Python-level loop over 512 bytes (a third of the scan).

    The sum is at most 512 * 255 = 130,560, so its residues modulo 65,521 (adler32's
    low half is one plus the sum, modulo 65,521) and modulo 255 (casting out 255s from
    the header read as one base-256 number) fix it: their product is far larger.
    """
    low = ((zlib.adler32(header) & 0xFFFF) - 1) % 65521
    nines = int.from_bytes(header, "little") % 255
    # The unique n <= 130,560 with n = low (mod 65521) and n = nines (mod 255).
    for n in (low, low + 65521):
        if n % 255 == nines:
            return n
    raise _Unsupported  # pragma: no cover - impossible for 512 bytes


def _checked(header: bytes) -> tuple[int, int, int]:
    """The mode, size and mtime of a header block, if tarfile's ``frombuf`` would read
    the same numbers from it.

    tarfile parses every number field (uid, gid and device numbers too) and refuses the
    archive when one is not a number, so all of them are checked here, and the
    checksum: only the unsigned sum is accepted (tarfile also tries a signed one).
    """
    if len(header) != _BLOCK or header[257:265] not in _MAGICS:
        raise _Unsupported
    usual = _USUAL_NUMBERS.match(header, _MODE)
    if usual is not None and _USUAL_DEVICES.match(header, _DEVMAJOR) is not None:
        mode, size, mtime, stored = (
            int(usual[1], 8),
            int(usual[2], 8),
            int(usual[3], 8),
            int(usual[4], 8),
        )
    else:
        mode, _, _, size, mtime, stored, _, _ = (
            _octal(header[start : start + width]) for start, width in _NUMBER_FIELDS
        )
    if stored != _byte_sum(header) - sum(header[_CHKSUM : _CHKSUM + 8]) + 8 * 32:
        raise _Unsupported
    return mode, size, mtime


def _text(field: bytes) -> str:
    """A NUL-terminated name field; only UTF-8 here (tarfile would surrogate-escape)."""
    try:
        return field.split(b"\0", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        raise _Unsupported from None


def _pax_records(stream: bytes, offset: int) -> tuple[dict[str, str], int]:
    """The records of the ``x`` header at *offset* (checked like any other) and the size
    of its data: ``"%d %s=%s\\n"`` records, each length exact, every byte used."""
    header = stream[offset : offset + _BLOCK]
    _, size, _ = _checked(header)
    pos = offset + _BLOCK
    end = pos + size
    if end + _BLOCK > len(stream):
        raise _Unsupported  # no room for the member it describes
    records: dict[str, str] = {}
    while pos < end:
        space = stream.find(b" ", pos, min(pos + 20, end))
        if space <= pos or not stream[pos:space].isdigit():
            raise _Unsupported
        stop = pos + int(stream[pos:space])
        if stop <= space or stop > end or stream[stop - 1] != 0x0A:
            raise _Unsupported
        keyword, eq, value = stream[space + 1 : stop - 1].partition(b"=")
        if not eq:
            raise _Unsupported
        try:
            key, text = keyword.decode("utf-8"), value.decode("utf-8")
        except UnicodeDecodeError:
            raise _Unsupported from None
        if key not in _PAX_KEYS:
            raise _Unsupported
        records[key] = text
        pos = stop
    return records, size


def _apply_pax(info: tarfile.TarInfo, records: dict[str, str]) -> None:
    """What tarfile's ``_apply_pax_info`` does with the keys of :data:`_PAX_KEYS`."""
    if "path" in records:
        info.name = records["path"].rstrip("/")
    if "linkpath" in records:
        info.linkname = records["linkpath"]
    if "size" in records:
        if not records["size"].isascii() or not records["size"].isdigit():
            raise _Unsupported  # tarfile would read it as 0
        info.size = int(records["size"])
    if "mtime" in records:
        try:
            info.mtime = float(records["mtime"])
        except ValueError:
            raise _Unsupported from None  # tarfile would read it as 0


def _header(stream: bytes, offset: int) -> tarfile.TarInfo:
    """The member whose ustar header starts at *offset*, as tarfile's ``frombuf`` reads it."""
    header = stream[offset : offset + _BLOCK]
    mode, size, mtime = _checked(header)
    kind = header[156:157]
    if kind not in _TYPES:
        raise _Unsupported
    name = _text(header[0:100])
    if kind == tarfile.AREGTYPE and name.endswith("/"):
        raise _Unsupported  # a v7 directory
    if kind == tarfile.DIRTYPE:
        name = name.rstrip("/")
    if header[345]:  # ustar's name prefix
        name = f"{_text(header[345:500])}/{name}"
        if kind == tarfile.DIRTYPE:
            name = name.rstrip("/")
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode, info.size, info.mtime = mode, size, mtime
    if header[157]:
        info.linkname = _text(header[157:257])
    info.offset = offset
    info.offset_data = offset + _BLOCK
    return info


def _blocks(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def scan(stream: bytes) -> list[tarfile.TarInfo] | None:
    """Every member of the uncompressed tar *stream*, or None (then use :mod:`tarfile`)."""
    try:
        return _scan(stream)
    except _Unsupported:
        return None


def _scan(stream: bytes) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    end = len(stream)
    offset = 0
    while True:
        if offset == end and members:
            return members  # tarfile ends quietly at a missing end-of-archive block
        if offset + _BLOCK > end:
            raise _Unsupported  # truncated, or the last member's data runs past the end
        if stream[offset + 156] == _PAX_TYPE:
            records, size = _pax_records(stream, offset)
            info = _header(stream, offset + _BLOCK + _blocks(size))
            _apply_pax(info, records)
            info.offset = offset
        elif stream[offset : offset + _BLOCK] == _ZERO_BLOCK:
            if not members:
                raise _Unsupported
            return members
        else:
            info = _header(stream, offset)
        offset = info.offset_data
        if info.type in tarfile.REGULAR_TYPES:
            offset += _blocks(info.size)
        members.append(info)
