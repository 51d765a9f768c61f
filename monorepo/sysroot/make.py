"""Target sysroots from Debian packages, for cross builds (DESIGN.md section 8).

``python -m monorepo.sysroot DEST`` makes a directory holding what a cross build for
a Debian/Linux target needs from the target itself: the C library and its headers,
CPython's headers, ``libpython``, the ``_sysconfigdata`` module and the interpreter
binary (which runs under ``qemu-<machine> -L DEST``).  It does so by download and
unpack only -- no ``dpkg --add-architecture``, nothing changes outside *DEST* and the
cache:

1. ``dists/<suite>/InRelease`` (or ``Release``) is fetched from the mirror, its
   signature checked with ``gpgv`` when that and the Debian keyring are installed, and
   the SHA256 it records for ``main/binary-<arch>/Packages.xz`` (or ``.gz``) is what the
   downloaded index must hash to.
2. The packages :func:`root_packages` names are resolved with their ``Depends`` and
   ``Pre-Depends`` closure (:func:`resolve_closure`).
3. Each ``.deb`` is downloaded into ``cache_root()/"debian"`` (verified against the
   SHA256 in ``Packages``), its ``ar`` container parsed (:func:`ar_members`) and its
   ``data.tar.*`` member unpacked under the safe rules of :func:`plan_deb` into a
   staging directory beside *DEST*: no absolute paths, no ``..``, no device files, no
   writes through symlinks.  Absolute symlinks are rewritten relative so they stay in
   the sysroot, and ``/bin``, ``/sbin``, ``/lib`` are merged into ``/usr`` (with
   compatibility links) so there is one library directory.
4. ``monorepo-sysroot.toml`` records the request, the packages and versions and the
   paths a builder needs; :func:`read_sysroot` reads it back as :class:`SysrootInfo`.
   The staging directory then replaces *DEST* in one rename.

A second run with the same request finds the toml and does nothing (not even network
access); ``refresh=True`` re-reads the mirror and rebuilds if a version changed.

The mirror comes from the *mirror* argument, else ``MONOREPO_DEBIAN_MIRROR``, else the
machine's apt configuration (``/etc/apt/sources.list``, ``sources.list.d/*.list`` and
deb822 ``*.sources``).
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import hashlib
import io
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal

from monorepo._core.atomic import write_bytes
from monorepo._core.fstree import remove_tree
from monorepo._core.reporter import NullReporter, Reporter
from monorepo.errors import ExtractError, HashMismatchError, IndexClientError, MonorepoError
from monorepo.extract import archive as extract
from monorepo.extract.archive import (
    DEFAULT_LIMITS,
    Limits,
    Planner,
    RawMember,
    resolve_path,
    tar_raw,
)

__all__ = [
    "ARCHES",
    "ArMember",
    "Closure",
    "DebEntry",
    "DebPackage",
    "SysrootError",
    "SysrootInfo",
    "ar_members",
    "deb_data_member",
    "debian_mirror",
    "make_sysroot",
    "parse_depends",
    "parse_packages",
    "parse_release",
    "plan_deb",
    "read_sysroot",
    "relativise_ld_script",
    "resolve_closure",
    "root_packages",
]

TOML_NAME = "monorepo-sysroot.toml"
FORMAT = 1
PYTHONPATH_DIR = "monorepo-pythonpath"
DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
_APT_DIR = Path("/etc/apt")
_MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_SCHEMES = ("http://", "https://", "file://")
_CHUNK = 1 << 16


class SysrootError(MonorepoError):
    """A sysroot could not be made or read; the message names the package or file."""


@dataclass(frozen=True)
class Arch:
    """What a Debian architecture name means to a cross build."""

    debian: str
    triplet: str
    """The multiarch tuple: ``usr/lib/<triplet>``, ``<triplet>-gcc``."""
    machine: str
    """``platform.machine()`` on the target."""
    qemu: str
    """The qemu-user binary that runs the target's programs."""


ARCHES: dict[str, Arch] = {
    a.debian: a
    for a in (
        Arch("arm64", "aarch64-linux-gnu", "aarch64", "qemu-aarch64"),
        Arch("amd64", "x86_64-linux-gnu", "x86_64", "qemu-x86_64"),
        Arch("armhf", "arm-linux-gnueabihf", "armv7l", "qemu-arm"),
        Arch("i386", "i386-linux-gnu", "i686", "qemu-i386"),
        Arch("ppc64el", "powerpc64le-linux-gnu", "ppc64le", "qemu-ppc64le"),
        Arch("riscv64", "riscv64-linux-gnu", "riscv64", "qemu-riscv64"),
        Arch("s390x", "s390x-linux-gnu", "s390x", "qemu-s390x"),
    )
}

#: Roots besides the Python packages; skipped with a warning when a suite lacks one
#: (names change between releases, e.g. ``libssl3`` became ``libssl3t64``).
OPTIONAL_ROOTS = (
    "libexpat1",
    "libexpat1-dev",
    "zlib1g",
    "zlib1g-dev",
    "libffi8",
    "libssl3",
    "libyaml-0-2",
    "libyaml-dev",
    "libcrypt1",
    "libbz2-1.0",
    "liblzma5",
    "libsqlite3-0",
    "libuuid1",
    "libncursesw6",
    "libtinfo6",
    "libreadline8",
    "libgcc-s1",
    "libstdc++6",
)


def root_packages(python: str) -> tuple[str, ...]:
    """The packages a sysroot for CPython *python* ("3.11") must hold (plus Depends)."""
    return (
        f"python{python}-minimal",
        f"libpython{python}-minimal",
        f"libpython{python}-stdlib",
        f"libpython{python}",
        f"libpython{python}-dev",
        "libc6",
        "libc6-dev",
    )


# --------------------------------------------------------------------------- mirror


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    """RFC 822-style stanzas (Packages, Release, *.sources): field -> value.

    Continuation lines (starting with a space or tab) are joined with newlines; a
    continuation line of a single ``.`` stands for an empty line.  ``#`` comment lines
    are dropped (they occur in apt's ``.sources``, never in archive indices).
    """
    fields: dict[str, str] = {}
    key: str | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, None
            continue
        if line[0] in " \t":
            if key is not None:
                cont = line[1:]
                fields[key] += "\n" + ("" if cont.strip() == "." else cont)
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip()
        fields[key] = value.strip()
    if fields:
        yield fields


@dataclass(frozen=True)
class _AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def _apt_sources(apt_dir: Path) -> list[_AptSource]:
    found: list[_AptSource] = []
    lists = [apt_dir / "sources.list"]
    sources: list[Path] = []
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        lists += sorted(parts.glob("*.list"))
        sources = sorted(parts.glob("*.sources"))
    for path in lists:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            line = re.sub(r"\[[^\]]*\]", " ", line)  # [arch=amd64 signed-by=...]
            words = line.split()
            if len(words) >= 3 and words[0] == "deb":
                found.append(_AptSource(words[1], (words[2],), tuple(words[3:])))
    for path in sources:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for stanza in _deb822_stanzas(text):
            if stanza.get("Enabled", "yes").lower() == "no":
                continue
            if "deb" not in stanza.get("Types", "").split():
                continue
            suites = tuple(stanza.get("Suites", "").split())
            components = tuple(stanza.get("Components", "").split())
            for uri in stanza.get("URIs", "").split():
                found.append(_AptSource(uri, suites, components))
    return [s for s in found if s.uri.startswith(_SCHEMES)]


def debian_mirror(suite: str = "bookworm", *, apt_dir: Path = _APT_DIR) -> str:
    """The Debian mirror URL to use: ``MONOREPO_DEBIAN_MIRROR``, else apt's configuration.

    From apt's sources the first ``deb`` entry listing *suite* with component ``main``
    wins; failing that, the first whose URI path ends in ``/debian`` (a Debian archive
    serves every suite).  Raises :class:`SysrootError` when nothing fits.
    """
    env = os.environ.get("MONOREPO_DEBIAN_MIRROR", "").strip()
    if env:
        return env.rstrip("/")
    sources = _apt_sources(apt_dir)
    for source in sources:
        if suite in source.suites and "main" in source.components:
            return source.uri.rstrip("/")
    for source in sources:
        if source.uri.rstrip("/").endswith("/debian") and "main" in source.components:
            return source.uri.rstrip("/")
    raise SysrootError(
        f"no Debian mirror for suite '{suite}' in {apt_dir}/sources.list or"
        f" {apt_dir}/sources.list.d/; pass --mirror URL (the directory holding dists/ and"
        " pool/) or set MONOREPO_DEBIAN_MIRROR"
    )


# --------------------------------------------------------------------------- indices


def _clearsigned_body(text: str) -> str:
    """The signed text of an OpenPGP clearsigned message (InRelease), dash-unescaped."""
    if not text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        return text
    lines = text.splitlines()
    try:
        start = lines.index("") + 1
        end = lines.index("-----BEGIN PGP SIGNATURE-----")
    except ValueError as e:
        raise SysrootError("InRelease is a damaged clearsigned message") from e
    return "\n".join(line[2:] if line.startswith("- ") else line for line in lines[start:end])


@dataclass(frozen=True)
class Release:
    """What a suite's Release file says: its names and the SHA256 of each index."""

    suite: str
    codename: str
    sha256: dict[str, tuple[str, int]]
    """Path below ``dists/<suite>/`` -> (sha256, size)."""


def parse_release(text: str) -> Release:
    """Parse a ``Release`` or clearsigned ``InRelease`` file."""
    stanzas = list(_deb822_stanzas(_clearsigned_body(text)))
    if not stanzas:
        raise SysrootError("the Release file is empty")
    fields = stanzas[0]
    hashes: dict[str, tuple[str, int]] = {}
    for line in fields.get("SHA256", "").splitlines():
        words = line.split()
        if len(words) == 3 and words[1].isdigit():
            hashes[words[2]] = (words[0].lower(), int(words[1]))
    if not hashes:
        raise SysrootError("the Release file has no SHA256 list, so nothing can be verified")
    return Release(fields.get("Suite", ""), fields.get("Codename", ""), hashes)


@dataclass(frozen=True)
class DebPackage:
    """One stanza of a ``Packages`` index (the fields a sysroot needs)."""

    name: str
    version: str
    architecture: str
    filename: str
    sha256: str
    size: int
    depends: tuple[tuple[str, ...], ...] = ()
    """``Pre-Depends`` then ``Depends``: each a group of alternatives."""
    provides: tuple[str, ...] = ()
    essential: bool = False
    priority: str = ""


_DEP_RE = re.compile(
    r"^\s*([a-z0-9][a-z0-9+.\-]*)(?::[a-z0-9\-]+)?\s*(?:\(.*\))?\s*(?:\[.*\])?\s*(?:<.*>)?\s*$"
)


def parse_depends(value: str) -> tuple[tuple[str, ...], ...]:
    """``a (>= 1), b:any | c [arm64]`` -> ``(("a",), ("b", "c"))``: names only."""
    groups: list[tuple[str, ...]] = []
    for group in value.split(","):
        names: list[str] = []
        for alternative in group.split("|"):
            match = _DEP_RE.match(alternative)
            if match:
                names.append(match.group(1))
        if names:
            groups.append(tuple(names))
    return tuple(groups)


def parse_packages(text: str) -> dict[str, DebPackage]:
    """A ``Packages`` index: name -> package (the first stanza of a name wins)."""
    index: dict[str, DebPackage] = {}
    for fields in _deb822_stanzas(text):
        name = fields.get("Package")
        if not name or name in index:
            continue
        try:
            size = int(fields.get("Size", "0"))
        except ValueError:
            size = 0
        provides = tuple(g[0] for g in parse_depends(fields.get("Provides", "")))
        index[name] = DebPackage(
            name=name,
            version=fields.get("Version", ""),
            architecture=fields.get("Architecture", ""),
            filename=fields.get("Filename", ""),
            sha256=fields.get("SHA256", "").lower(),
            size=size,
            depends=parse_depends(fields.get("Pre-Depends", ""))
            + parse_depends(fields.get("Depends", "")),
            provides=provides,
            essential=fields.get("Essential", "").lower() == "yes",
            priority=fields.get("Priority", ""),
        )
    return index


@dataclass(frozen=True)
class Closure:
    """The packages to unpack, and what the resolution left out (and why)."""

    packages: list[DebPackage]
    """Sorted by name."""
    skipped: list[str] = field(default_factory=list)
    """Essential or priority-required non-library packages only reached as dependencies."""
    missing: list[str] = field(default_factory=list)
    """Dependency groups nothing in the index satisfies, as ``a | b``."""


def _skippable(package: DebPackage) -> bool:
    """An Essential/required package that is no library: tools (perl, dpkg, debconf).

    A sysroot is for compiling and linking, and its interpreter runs without them;
    libraries (``lib*``) are kept even when required, because they are what links.
    """
    required = package.essential or package.priority == "required"
    return required and not package.name.startswith("lib")


def resolve_closure(
    index: Mapping[str, DebPackage],
    roots: Sequence[str],
    *,
    optional_roots: Sequence[str] = (),
    skip: Callable[[DebPackage], bool] = _skippable,
) -> Closure:
    """*roots* (all must exist) and *optional_roots* with their dependency closure.

    Each group of alternatives takes its first alternative that is a real package,
    else the first package providing one of them; a group nothing satisfies is
    recorded in :attr:`Closure.missing`.  Version constraints are ignored: an index
    holds one version of each package.  Dependencies for which *skip* holds are left
    out (recorded in :attr:`Closure.skipped`); roots are never skipped.
    """
    absent = [name for name in roots if name not in index]
    if absent:
        raise SysrootError(
            f"the package index has no {', '.join(absent)}; check --suite, --arch and"
            " --python (Debian ships one CPython minor version per release, e.g. 3.11 in"
            " bookworm)"
        )
    providers: dict[str, list[str]] = {}
    for package in index.values():
        for virtual in package.provides:
            providers.setdefault(virtual, []).append(package.name)
    chosen: dict[str, DebPackage] = {}
    skipped: set[str] = set()
    missing: list[str] = []
    todo = [*roots, *(name for name in optional_roots if name in index)]
    for name in todo:
        chosen.setdefault(name, index[name])
    stack = list(chosen)
    while stack:
        package = chosen[stack.pop()]
        for group in package.depends:
            pick = next((alt for alt in group if alt in index), None)
            if pick is None:
                pick = next((providers[alt][0] for alt in group if alt in providers), None)
            if pick is None:
                text = " | ".join(group)
                if text not in missing:
                    missing.append(text)
                continue
            if pick in chosen or pick in skipped:
                continue
            dep = index[pick]
            if skip(dep):
                skipped.add(pick)
                continue
            chosen[pick] = dep
            stack.append(pick)
    return Closure(
        packages=[chosen[name] for name in sorted(chosen)],
        skipped=sorted(skipped),
        missing=missing,
    )


# --------------------------------------------------------------------------- .deb


@dataclass(frozen=True)
class ArMember:
    """One member of an ``ar`` archive: its bytes are ``data[offset:offset + size]``."""

    name: str
    offset: int
    size: int


def ar_members(data: bytes, *, what: str = "archive") -> list[ArMember]:
    """The members of the common (System V / GNU, BSD long name) ``ar`` format.

    A ``.deb`` is such an archive of ``debian-binary``, ``control.tar.*`` and
    ``data.tar.*``.  Raises :class:`SysrootError` naming *what* on any damage.
    """
    if not data.startswith(b"!<arch>\n"):
        raise SysrootError(f"{what} is not an ar archive (no '!<arch>' magic)")
    members: list[ArMember] = []
    pos = 8
    while pos < len(data):
        if data[pos : pos + 1] == b"\n":  # stray padding
            pos += 1
            continue
        header = data[pos : pos + 60]
        if len(header) < 60 or header[58:60] != b"`\n":
            raise SysrootError(f"{what}: damaged ar header at byte {pos}")
        raw_name = header[0:16].decode("ascii", "replace").rstrip(" ")
        try:
            size = int(header[48:58].decode("ascii").strip() or "0")
        except ValueError as e:
            raise SysrootError(f"{what}: bad member size in the ar header at byte {pos}") from e
        start = pos + 60
        if size < 0 or start + size > len(data):
            raise SysrootError(f"{what}: member '{raw_name}' runs past the end (truncated)")
        name, offset, length = raw_name, start, size
        if raw_name.startswith("#1/"):  # BSD: the name is the first N bytes of the data
            n = int(raw_name[3:]) if raw_name[3:].isdigit() else -1
            if n < 0 or n > size:
                raise SysrootError(f"{what}: bad BSD long name '{raw_name}'")
            name = data[start : start + n].decode("utf-8", "replace").rstrip("\0")
            offset, length = start + n, size - n
        elif raw_name.endswith("/") and raw_name not in ("/", "//"):
            name = raw_name[:-1]  # GNU terminator
        members.append(ArMember(name, offset, length))
        pos = start + size + (size % 2)
    return members


def deb_data_member(data: bytes, *, what: str = "package") -> tuple[str, bytes]:
    """The name and bytes of a ``.deb``'s ``data.tar[.xz|.gz|.zst|.bz2]`` member."""
    members = ar_members(data, what=what)
    if not members or members[0].name != "debian-binary":
        raise SysrootError(f"{what} is not a .deb (first member is not debian-binary)")
    version = data[members[0].offset : members[0].offset + members[0].size]
    if not version.startswith(b"2."):
        raise SysrootError(f"{what}: unsupported .deb format {version.strip()!r}")
    for member in members:
        if member.name.startswith("data.tar"):
            return member.name, data[member.offset : member.offset + member.size]
    raise SysrootError(f"{what}: the .deb has no data.tar member")


def _decompress(name: str, blob: bytes, what: str) -> bytes:
    """The extractor's capped decompression (:func:`monorepo.extract.decompress`)."""
    try:
        return extract.decompress(name, blob, package=what)
    except ExtractError as e:
        raise SysrootError(str(e)) from e


@dataclass(frozen=True)
class DebEntry:
    """A checked ``data.tar`` member and where it goes below the sysroot."""

    original: str
    rel: str
    """Path below DEST after merging /bin, /sbin, /lib* into /usr."""
    kind: Literal["file", "dir", "symlink", "hardlink"]
    executable: bool = False
    link: str = ""
    """Symlink: the (relative, rewritten) target.  Hard link: the ``rel`` of its file."""


def _merge_usr(parts: list[str]) -> list[str]:
    return ["usr", *parts] if parts and parts[0] in _MERGED else parts


_DEB_ADVICE = "Nothing of this sysroot was installed; the package or mirror is damaged or hostile"


def plan_deb(
    package: str,
    members: Iterable[RawMember],
    *,
    archive_name: str = "data.tar",
    archive_size: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> list[DebEntry]:
    """Check a ``data.tar``'s members and say where each goes; pure (no file system).

    The checks are the extractor's (:class:`monorepo.extract.Planner`, ``tree`` layout,
    the same :class:`~monorepo.extract.Limits` as every archive): no absolute paths, no
    ``..``, no NUL bytes, no device or fifo members, no symlink whose target leaves the
    root (through the package's other links too), hard links only to an earlier
    regular file, and the caps on members, bytes (links counted), ratio, depth and path
    length.  What is the sysroot's own comes first: every path (members and link
    targets) has ``/bin``, ``/sbin`` and ``/lib*`` merged into ``/usr`` so that links
    and the things they name agree, and absolute symlink targets are taken as relative
    to the sysroot root and rewritten relative to the link.  *archive_size* is the
    compressed member's size (None: not known, the ratio is not checked).  Raises
    :class:`SysrootError`.
    """
    planner = Planner(package, archive_name, archive_size, limits, "tree", _DEB_ADVICE)
    plan: list[DebEntry] = []
    by_rel: dict[str, DebEntry] = {}
    try:
        for raw in members:
            merged = _merged(raw, planner)
            if merged is None:
                continue
            planned = planner.add(merged)
            if not planned.rel:
                continue
            entry: DebEntry
            if planned.kind == "symlink":
                entry = DebEntry(raw.name, planned.rel, "symlink", False, planned.link)
            elif planned.kind == "hardlink":
                found = by_rel[planned.link]
                entry = DebEntry(raw.name, planned.rel, "hardlink", found.executable, planned.link)
            else:  # a repeated file is written again, the later one winning, as dpkg does
                kind: Literal["file", "dir"] = "dir" if planned.kind == "dir" else "file"
                entry = DebEntry(raw.name, planned.rel, kind, bool(raw.mode & 0o111))
            plan.append(entry)
            by_rel.setdefault(planned.rel, entry)
        planner.finish()
    except ExtractError as e:
        raise SysrootError(str(e)) from e
    return plan


def _merged(raw: RawMember, planner: Planner) -> RawMember | None:
    """*raw* with its path and link target merged into ``/usr`` and an absolute symlink
    target made relative; None for a link that merging makes point at itself (``lib64 ->
    usr/lib64``: the directory it stood for is merged already).  A path the planner will
    refuse anyway is passed on unchanged, for the planner's message."""

    def merge(path: str) -> str | None:
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if path.startswith("/") or "\0" in path or ".." in parts or not parts:
            return None
        return "/".join(_merge_usr(parts))

    name = merge(raw.name)
    if name is None:
        return raw
    if raw.kind == "hardlink":
        return replace(raw, name=name, link=merge(raw.link) or raw.link)
    if raw.kind != "symlink" or not raw.link or "\0" in raw.link:
        return replace(raw, name=name)
    parent = [p for p in raw.name.split("/") if p not in ("", ".")][:-1]
    absolute = raw.link.startswith("/")
    target = resolve_path([] if absolute else parent, raw.link.lstrip("/"))
    if target is None:
        raise planner.refuse(raw.name, f"is a symlink to '{raw.link}', which leaves the sysroot")
    target = _merge_usr(target)
    if "/".join(target) == name:
        return None
    link = posixpath.relpath("/" + "/".join(target), "/" + name.rpartition("/")[0])
    return replace(raw, name=name, link=link)


class _Writer:
    """Writes planned entries below *root*, never through a symlink.

    Every parent directory is created here and checked to resolve to exactly its
    lexical path below *root*, so a symlink shipped by one package cannot redirect the
    files of another.  A later package's file replaces an earlier one's, as dpkg's
    ``Replaces`` would.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self._checked: set[str] = {""}

    def _parent(self, package: str, rel: str) -> str:
        parent = posixpath.dirname(rel)
        if parent in self._checked:
            return os.path.join(self.root, rel)
        path = os.path.join(self.root, parent)
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as e:
            raise SysrootError(
                f"{package}: cannot create directory '{parent}' in the sysroot: a file of"
                " another package is in the way"
            ) from e
        if os.path.realpath(path) != os.path.join(self.real_root, parent):
            raise SysrootError(
                f"{package}: refusing to write '{rel}': '{parent}' is reached through a"
                " symlink in the sysroot"
            )
        self._checked.add(parent)
        return os.path.join(self.root, rel)

    @staticmethod
    def _clear(path: str) -> None:
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
        elif os.path.isdir(path):
            raise IsADirectoryError(path)

    def write(self, package: str, entry: DebEntry, source: IO[bytes] | None) -> None:
        path = self._parent(package, entry.rel)
        try:
            if entry.kind == "dir":
                if os.path.islink(path) or (os.path.exists(path) and not os.path.isdir(path)):
                    raise SysrootError(
                        f"{package}: directory '{entry.rel}' is already a file or symlink in"
                        " the sysroot"
                    )
                os.makedirs(path, mode=0o755, exist_ok=True)
                self._checked.add(entry.rel)
                return
            self._clear(path)
            if entry.kind == "symlink":
                os.symlink(entry.link, path)
            elif entry.kind == "hardlink":
                shutil.copyfile(os.path.join(self.root, entry.link), path)
                os.chmod(path, 0o755 if entry.executable else 0o644)
            else:
                assert source is not None
                with open(path, "wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
                os.chmod(path, 0o755 if entry.executable else 0o644)
        except IsADirectoryError as e:
            raise SysrootError(
                f"{package}: '{entry.rel}' is a directory in the sysroot but a file in the package"
            ) from e


def unpack_deb(deb: bytes, root: Path, *, package: str, writer: _Writer | None = None) -> None:
    """Unpack the ``data.tar`` of *deb* below *root* (checked first, then written)."""
    name, blob = deb_data_member(deb, what=package)
    tar_bytes = _decompress(name, blob, package)
    writer = writer or _Writer(root)
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            infos: list[tarfile.TarInfo] = []

            def raw_members() -> Iterator[RawMember]:
                # Planned while the headers are read: a member flood is refused early.
                for info in tar:
                    infos.append(info)
                    yield tar_raw(info)

            plan = plan_deb(package, raw_members(), archive_name=name, archive_size=len(blob))
            by_name = {info.name: info for info in infos}
            for entry in plan:
                source = tar.extractfile(by_name[entry.original]) if entry.kind == "file" else None
                writer.write(package, entry, source)
    except tarfile.TarError as e:
        raise SysrootError(f"{package}: its {name} is not a readable tar ({e})") from e
    except OSError as e:
        raise SysrootError(f"{package}: cannot unpack into {root}: {e}") from e


_LD_SCRIPT_PATH = re.compile(r"(?<![\w*/.])/(?!\*)[^\s()]+")


def relativise_ld_script(text: str) -> str:
    """Make a GNU ld script's absolute library paths bare names (found through ``-L``).

    glibc's ``libc.so`` says ``GROUP ( /lib/<triplet>/libc.so.6 ... )``; ld prefixes
    such paths with the sysroot only under ``--sysroot``, so a build that merely passes
    ``-L DEST/usr/lib/<triplet>`` would link against the host's files.  Bare names are
    searched in the library path, which works both ways.  Comments are left alone.
    """
    return _LD_SCRIPT_PATH.sub(lambda m: posixpath.basename(m.group(0)), text)


def _fix_ld_scripts(root: Path, lib_dirs: Iterable[str]) -> list[str]:
    fixed: list[str] = []
    for rel in lib_dirs:
        directory = root / rel
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.so")):
            if path.is_symlink() or not path.is_file() or path.stat().st_size > 16384:
                continue
            head = path.read_bytes()
            if head.startswith(b"\x7fELF") or not (b"GROUP" in head or b"INPUT" in head):
                continue
            text = head.decode("utf-8", "replace")
            new = relativise_ld_script(text)
            if new != text:
                path.write_text(new, encoding="utf-8")
                fixed.append(f"{rel}/{path.name}")
    return fixed


# --------------------------------------------------------------------------- info


@dataclass(frozen=True)
class SysrootInfo:
    """``monorepo-sysroot.toml``: what a sysroot holds and where a builder finds it.

    Paths are relative to :attr:`root`; the ``*_path(s)`` properties make them absolute.
    """

    root: Path
    arch: str
    suite: str
    python: str
    triplet: str
    machine: str
    host_platform: str
    """What ``sysconfig.get_platform()`` says on the target: ``_PYTHON_HOST_PLATFORM``."""
    interpreter: str
    include_dirs: tuple[str, ...]
    lib_dirs: tuple[str, ...]
    sysconfigdata_name: str
    """The module name: ``_PYTHON_SYSCONFIGDATA_NAME``."""
    sysconfigdata_dir: str
    """The directory holding it in the target's stdlib (``usr/lib/python3.11``)."""
    pythonpath_dir: str
    """A directory holding only a copy of the sysconfigdata module: what to put on a host
    interpreter's ``PYTHONPATH`` without also shadowing its stdlib with the target's."""
    ext_suffix: str
    soabi: str
    packages: dict[str, str]
    """Installed package -> Debian version."""
    skipped: tuple[str, ...] = ()
    mirror_id: str = ""
    extra_packages: tuple[str, ...] = ()

    def path(self, rel: str) -> Path:
        return self.root / rel

    @property
    def interpreter_path(self) -> Path:
        return self.root / self.interpreter

    @property
    def include_paths(self) -> list[Path]:
        return [self.root / d for d in self.include_dirs]

    @property
    def lib_paths(self) -> list[Path]:
        return [self.root / d for d in self.lib_dirs]

    @property
    def sysconfigdata_path(self) -> Path:
        return self.root / self.sysconfigdata_dir / f"{self.sysconfigdata_name}.py"

    @property
    def qemu(self) -> str:
        return ARCHES[self.arch].qemu if self.arch in ARCHES else f"qemu-{self.machine}"

    def cross_env(self, cc: str | None = None) -> dict[str, str]:
        """The environment a PEP 517 hook needs to build for this sysroot on the host.

        *cc* defaults to ``<triplet>-gcc``.  ``CFLAGS`` put the target's headers before
        the ``-I/usr/include/python3.x`` that setuptools adds from the sysconfigdata.
        """
        compiler = cc or f"{self.triplet}-gcc"
        includes = " ".join(f"-I{p}" for p in self.include_paths)
        libs = " ".join(f"-L{p}" for p in self.lib_paths)
        root = str(self.root)
        return {
            "_PYTHON_HOST_PLATFORM": self.host_platform,
            "_PYTHON_SYSCONFIGDATA_NAME": self.sysconfigdata_name,
            "PYTHONPATH": str(self.root / self.pythonpath_dir),
            "CC": f"{compiler} --sysroot={root}",
            "LDSHARED": f"{compiler} --sysroot={root} -shared",
            "CFLAGS": f"{includes} -fPIC",
            "LDFLAGS": libs,
        }


def read_sysroot(dest: Path) -> SysrootInfo:
    """Read ``DEST/monorepo-sysroot.toml``; :class:`SysrootError` if absent or malformed."""
    toml_path = dest / TOML_NAME
    try:
        data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise SysrootError(
            f"{dest} is not a sysroot (no {TOML_NAME}); make one with 'python -m"
            f" monorepo.sysroot {dest}'"
        ) from e
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise SysrootError(f"{toml_path} cannot be read ({e}); make the sysroot again") from e
    try:
        if data.get("format") != FORMAT:
            raise SysrootError(
                f"{toml_path} has format {data.get('format')!r}, this monorepo reads"
                f" {FORMAT}; make the sysroot again"
            )
        packages = data["packages"]
        if not isinstance(packages, dict):
            raise TypeError("packages")
        return SysrootInfo(
            root=dest.resolve(),
            arch=str(data["arch"]),
            suite=str(data["suite"]),
            python=str(data["python"]),
            triplet=str(data["triplet"]),
            machine=str(data["machine"]),
            host_platform=str(data["host_platform"]),
            interpreter=str(data["interpreter"]),
            include_dirs=tuple(str(d) for d in data["include_dirs"]),
            lib_dirs=tuple(str(d) for d in data["lib_dirs"]),
            sysconfigdata_name=str(data["sysconfigdata_name"]),
            sysconfigdata_dir=str(data["sysconfigdata_dir"]),
            pythonpath_dir=str(data["pythonpath_dir"]),
            ext_suffix=str(data["ext_suffix"]),
            soabi=str(data["soabi"]),
            packages={str(k): str(v) for k, v in packages.items()},
            skipped=tuple(str(s) for s in data.get("skipped", [])),
            mirror_id=str(data.get("mirror_id", "")),
            extra_packages=tuple(str(s) for s in data.get("extra_packages", [])),
        )
    except (KeyError, TypeError) as e:
        raise SysrootError(f"{toml_path} lacks or mistypes key {e}; make the sysroot again") from e


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_toml_str(v) for v in values) + "]"


def _render(info: SysrootInfo) -> str:
    lines = [
        "# Written by 'python -m monorepo.sysroot'; read by monorepo build.",
        "# Paths are relative to this directory.",
        f"format = {FORMAT}",
        f"arch = {_toml_str(info.arch)}",
        f"suite = {_toml_str(info.suite)}",
        f"python = {_toml_str(info.python)}",
        f"triplet = {_toml_str(info.triplet)}",
        f"machine = {_toml_str(info.machine)}",
        f"host_platform = {_toml_str(info.host_platform)}",
        f"interpreter = {_toml_str(info.interpreter)}",
        f"include_dirs = {_toml_list(info.include_dirs)}",
        f"lib_dirs = {_toml_list(info.lib_dirs)}",
        f"sysconfigdata_name = {_toml_str(info.sysconfigdata_name)}",
        f"sysconfigdata_dir = {_toml_str(info.sysconfigdata_dir)}",
        f"pythonpath_dir = {_toml_str(info.pythonpath_dir)}",
        f"ext_suffix = {_toml_str(info.ext_suffix)}",
        f"soabi = {_toml_str(info.soabi)}",
        f"mirror_id = {_toml_str(info.mirror_id)}",
        f"extra_packages = {_toml_list(info.extra_packages)}",
        f"skipped = {_toml_list(info.skipped)}",
        "",
        "[packages]",
        *(f"{_toml_str(name)} = {_toml_str(v)}" for name, v in sorted(info.packages.items())),
        "",
    ]
    return "\n".join(lines)


def _build_time_vars(path: Path) -> dict[str, Any]:
    """``build_time_vars`` of a sysconfigdata module, read without executing it."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError) as e:
        raise SysrootError(f"{path} cannot be read ({e})") from e
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "build_time_vars" for t in node.targets
        ):
            try:
                value = ast.literal_eval(node.value)
            except ValueError as e:
                raise SysrootError(f"{path}: build_time_vars is not a literal ({e})") from e
            if isinstance(value, dict):
                return value
    raise SysrootError(f"{path} has no build_time_vars")


def _describe(
    root: Path,
    *,
    arch: Arch,
    suite: str,
    python: str,
    packages: dict[str, str],
    skipped: Sequence[str],
    mirror_id: str,
    extra: Sequence[str],
) -> SysrootInfo:
    """Find the paths in a freshly unpacked tree (and copy the sysconfigdata module)."""
    stdlib = f"usr/lib/python{python}"
    name = f"_sysconfigdata__linux_{arch.triplet}"
    module = root / stdlib / f"{name}.py"
    if not module.exists():
        found = sorted(p.stem for p in (root / stdlib).glob("_sysconfigdata_*.py"))
        raise SysrootError(
            f"the sysroot has no {stdlib}/{name}.py (found: {', '.join(found) or 'none'});"
            f" is libpython{python}-stdlib for {arch.debian} complete?"
        )
    variables = _build_time_vars(module)
    interpreter = f"usr/bin/python{python}"
    if not (root / interpreter).exists():
        raise SysrootError(f"the sysroot has no {interpreter}; python{python}-minimal is damaged")
    pythonpath = root / PYTHONPATH_DIR
    pythonpath.mkdir(exist_ok=True)
    shutil.copyfile(module, pythonpath / f"{name}.py")
    return SysrootInfo(
        root=root,
        arch=arch.debian,
        suite=suite,
        python=python,
        triplet=arch.triplet,
        machine=arch.machine,
        host_platform=f"linux-{arch.machine}",
        interpreter=interpreter,
        include_dirs=(f"usr/include/python{python}", f"usr/include/{arch.triplet}", "usr/include"),
        lib_dirs=(f"usr/lib/{arch.triplet}",),
        sysconfigdata_name=name,
        sysconfigdata_dir=stdlib,
        pythonpath_dir=PYTHONPATH_DIR,
        ext_suffix=str(variables.get("EXT_SUFFIX", "")),
        soabi=str(variables.get("SOABI", "")),
        packages=dict(packages),
        skipped=tuple(skipped),
        mirror_id=mirror_id,
        extra_packages=tuple(extra),
    )


# --------------------------------------------------------------------------- making


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verify(data: bytes, sha256: str, size: int | None, what: str) -> None:
    if size is not None and len(data) != size:
        raise HashMismatchError(
            f"{what}: expected {size} bytes, got {len(data)}; the mirror is inconsistent"
            " (mid-sync?) -- try again later or another mirror"
        )
    if _sha256(data) != sha256:
        raise HashMismatchError(
            f"{what}: sha256 {_sha256(data)} does not match {sha256} from the signed index;"
            " try again later or another mirror"
        )


def _atomic_write(path: Path, data: bytes) -> None:
    write_bytes(path, data)


class _Fetcher:
    """Downloads from the mirror with :class:`~monorepo.http.HttpClient` (retries, file://)."""

    def __init__(self, mirror: str, reporter: Reporter) -> None:
        from monorepo.index.http import HttpClient

        self.mirror = mirror
        self.client = HttpClient(reporter=reporter)

    def get(self, rel: str, *, not_found_ok: bool = False) -> bytes | None:
        url = f"{self.mirror}/{rel}"
        try:
            response = self.client.get(url, not_found_ok=not_found_ok)
        except IndexClientError as e:
            raise SysrootError(f"cannot download {rel} from the Debian mirror: {e}") from e
        if response.status == 404:
            return None
        return response.body

    def stream(self, rel: str) -> bytes:
        try:
            return b"".join(self.client.stream(f"{self.mirror}/{rel}", chunk_size=_CHUNK))
        except IndexClientError as e:
            raise SysrootError(f"cannot download {rel} from the Debian mirror: {e}") from e

    def close(self) -> None:
        self.client.close()


def _check_signature(inrelease: bytes, keyring: Path | None, reporter: Reporter) -> None:
    gpgv = shutil.which("gpgv")
    if keyring is None or gpgv is None or not keyring.exists():
        reporter.message(
            "warning",
            "the Release file's signature is not checked (gpgv or the Debian archive"
            " keyring is missing); only its SHA256 list protects the download",
        )
        return
    with tempfile.NamedTemporaryFile(suffix=".InRelease") as tmp:
        tmp.write(inrelease)
        tmp.flush()
        result = subprocess.run(
            [gpgv, "--keyring", str(keyring), tmp.name],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise SysrootError(
            f"the mirror's InRelease signature does not verify against {keyring}:"
            f" {result.stderr.strip()[-400:]}; use a genuine Debian mirror, or pass"
            " --keyring for a mirror signed with another key"
        )
    reporter.message("debug", f"InRelease signature verified with {keyring}")


def _load_index(
    fetch: _Fetcher, suite: str, arch: str, cache: Path, keyring: Path | None, reporter: Reporter
) -> dict[str, DebPackage]:
    reporter.message("info", f"reading the {suite} release file")
    inrelease = fetch.get(f"dists/{suite}/InRelease", not_found_ok=True)
    if inrelease is not None:
        _check_signature(inrelease, keyring, reporter)
        text = inrelease
    else:
        plain = fetch.get(f"dists/{suite}/Release", not_found_ok=True)
        if plain is None:
            raise SysrootError(
                f"the mirror has no dists/{suite}/InRelease or Release: is '{suite}' a Debian"
                " suite this mirror carries, and is the mirror URL the directory holding"
                " dists/?"
            )
        reporter.message("warning", f"dists/{suite} has no InRelease; its signature is not checked")
        text = plain
    release = parse_release(text.decode("utf-8", "replace"))
    if suite not in (release.suite, release.codename):
        raise SysrootError(
            f"dists/{suite}/Release describes suite '{release.suite}' ({release.codename});"
            " the mirror is misconfigured"
        )
    for suffix in (".xz", ".gz", ""):
        rel = f"main/binary-{arch}/Packages{suffix}"
        if rel not in release.sha256:
            continue
        sha256, size = release.sha256[rel]
        cached = cache / "indices" / f"{sha256}-Packages{suffix}"
        if cached.exists():
            blob = cached.read_bytes()
        else:
            reporter.message("info", f"downloading {rel}")
            got = fetch.get(f"dists/{suite}/{rel}", not_found_ok=True)
            if got is None:
                continue
            _verify(got, sha256, size, f"dists/{suite}/{rel}")
            _atomic_write(cached, got)
            blob = got
        raw = _decompress(f"Packages{suffix}", blob, rel)
        return parse_packages(raw.decode("utf-8", "replace"))
    raise SysrootError(
        f"dists/{suite}/Release lists no main/binary-{arch}/Packages index: does the suite"
        f" carry architecture '{arch}'?"
    )


def _download_debs(
    fetch: _Fetcher, packages: Sequence[DebPackage], cache: Path, reporter: Reporter, jobs: int
) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    todo: list[DebPackage] = []
    for package in packages:
        if not package.filename or not re.fullmatch(r"[0-9a-f]{64}", package.sha256):
            raise SysrootError(f"{package.name}: the Packages index gives no Filename or SHA256")
        path = cache / "debs" / f"{package.sha256}-{posixpath.basename(package.filename)}"
        paths[package.name] = path
        if not path.exists():
            todo.append(package)
    reporter.message(
        "info", f"downloading {len(todo)} packages ({len(packages) - len(todo)} cached)"
    )
    reporter.task("debs", "Downloading .debs", total=len(todo))

    def one(package: DebPackage) -> None:
        data = fetch.stream(package.filename)
        _verify(data, package.sha256, package.size or None, package.filename)
        _atomic_write(paths[package.name], data)
        reporter.advance("debs")

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for future in [pool.submit(one, p) for p in todo]:
            future.result()
    reporter.done("debs")
    return paths


def _mirror_id(mirror: str) -> str:
    """A digest of the mirror URL: the toml records which mirror without naming it."""
    return _sha256(mirror.encode())[:16]


def _matches(info: SysrootInfo, arch: str, suite: str, python: str, extra: Sequence[str]) -> bool:
    return (
        info.arch == arch
        and info.suite == suite
        and info.python == python
        and sorted(info.extra_packages) == sorted(extra)
        and info.interpreter_path.exists()
    )


def make_sysroot(
    dest: Path,
    *,
    arch: str = "arm64",
    suite: str = "bookworm",
    mirror: str | None = None,
    python: str = "3.11",
    extra_packages: Sequence[str] = (),
    reporter: Reporter | None = None,
    refresh: bool = False,
    keyring: Path | None = DEFAULT_KEYRING,
    jobs: int = 8,
) -> SysrootInfo:
    """Make (or keep) a Debian sysroot for CPython *python* on *arch* at *dest*.

    A sysroot already at *dest* for the same arch, suite, python and extra packages is
    returned as is without network access, unless *refresh*: then the mirror is read
    again and the tree rebuilt only if a package version changed.  *dest* may be
    absent, empty, or an earlier sysroot; anything else is refused.  Raises
    :class:`SysrootError` (and :class:`~monorepo.errors.HashMismatchError` for a
    download that does not match the signed index).
    """
    from filelock import FileLock

    reporter = reporter or NullReporter()
    if arch not in ARCHES:
        raise SysrootError(
            f"architecture '{arch}' is not supported; choose one of {', '.join(ARCHES)}"
        )
    if not re.fullmatch(r"3\.[0-9]+", python):
        raise SysrootError(f"python '{python}' must be a major.minor version such as 3.11")
    dest = dest.absolute()
    extra = sorted(set(extra_packages))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.parent / f".{dest.name}.lock")):
        existing: SysrootInfo | None = None
        if (dest / TOML_NAME).exists():
            existing = read_sysroot(dest)
            if not refresh and _matches(existing, arch, suite, python, extra):
                reporter.message(
                    "info", f"{dest} is up to date ({len(existing.packages)} packages)"
                )
                return existing
        elif dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise SysrootError(
                f"{dest} exists and is not a sysroot (no {TOML_NAME}); choose an empty or new"
                " directory, or remove it"
            )
        url = (mirror or debian_mirror(suite)).rstrip("/")
        cache = _cache_dir()
        fetch = _Fetcher(url, reporter)
        try:
            index = _load_index(fetch, suite, arch, cache, keyring, reporter)
            closure = resolve_closure(
                index,
                [*root_packages(python), *extra],
                optional_roots=[n for n in OPTIONAL_ROOTS if n not in extra],
            )
            absent = [n for n in OPTIONAL_ROOTS if n not in index]
            if absent:
                reporter.message("warning", f"{suite}/{arch} has no {', '.join(absent)}; left out")
            for group in closure.missing:
                reporter.message("debug", f"no package satisfies '{group}'; left out")
            versions = {p.name: p.version for p in closure.packages}
            reporter.message(
                "info",
                f"{len(closure.packages)} packages for python{python} on {arch}"
                f" ({len(closure.skipped)} tools left out: {', '.join(closure.skipped)})",
            )
            if (
                existing is not None
                and _matches(existing, arch, suite, python, extra)
                and existing.packages == versions
            ):
                reporter.message("info", f"{dest} is up to date")
                return existing
            debs = _download_debs(fetch, closure.packages, cache, reporter, jobs)
        finally:
            fetch.close()
        return _assemble(
            dest,
            closure,
            debs,
            arch=ARCHES[arch],
            suite=suite,
            python=python,
            mirror_id=_mirror_id(url),
            extra=extra,
            reporter=reporter,
        )


def _cache_dir() -> Path:
    from monorepo._core.paths import cache_root

    return cache_root() / "debian"


def _assemble(
    dest: Path,
    closure: Closure,
    debs: Mapping[str, Path],
    *,
    arch: Arch,
    suite: str,
    python: str,
    mirror_id: str,
    extra: Sequence[str],
    reporter: Reporter,
) -> SysrootInfo:
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
    except OSError as e:
        raise SysrootError(f"cannot create a staging directory beside {dest}: {e}") from e
    try:
        os.chmod(staging, 0o755)
        writer = _Writer(staging)
        reporter.task("unpack", "Unpacking", total=len(closure.packages))
        for package in closure.packages:
            try:
                deb = debs[package.name].read_bytes()
            except OSError as e:
                raise SysrootError(f"{package.name}: cannot read the cached .deb ({e})") from e
            unpack_deb(deb, staging, package=package.name, writer=writer)
            reporter.advance("unpack")
        reporter.done("unpack")
        fixed = _fix_ld_scripts(staging, (f"usr/lib/{arch.triplet}", "usr/lib"))
        reporter.message("debug", f"linker scripts made relative: {', '.join(fixed)}")
        for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            if (staging / "usr" / top).is_dir() and not os.path.lexists(staging / top):
                os.symlink(f"usr/{top}", staging / top)
        info = _describe(
            staging,
            arch=arch,
            suite=suite,
            python=python,
            packages={p.name: p.version for p in closure.packages},
            skipped=closure.skipped,
            mirror_id=mirror_id,
            extra=extra,
        )
        (staging / TOML_NAME).write_text(_render(info), encoding="utf-8")
        _replace(staging, dest)
    except OSError as e:
        remove_tree(staging, ignore_errors=True)
        raise SysrootError(f"cannot write the sysroot at {dest}: {e}") from e
    except BaseException:
        remove_tree(staging, ignore_errors=True)
        raise
    reporter.message("info", f"sysroot ready at {dest}")
    return read_sysroot(dest)


def _replace(staging: Path, dest: Path) -> None:
    """Put *staging* at *dest*, removing an older sysroot there only once it is aside."""
    if os.path.lexists(dest):
        trash = Path(tempfile.mkdtemp(prefix=f".old-{dest.name}-", dir=dest.parent))
        os.rename(dest, trash / "old")
        os.rename(staging, dest)
        remove_tree(trash, ignore_errors=True)
    else:
        os.rename(staging, dest)


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m monorepo.sysroot DEST ...``: progress on stderr, exit 2 on errors."""
    from monorepo.cli.commands import CliReporter

    parser = argparse.ArgumentParser(
        prog="python -m monorepo.sysroot",
        description="Make a Debian sysroot for cross-building CPython extensions.",
    )
    parser.add_argument("dest", type=Path, metavar="DEST", help="the sysroot directory")
    parser.add_argument("--arch", default="arm64", help="Debian architecture (default: arm64)")
    parser.add_argument("--suite", default="bookworm", help="Debian suite (default: bookworm)")
    parser.add_argument(
        "--mirror",
        default=None,
        metavar="URL",
        help="Debian mirror (default: $MONOREPO_DEBIAN_MIRROR, else apt's sources)",
    )
    parser.add_argument("--python", default="3.11", help="CPython major.minor (default: 3.11)")
    parser.add_argument(
        "--package",
        action="append",
        default=[],
        metavar="NAME",
        help="another Debian package to add, with its dependencies (repeatable)",
    )
    parser.add_argument(
        "--refresh", action="store_true", help="re-read the mirror even if DEST is up to date"
    )
    parser.add_argument(
        "--keyring",
        type=Path,
        default=DEFAULT_KEYRING,
        help=f"OpenPGP keyring for gpgv (default: {DEFAULT_KEYRING})",
    )
    parser.add_argument("-j", "--jobs", type=int, default=8, help="parallel downloads")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    reporter = CliReporter(verbose=args.verbose, quiet=args.quiet)
    try:
        info = make_sysroot(
            args.dest,
            arch=args.arch,
            suite=args.suite,
            mirror=args.mirror,
            python=args.python,
            extra_packages=args.package,
            reporter=reporter,
            refresh=args.refresh,
            keyring=args.keyring,
            jobs=args.jobs,
        )
    except MonorepoError as e:
        reporter.close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        reporter.close()
        return 130
    reporter.close()
    if not args.quiet:
        print(f"{info.root}: python{info.python} for {info.triplet}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
