"""The Debian archive's side: the mirror, its signed release file, the package index, a closure."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from monorepo.sysroot.info import SysrootError

_APT_DIR = Path("/etc/apt")


_SCHEMES = ("http://", "https://", "file://")


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
