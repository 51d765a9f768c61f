"""Two wheels compared file by file: what a rebuild or an index's wheel does differently.

A differing sha256 says nothing a person can act on; the files that differ do.  For a
text file the report is a short unified diff, for an ELF file the sections whose bytes
differ (``.text`` is code, ``.debug_*`` and ``.comment`` are paths and compilers) and
the dynamic symbols added or missing, for any other file its sizes.  Files under
``.dist-info/`` are told apart from code: a RECORD or a ``Generator`` line differing
between two backends is expected, a ``.py`` file differing is not.

ELF is read with :mod:`struct`, as :mod:`monorepo.building.elfcheck` reads headers:
only the section table, the section names and ``.dynsym`` are needed.
"""

from __future__ import annotations

import difflib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from monorepo.building.reproducible import WheelContents

__all__ = [
    "FileDiff",
    "compare_wheels",
    "dynamic_symbols",
    "elf_sections",
]

_DIFF_LINES = 20
_DIFF_BYTES = 1 << 20
_SHT_NOBITS = 8
_SHT_DYNSYM = 11


@dataclass(frozen=True)
class FileDiff:
    """One path that differs: ``added`` (only in the second wheel), ``removed`` (only in
    the first), ``modified`` or ``mode`` (the executable bit); *area* is ``code`` or
    ``metadata`` (under ``.dist-info/``)."""

    path: str
    change: str
    area: str
    kind: str = "binary"
    """``text``, ``elf`` or ``binary``."""
    detail: tuple[str, ...] = field(default=())
    sizes: tuple[int, int] = (0, 0)
    sections: tuple[str, ...] = ()
    symbols_added: tuple[str, ...] = ()
    symbols_missing: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line for a report."""
        where = f"{self.path} ({self.area})"
        if self.change != "modified":
            return f"{where}: {self.change}"
        if self.kind == "elf":
            parts = [f"ELF sections differ: {', '.join(self.sections) or '(layout only)'}"]
            if self.symbols_added:
                parts.append(f"symbols added: {', '.join(self.symbols_added[:10])}")
            if self.symbols_missing:
                parts.append(f"symbols missing: {', '.join(self.symbols_missing[:10])}")
            return f"{where}: " + "; ".join(parts)
        if self.kind == "text":
            return f"{where}: text differs ({len(self.detail)} diff lines)"
        return f"{where}: {self.sizes[0]} -> {self.sizes[1]} bytes"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "path": self.path,
            "change": self.change,
            "area": self.area,
            "kind": self.kind,
            "sizes": list(self.sizes),
        }
        if self.detail:
            data["diff"] = list(self.detail)
        if self.sections:
            data["sections"] = list(self.sections)
        if self.symbols_added:
            data["symbols-added"] = list(self.symbols_added)
        if self.symbols_missing:
            data["symbols-missing"] = list(self.symbols_missing)
        return data


def _area(path: str) -> str:
    first = PurePosixPath(path).parts[0] if path else ""
    return "metadata" if first.endswith(".dist-info") else "code"


def _text(data: bytes) -> str | None:
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def compare_wheels(
    first: WheelContents,
    second: WheelContents,
    *,
    names: tuple[str, str] = ("recorded", "rebuilt"),
    renames: Mapping[str, str] | None = None,
) -> list[FileDiff]:
    """Every path that differs between *first* and *second*, sorted; *names* label the
    two sides of a text diff.  *renames* maps a path of *second* to the one it stands
    for in *first* (a ``.dist-info`` directory spelled otherwise by another backend)."""
    theirs = {(renames or {}).get(p, p): d for p, d in second.files.items()}
    their_exec = {(renames or {}).get(p, p) for p in second.executable}
    out: list[FileDiff] = []
    for path in sorted(first.files.keys() | theirs.keys()):
        area = _area(path)
        a, b = first.files.get(path), theirs.get(path)
        if a is None:
            out.append(FileDiff(path, "added", area, sizes=(0, len(b or b""))))
        elif b is None:
            out.append(FileDiff(path, "removed", area, sizes=(len(a), 0)))
        elif a != b:
            out.append(_modified(path, area, a, b, names))
        elif (path in first.executable) != (path in their_exec):
            out.append(FileDiff(path, "mode", area, sizes=(len(a), len(b))))
    return out


def _modified(path: str, area: str, a: bytes, b: bytes, names: tuple[str, str]) -> FileDiff:
    sizes = (len(a), len(b))
    if a.startswith(b"\x7fELF") and b.startswith(b"\x7fELF"):
        sa, sb = elf_sections(a), elf_sections(b)
        differ = sorted(n for n in sa.keys() | sb.keys() if sa.get(n) != sb.get(n))
        syma, symb = dynamic_symbols(a), dynamic_symbols(b)
        return FileDiff(
            path,
            "modified",
            area,
            kind="elf",
            sizes=sizes,
            sections=tuple(differ),
            symbols_added=tuple(sorted(symb - syma)),
            symbols_missing=tuple(sorted(syma - symb)),
        )
    if max(len(a), len(b)) > _DIFF_BYTES:  # difflib is quadratic: no diff of huge files
        return FileDiff(path, "modified", area, sizes=sizes)
    ta, tb = _text(a), _text(b)
    if ta is not None and tb is not None:
        lines = list(
            difflib.unified_diff(
                ta.splitlines(),
                tb.splitlines(),
                fromfile=f"{names[0]}/{path}",
                tofile=f"{names[1]}/{path}",
                lineterm="",
                n=1,
            )
        )
        if len(lines) > _DIFF_LINES:
            lines = [*lines[:_DIFF_LINES], f"... ({len(lines) - _DIFF_LINES} more lines)"]
        return FileDiff(path, "modified", area, kind="text", sizes=sizes, detail=tuple(lines))
    return FileDiff(path, "modified", area, sizes=sizes)


# ------------------------------------------------------------------------------ ELF


@dataclass(frozen=True)
class _Section:
    name: str
    type: int
    offset: int
    size: int
    link: int
    entsize: int


def _sections(data: bytes) -> tuple[list[_Section], str, bool] | None:
    """The section table of *data*, or None when it is not a readable ELF file."""
    if len(data) < 64 or not data.startswith(b"\x7fELF") or data[4] not in (1, 2):
        return None
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    try:
        if is64:
            (shoff,) = struct.unpack_from(end + "Q", data, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x3A)
            fmt = end + "IIQQQQIIQQ"
        else:
            (shoff,) = struct.unpack_from(end + "I", data, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x2E)
            fmt = end + "IIIIIIIIII"
        if shnum == 0 or shnum > 4096 or shentsize < struct.calcsize(fmt):
            return None
        raw = []
        for i in range(shnum):
            f = struct.unpack_from(fmt, data, shoff + i * shentsize)
            # name, type, flags, addr, offset, size, link, info, addralign, entsize
            raw.append((f[0], f[1], f[4], f[5], f[6], f[9]))
        strtab = raw[shstrndx] if shstrndx < len(raw) else None
    except struct.error:
        return None
    out: list[_Section] = []
    for name_off, typ, offset, size, link, entsize in raw:
        name = ""
        if strtab is not None:
            start = strtab[2] + name_off
            stop = data.find(b"\0", start, strtab[2] + strtab[3])
            name = data[start:stop].decode("ascii", "replace") if stop >= 0 else ""
        out.append(_Section(name, typ, offset, size, link, entsize))
    return out, end, is64


def elf_sections(data: bytes) -> dict[str, bytes]:
    """Section name -> its bytes (empty for sections that occupy none, such as
    ``.bss``); ``{}`` for a file that is not readable ELF.  Sections of one name are
    concatenated, so the comparison is by name."""
    parsed = _sections(data)
    if parsed is None:
        return {}
    out: dict[str, bytes] = {}
    for s in parsed[0]:
        if not s.name:
            continue
        body = b"" if s.type == _SHT_NOBITS else data[s.offset : s.offset + s.size]
        out[s.name] = out.get(s.name, b"") + body
    return out


def dynamic_symbols(data: bytes) -> set[str]:
    """The names of the defined global and weak symbols ``.dynsym`` exports (what an
    importer can link against: ``PyInit_*`` and friends)."""
    parsed = _sections(data)
    if parsed is None:
        return set()
    sections, end, is64 = parsed
    names: set[str] = set()
    for s in sections:
        if s.type != _SHT_DYNSYM or s.link >= len(sections):
            continue
        strtab = sections[s.link]
        size = 24 if is64 else 16  # Elf64_Sym / Elf32_Sym, whatever entsize claims
        for off in range(s.offset + size, s.offset + s.size, size):  # entry 0 is null
            try:
                if is64:
                    name, info, _other, shndx = struct.unpack_from(end + "IBBH", data, off)
                else:
                    (name,) = struct.unpack_from(end + "I", data, off)
                    info, _other, shndx = struct.unpack_from(end + "BBH", data, off + 12)
            except struct.error:
                break
            binding = info >> 4
            if shndx == 0 or binding not in (1, 2):  # undefined, or local
                continue
            start = strtab.offset + name
            stop = data.find(b"\0", start, strtab.offset + strtab.size)
            if stop > start:
                names.add(data[start:stop].decode("ascii", "replace"))
    return names
