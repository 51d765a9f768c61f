"""Rust crates: an sdist's ``Cargo.lock`` read, locked, fetched and vendored for cargo.

A Rust extension's sdist (setuptools-rust, maturin) ships its ``Cargo.lock`` but none
of the crates it names, so cargo would download them during the build.  Instead the
sources pass of ``lock`` reads every ``Cargo.lock`` the package's build uses
(:func:`cargo_lock_paths`), records each registry crate with the checksum the
``Cargo.lock`` gives (:func:`parse_cargo_lock`), and ``pull`` vendors them into
``duni/.crates/<name>-<version>/`` (:func:`materialize_crate`): the ``.crate`` file,
downloaded once into the content store and checked against that checksum, extracted
by the one extractor, plus the ``.cargo-checksum.json`` cargo's directory sources
require.  The build then points cargo at that directory, offline.

Where crates are downloaded from is configuration, never a host name in this code:
``[tool.monorepo] crate-index`` or ``MONOREPO_CRATE_INDEX``, else the crates-io source
replacement of the user's cargo configuration (:func:`configured_crate_index`).  The
value follows cargo's registry conventions: ``sparse+URL`` names a sparse registry,
whose ``config.json`` gives the download URL (its ``dl`` key), and anything else *is*
such a download URL, with cargo's ``{crate}``, ``{version}``, ``{prefix}``,
``{lowerprefix}`` and ``{sha256-checksum}`` markers, or none (then
``/{crate}/{version}/download`` is appended, as cargo does).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from monorepo._core.paths import url_path
from monorepo.errors import IndexClientError, PullError
from monorepo.extract.archive import extract_sdist
from monorepo.sources.treehash import Entry, TreeHashError, hash_entries, scan_tree

if TYPE_CHECKING:  # the store (and filelock) only load when crates are pulled
    from monorepo.sources.store import ContentStore

__all__ = [
    "CHECKSUM_FILE",
    "CRATES_DIR",
    "CRATE_INDEX_ENV",
    "Crate",
    "CrateError",
    "cargo_lock_paths",
    "configured_crate_index",
    "crate_url",
    "crates_from_tool",
    "download_template",
    "materialize_crate",
    "parse_cargo_lock",
]

CRATES_DIR = ".crates"
"""Under duni/: one directory per vendored crate, shared by every package that uses it."""

CHECKSUM_FILE = ".cargo-checksum.json"
"""What cargo's directory source reads in each crate directory (files and package sha256)."""

CRATE_INDEX_ENV = "MONOREPO_CRATE_INDEX"

_MARKERS = ("{crate}", "{version}", "{prefix}", "{lowerprefix}", "{sha256-checksum}")
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_VERSION_RE = re.compile(r"^[0-9A-Za-z.+-]{1,64}$")
_HEX = frozenset("0123456789abcdef")


class CrateError(PullError):
    """A Cargo.lock or crate that cannot be locked or vendored (a typed pull/lock error)."""


@dataclass(frozen=True, order=True)
class Crate:
    """One registry crate of a ``Cargo.lock``; ``url`` and ``tree_hash`` once locked."""

    name: str
    version: str
    source: str
    checksum: str
    url: str = ""
    tree_hash: str = ""

    @property
    def dir(self) -> str:
        """Its directory under ``duni/.crates`` (cargo reads any name; this one is unique)."""
        return f"{self.name}-{self.version}"

    @property
    def label(self) -> str:
        return f"crate {self.name} {self.version}"

    def to_tool(self) -> dict[str, str]:
        """The lock's inline table, keys in a fixed order."""
        out = {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "checksum": self.checksum,
            "url": self.url,
        }
        if self.tree_hash:
            out["tree-hash"] = self.tree_hash
        return out


def crates_from_tool(tool: Mapping[str, Any], *, what: str) -> tuple[Crate, ...]:
    """The crates a lock entry's ``[packages.tool.monorepo]`` records (validated)."""
    raw = tool.get("crates", ())
    if not isinstance(raw, list | tuple):
        raise CrateError(f"pylock.toml: {what}: 'crates' is not an array; run `monorepo lock`")
    out = []
    for item in raw:
        try:
            crate = Crate(
                name=str(item["name"]),
                version=str(item["version"]),
                source=str(item["source"]),
                checksum=str(item["checksum"]),
                url=str(item["url"]),
                tree_hash=str(item.get("tree-hash", "")),
            )
        except (KeyError, TypeError):
            raise CrateError(
                f"pylock.toml: {what}: a crate entry {item!r} lacks name, version, source,"
                " checksum or url; run `monorepo lock` to regenerate it"
            ) from None
        _check_crate(crate, f"pylock.toml: {what}")
        out.append(crate)
    return tuple(out)


def _check_crate(crate: Crate, where: str) -> None:
    """A crate's name and version become a directory name, its checksum a store key."""
    if not _NAME_RE.match(crate.name) or not _VERSION_RE.match(crate.version):
        raise CrateError(
            f"{where}: crate {crate.name!r} {crate.version!r} is not a valid crate name and"
            " version (it would become a directory name under duni/.crates)"
        )
    if len(crate.checksum) != 64 or not _HEX.issuperset(crate.checksum):
        raise CrateError(
            f"{where}: {crate.label} has checksum {crate.checksum!r}, not a sha256 digest"
        )


# ------------------------------------------------------------------ Cargo.lock


def _inside(tree: Path, rel: str) -> PurePosixPath | None:
    """*rel* as a normalised path inside the tree, or None when it would leave it."""
    parts: list[str] = []
    for part in PurePosixPath(rel.replace("\\", "/")).parts:
        if part in ("", "."):
            continue
        if part == ".." and parts:
            parts.pop()
        elif part == ".." or part.startswith("/"):
            return None
        else:
            parts.append(part)
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _manifest_paths(tree: Path) -> list[str]:
    """The Cargo.toml files the build configuration names (maturin, setuptools-rust)."""
    found: list[str] = []
    try:
        pyproject = tomllib.loads((tree / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        pyproject = {}
    tool = pyproject.get("tool", {}) if isinstance(pyproject.get("tool"), dict) else {}
    maturin = tool.get("maturin", {})
    if isinstance(maturin, dict) and isinstance(maturin.get("manifest-path"), str):
        found.append(maturin["manifest-path"])
    rust = tool.get("setuptools-rust", {})
    if isinstance(rust, dict):
        for key in ("ext-modules", "bins"):
            for item in rust.get(key, ()) if isinstance(rust.get(key), list) else ():
                if isinstance(item, dict):
                    found.append(str(item.get("path", "Cargo.toml")))
    try:
        setup = (tree / "setup.py").read_text(encoding="utf-8", errors="replace")
    except OSError:
        setup = ""
    if "RustExtension" in setup or "RustBin" in setup:
        found += re.findall(r"""["']([^"'\n]*Cargo\.toml)["']""", setup)
    return found


def cargo_lock_paths(tree: Path) -> list[str]:
    """The ``Cargo.lock`` files (relative POSIX paths) cargo will use to build *tree*.

    The root's, and for each ``Cargo.toml`` that maturin's ``manifest-path`` or
    setuptools-rust's ``ext-modules``/``bins`` (pyproject.toml or setup.py) names, the
    nearest ``Cargo.lock`` at or above it: a workspace has one at its root.  Paths
    leaving the tree are ignored.
    """
    found: list[str] = []
    if (tree / "Cargo.lock").is_file():
        found.append("Cargo.lock")
    for manifest in _manifest_paths(tree):
        rel = _inside(tree, manifest)
        if rel is None:
            continue
        here = rel.parent
        while True:
            candidate = here / "Cargo.lock"
            path = tree / candidate
            if path.is_file() and not path.is_symlink():
                found.append(candidate.as_posix())
                break
            if here == PurePosixPath(".") or here == here.parent:
                break
            here = here.parent
    return sorted(set(found))


def parse_cargo_lock(text: str, *, where: str) -> list[Crate]:
    """The registry crates of a ``Cargo.lock`` (any format version), sorted.

    Crates without a ``source`` are the workspace's own (they are in the sdist).  A
    git crate is refused: it has no checksum to lock (vendoring a git checkout is not
    supported yet).  Checksums come from each ``[[package]]`` (formats 2 to 4) or
    from ``[metadata]`` (format 1).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CrateError(f"{where}: not valid TOML ({error})") from None
    packages = data.get("package", [])
    metadata = data.get("metadata", {})
    if not isinstance(packages, list) or not isinstance(metadata, dict):
        raise CrateError(f"{where}: not a Cargo.lock ([[package]] is not an array of tables)")
    crates: dict[tuple[str, str, str], Crate] = {}
    for item in packages:
        if not isinstance(item, dict):
            raise CrateError(f"{where}: a [[package]] entry is not a table")
        name, version, source = item.get("name"), item.get("version"), item.get("source")
        if not isinstance(name, str) or not isinstance(version, str):
            raise CrateError(f"{where}: a [[package]] entry lacks a name or version")
        if source is None:
            continue  # a path or workspace crate: part of the sdist
        if not isinstance(source, str):
            raise CrateError(f"{where}: crate {name} {version} has a malformed source")
        if source.startswith("git+"):
            raise CrateError(
                f"{where}: crate {name} {version} comes from git ({source}); only crates"
                " from a registry can be locked and vendored (they have a checksum). Use an"
                " overlay patch that replaces the git dependency by a registry version."
            )
        if not source.startswith(("registry+", "sparse+")):
            raise CrateError(
                f"{where}: crate {name} {version} has source {source!r}, which is neither a"
                " registry nor git; it cannot be vendored"
            )
        checksum = item.get("checksum")
        if checksum is None:
            checksum = metadata.get(f"checksum {name} {version} ({source})")
        if not isinstance(checksum, str):
            raise CrateError(
                f"{where}: crate {name} {version} ({source}) has no checksum in the Cargo.lock;"
                " regenerate the Cargo.lock with cargo in the source or patch it in an overlay"
            )
        crate = Crate(name, version, source, checksum.lower())
        _check_crate(crate, where)
        crates[(name, version, source)] = crate
    return sorted(crates.values())


# ------------------------------------------------------------------ where crates come from


def _cargo_home() -> Path:
    home = os.environ.get("CARGO_HOME")
    return Path(home) if home else Path.home() / ".cargo"


def _cargo_replacement() -> str | None:
    """The sparse registry the user's cargo configuration replaces the default one with."""
    for name in ("config.toml", "config"):
        try:
            data = tomllib.loads((_cargo_home() / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        sources = data.get("source", {})
        if not isinstance(sources, dict):
            return None
        seen: set[str] = set()
        current = "crates-io"
        while isinstance(sources.get(current), dict) and current not in seen:
            seen.add(current)
            entry = sources[current]
            if current != "crates-io" and isinstance(entry.get("registry"), str):
                registry: str = entry["registry"]
                return registry if registry.startswith("sparse+") else None
            nxt = entry.get("replace-with")
            if not isinstance(nxt, str):
                return None
            current = nxt
        return None
    return None


def configured_crate_index(configured: str | None) -> str | None:
    """The crate registry setting: the project's, else the environment's, else cargo's.

    None when nothing is configured; a lock that needs crates then fails, saying how to
    configure one.
    """
    if configured:
        return configured
    return os.environ.get(CRATE_INDEX_ENV) or _cargo_replacement()


def no_crate_index(what: str, count: int) -> CrateError:
    """The error for crates to lock with no registry configured."""
    return CrateError(
        f"{what} has a Cargo.lock naming {count} crate(s) from a registry, and no crate"
        " registry is configured to download them from. Set `crate-index` in"
        " [tool.monorepo] (or the MONOREPO_CRATE_INDEX environment variable) to a sparse"
        ' registry, `crate-index = "sparse+https://crates.example/index/"` (its config.json'
        " gives the download URL), or to a download URL as in a registry's config.json"
        ' `dl` key, `crate-index = "https://crates.example/api/v1/crates"`; a source'
        " replacement of crates-io by a sparse registry in cargo's config.toml is used too."
    )


def download_template(index: str, get: Callable[[str], bytes]) -> str:
    """The download URL template of *index* (``sparse+URL``: read from its config.json)."""
    if not index.startswith("sparse+"):
        return index
    base = index[len("sparse+") :]
    if not base.endswith("/"):
        base += "/"
    url = urljoin(base, "config.json")
    try:
        data = json.loads(get(url))
        dl = data["dl"]
    except (ValueError, KeyError, TypeError):
        raise CrateError(
            f"the crate registry {index}: {url} is not a registry config.json with a `dl`"
            " download URL; check [tool.monorepo] crate-index"
        ) from None
    except IndexClientError as error:
        raise CrateError(f"the crate registry {index}: cannot read {url}: {error}") from error
    if not isinstance(dl, str) or not dl:
        raise CrateError(f"the crate registry {index}: {url} has no `dl` download URL")
    return dl


def crate_url(template: str, crate: Crate) -> str:
    """Cargo's download URL for *crate* from a registry's ``dl`` *template*."""
    if not any(marker in template for marker in _MARKERS):
        return f"{template.rstrip('/')}/{crate.name}/{crate.version}/download"
    name = crate.name
    if len(name) <= 2:
        prefix = str(len(name))
    elif len(name) == 3:
        prefix = f"3/{name[0]}"
    else:
        prefix = f"{name[:2]}/{name[2:4]}"
    return (
        template.replace("{crate}", name)
        .replace("{version}", crate.version)
        .replace("{prefix}", prefix)
        .replace("{lowerprefix}", prefix.lower())
        .replace("{sha256-checksum}", crate.checksum)
    )


# ------------------------------------------------------------------ vendoring


def fetch_crate(
    crate: Crate,
    *,
    store: ContentStore,
    fetch: Callable[[str], Iterator[bytes] | bytes],
    offline: bool = False,
    package: str = "",
) -> Path:
    """The ``.crate`` file in *store*, downloaded only when missing and checked by checksum."""
    found = store.get(crate.checksum)
    if found is not None:
        return found
    scheme = urlsplit(crate.url).scheme
    used = f" (used by {package})" if package else ""
    if offline and scheme != "file":
        raise CrateError(
            f"{crate.label}{used}: {crate.url} is not in the download cache ({store.root})"
            " and --offline forbids downloading it; run once online"
        )

    def download() -> Iterator[bytes] | bytes:
        if scheme == "file":
            return url_path(urlsplit(crate.url).path).read_bytes()
        return fetch(crate.url)

    try:
        return store.get_or_fetch(
            crate.checksum, download, what=f"{crate.label}{used} ({crate.url})", origin=crate.url
        )
    except (IndexClientError, OSError) as error:
        raise CrateError(
            f"{crate.label}{used}: cannot download {crate.url}: {error}; check the crate"
            " registry ([tool.monorepo] crate-index)"
        ) from error


def checksum_json(entries: Iterable[Entry], package: str) -> str:
    """``.cargo-checksum.json``: every regular file's sha256 and the ``.crate``'s."""
    files = {e.path: e.digest for e in entries if e.kind == "file" and e.path != CHECKSUM_FILE}
    return json.dumps({"files": dict(sorted(files.items())), "package": package}, sort_keys=True)


def materialize_crate(crate: Crate, archive: Path, dest: Path) -> dict[str, Entry]:
    """Extract *archive* (the checked ``.crate``) as *dest* with its ``.cargo-checksum.json``.

    Returns the entries of the finished tree.  *dest* must not exist; the caller stages
    it beside its final name and renames it when complete.
    """
    name = f"{crate.name}-{crate.version}.crate"
    try:
        stamps = extract_sdist(archive, dest, package=crate.label, name=name)
        first = scan_tree(dest, stamps=dict(stamps))
        (dest / CHECKSUM_FILE).write_text(
            checksum_json(first.values(), crate.checksum), encoding="utf-8"
        )
        (dest / CHECKSUM_FILE).chmod(0o644)
        return scan_tree(dest, stamps=dict(stamps))
    except TreeHashError as error:
        raise CrateError(f"{crate.label}: {error}") from error


def crate_tree_hash(entries: Mapping[str, Entry]) -> str:
    return hash_entries(entries)
