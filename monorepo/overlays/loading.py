"""Loading overlays: directories and git repositories, the default one, and those a lock pins.

The only I/O of the overlay subsystem: reading an overlay directory and, for git
overlays, fetching into the cache and exporting one commit's tree (exports are keyed
by commit id and never modified afterwards, so what was locked is what is read).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from packaging.utils import InvalidName, NormalizedName, canonicalize_name

from monorepo._core import fstree
from monorepo._core.paths import CacheDir
from monorepo.errors import LockFileError, OverlayError, PullError
from monorepo.overlays.rules import (
    COMMIT_ID,
    FORMAT,
    Overlay,
    OverlaySet,
    Rule,
    only_keys,
    parse_rules,
)
from monorepo.sources.patches import Patch

if TYPE_CHECKING:
    from monorepo.project.config import ProjectConfig
    from monorepo.project.lockfile import LockDocument, LockedPackage


_OVERLAY_FILE = "overlay.toml"
_PACKAGES_DIR = "packages"


def default_overlay_dir() -> Path:
    """The default overlay shipped with monorepo.

    A wheel carries it inside the package (``monorepo/_default_overlay``, mapped from
    the checkout's ``overlays/`` at build time); a source checkout or an editable
    install reads ``overlays/`` beside the package.  Both are the same files, so a
    lock does not depend on how monorepo was installed.
    """
    package = Path(__file__).resolve().parents[1]
    shipped = package / "_default_overlay"
    return shipped if shipped.is_dir() else package.parent / "overlays"


# ---------------------------------------------------------------------------
# Loading


def load_overlays(
    specs: Sequence[str],
    *,
    base: Path,
    cache: CacheDir,
    offline: bool = False,
    pinned: Mapping[str, str] | None = None,
) -> OverlaySet:
    """Load every overlay of *specs* in order; *pinned* maps a spec to its locked commit."""
    pins = pinned or {}
    return OverlaySet(
        [
            load_overlay(
                spec, base=base, cache=cache, offline=offline, pinned_commit=pins.get(spec)
            )
            for spec in specs
        ]
    )


def load_overlay(
    spec: str,
    *,
    base: Path,
    cache: CacheDir,
    offline: bool = False,
    pinned_commit: str | None = None,
) -> Overlay:
    """Load one overlay: a directory (relative to *base*) or ``git+<url>@<rev>``.

    For git, *pinned_commit* (from an existing lock) is used instead of resolving
    *rev* again, so a branch that moved on does not change a locked project;
    *offline* uses the cached clone only (mirrors and exports live in *cache*).  *pinned_commit* is ignored for a
    directory, whose fingerprint is a content hash (:func:`directory_fingerprint`).
    """
    if spec.startswith("git+"):
        return _load_git_overlay(
            spec, base=base, cache=cache, offline=offline, pinned_commit=pinned_commit
        )
    root = (Path(base) / spec).resolve()
    if not root.is_dir():
        raise OverlayError(
            f"Overlay {spec!r} is not a directory (looked for {root}). Create it, fix the path "
            "in [tool.monorepo] overlays (relative to the project directory), or write a git "
            "overlay as git+<url>@<branch|tag|commit>."
        )
    return read_overlay(root, spec=spec, commit=None, fingerprint=directory_fingerprint(root))


def directory_fingerprint(root: Path) -> str:
    """``sha256:<hex>`` over every file of a directory overlay.

    For each regular file below *root* (``.git`` directories skipped), in order
    of the UTF-8 bytes of its relative POSIX path, the hash is fed the path, a NUL,
    the file size in decimal, a NUL, and the file's bytes.  Any added, removed,
    renamed or edited file changes it; modification times and permissions do not.
    """
    entries: list[tuple[bytes, Path]] = []
    for dirpath, dirnames, filenames in fstree.walk(root):  # os.walk recurses per level
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for filename in filenames:
            path = Path(dirpath, filename)
            if path.is_file():
                rel = path.relative_to(root).as_posix().encode("utf-8", "surrogateescape")
                entries.append((rel, path))
    digest = hashlib.sha256()
    for rel, path in sorted(entries):
        data = path.read_bytes()
        digest.update(rel + b"\0" + str(len(data)).encode() + b"\0")
        digest.update(data)
    return "sha256:" + digest.hexdigest()


def read_overlay(root: Path, *, spec: str, commit: str | None, fingerprint: str) -> Overlay:
    """Parse the overlay laid out under *root* (already local, already fingerprinted)."""
    label = _Label(root, spec, commit)
    top = _load_toml(root / _OVERLAY_FILE, label, _OVERLAY_FILE)
    where = label.file(_OVERLAY_FILE)
    only_keys(top, {"overlay"}, where, "")
    meta = top.get("overlay")
    if not isinstance(meta, dict):
        raise OverlayError(
            f'{where} has no [overlay] table. Start it with [overlay] name = "...", '
            f"format = {FORMAT}."
        )
    only_keys(meta, {"name", "format", "description"}, where, "overlay.")
    name = meta.get("name")
    if not isinstance(name, str) or not name.strip():
        raise OverlayError(
            f"{where}: key overlay.name is missing or not a non-empty string. Give the overlay "
            "a name; the lock records it."
        )
    fmt = meta.get("format")
    if isinstance(fmt, bool) or fmt != FORMAT:
        raise OverlayError(
            f"{where}: key overlay.format is {fmt!r}; this version of monorepo reads format "
            f"{FORMAT}. Set format = {FORMAT} or upgrade monorepo."
        )
    description = meta.get("description", "")
    if not isinstance(description, str):
        raise OverlayError(f"{where}: key overlay.description must be a string.")

    rules: dict[NormalizedName, tuple[Rule, ...]] = {}
    packages = root / _PACKAGES_DIR
    if packages.is_dir():
        for entry in sorted(packages.iterdir(), key=lambda p: p.name):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            package = _package_name(entry.name, label)
            rel = f"{_PACKAGES_DIR}/{entry.name}/{_OVERLAY_FILE}"
            data = _load_toml(entry / _OVERLAY_FILE, label, rel)
            rules[package] = parse_rules(
                data, package=package, where=label.file(rel), package_dir=entry, root=root
            )
    return Overlay(
        name=name.strip(),
        spec=spec,
        root=root,
        commit=commit,
        fingerprint=fingerprint,
        rules=rules,
        description=description,
    )


class _Label:
    """Names files of an overlay in messages: a path for directories, spec + commit for git."""

    def __init__(self, root: Path, spec: str, commit: str | None) -> None:
        self.root, self.spec, self.commit = root, spec, commit

    def file(self, rel: str) -> str:
        if self.commit is None:
            return str(self.root / rel)
        return f"{rel} in overlay {self.spec} (commit {self.commit[:12]})"


def _load_toml(path: Path, label: _Label, rel: str) -> dict[str, Any]:
    where = label.file(rel)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise OverlayError(
            f"{where} is missing. Every overlay has a top-level overlay.toml and every "
            "packages/<name>/ directory an overlay.toml with its [[rule]] tables."
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise OverlayError(f"{where} is not valid TOML: {exc}.") from exc


def _package_name(dirname: str, label: _Label) -> NormalizedName:
    try:
        name = canonicalize_name(dirname, validate=True)
    except InvalidName as exc:
        raise OverlayError(
            f"{label.file(_PACKAGES_DIR + '/' + dirname)} is not named after a package."
        ) from exc
    if name != dirname:
        raise OverlayError(
            f"{label.file(_PACKAGES_DIR + '/' + dirname)}: package directories use the "
            f"normalized name; rename it to {_PACKAGES_DIR}/{name}."
        )
    return name


# ---------------------------------------------------------------------------
# Git overlays (the only network I/O of this module)


def _split_git_spec(spec: str, base: Path) -> tuple[str, str]:
    """``git+<url>@<rev>`` into (url, rev); a local path URL is made absolute."""
    body = spec[len("git+") :]
    url, sep, rev = body.rpartition("@")
    if not sep or not url or not rev or "/" in rev:
        raise OverlayError(
            f"Overlay {spec!r} names no revision. Write git+<url>@<branch|tag|commit>, e.g. "
            "git+https://git.example/overlays.git@main; the lock pins the commit."
        )
    if "://" not in url and not re.match(r"^[\w.-]+@[\w.-]+:", url):
        url = str((Path(base) / url).resolve())
    return url, rev


def _load_git_overlay(
    spec: str, *, base: Path, cache: CacheDir, offline: bool, pinned_commit: str | None
) -> Overlay:
    """A git overlay through :mod:`monorepo.sources.git` (the mirror git sources use too),
    exported per commit under ``<cache>/overlays/<sha256 of the URL>/<commit>``."""
    from monorepo.sources import git  # libgit2 is loaded only by runs that need it

    url, rev = _split_git_spec(spec, base)
    if pinned_commit is not None and not COMMIT_ID.fullmatch(pinned_commit.lower()):
        raise OverlayError(
            f"The lock pins overlay {spec} to {pinned_commit!r}, which is not a commit id. "
            "Run `monorepo lock` again to re-pin it."
        )
    home = cache.overlays / hashlib.sha256(url.encode()).hexdigest()
    commit = pinned_commit.lower() if pinned_commit is not None else None
    if commit is None or not (home / commit).is_dir():
        if offline and not git.mirror_exists(url, cache=cache):
            raise OverlayError(
                f"Overlay {spec} has never been fetched and --offline forbids fetching it. "
                "Run the command once without --offline."
            )
        try:
            repo = git.open_mirror(
                url, cache=cache, offline=offline, need=None if offline else commit
            )
        except git.GitError as exc:
            raise OverlayError(
                f"Overlay {spec} could not be fetched: {exc} Check the URL and your network, "
                "or use --offline with a lock that pins it."
            ) from None
        if commit is None:
            try:
                commit = git.resolve_rev(repo, rev, url=url)
            except git.GitError:
                raise OverlayError(
                    f"Overlay {spec}: revision {rev!r} is neither a branch, a tag nor a commit of "
                    "the repository. Use an existing branch or tag name, or a full 40-hex commit id."
                ) from None
        elif not git.has_commit(repo, commit):
            if offline:
                raise OverlayError(
                    f"Overlay {spec}: the locked commit {commit} is not in the cached clone and "
                    "--offline forbids fetching. Run once without --offline."
                )
            raise OverlayError(
                f"Overlay {spec}: the locked commit {commit} is not in {url} any more (history "
                "rewritten?). Run `monorepo lock --upgrade` to re-pin the overlay."
            )
        link = git.tree_links(repo, commit)
        if link is not None:
            raise OverlayError(
                f"Overlay {spec} contains {link}, a symlink or submodule. Overlays hold only "
                "regular files; replace it with the file it points to."
            )
        home.mkdir(parents=True, exist_ok=True)
    root = git.export_commit(url, commit, cache=cache, offline=offline, dest=home / commit)
    return read_overlay(root, spec=spec, commit=commit, fingerprint=commit)


DEFAULT_SPEC = "monorepo-default"


def load_project_overlays(
    specs: Sequence[str],
    *,
    base: Path,
    cache: CacheDir,
    offline: bool = False,
    pinned: Mapping[str, str] | None = None,
    include_default: bool = True,
) -> OverlaySet:
    """The overlays of a project: its own, in order, then the default one shipped with us.

    The default overlay comes last so that any project overlay can override (or,
    with an empty rule file, switch off) its fixes.  Its spec is the fixed string
    ``monorepo-default`` rather than a path, so a lock does not record where
    monorepo happens to be installed; its fingerprint still follows its content.
    """
    loaded = load_overlays(specs, base=base, cache=cache, offline=offline, pinned=pinned)
    overlays = list(loaded.overlays)
    root = default_overlay_dir()
    if include_default and (root / _OVERLAY_FILE).is_file() and DEFAULT_SPEC not in specs:
        overlays.append(
            read_overlay(
                root, spec=DEFAULT_SPEC, commit=None, fingerprint=directory_fingerprint(root)
            )
        )
    return OverlaySet(overlays)


def project_overlays(
    config: ProjectConfig,
    existing: LockDocument | None,
    *,
    upgrade: bool,
    cache: CacheDir,
    offline: bool = False,
) -> OverlaySet:
    """The project's overlays, git ones at the commits the lock pinned (unless upgrading)."""
    pinned: dict[str, str] = {}
    if existing is not None and not upgrade:
        for o in existing.inputs.get("overlays", []):
            if str(o.get("spec", "")).startswith("git+"):
                pinned[o["spec"]] = o["fingerprint"]
    return load_project_overlays(
        config.overlays, base=config.root, cache=cache, offline=offline, pinned=pinned
    )


# --------------------------------------------------------------------------- locked


def locked_patches(
    packages: Sequence[LockedPackage],
    lock: LockDocument,
    *,
    base: Path,
    cache: CacheDir,
    offline: bool,
) -> dict[str, tuple[Patch, ...]]:
    """Each package's overlay patches (by dir), read from the overlays the lock pins.

    What pull applies and verify rebuilds with: every patch the lock records, from the
    overlay (and, for git, the commit) it names, checked against its recorded sha256.
    """
    wanted = [p for p in packages if p.tool.get("patches")]
    if not wanted:
        return {}
    listed = lock.inputs.get("overlays", [])
    by_name: dict[str, Mapping[str, Any]] = {
        str(o.get("name")): o for o in listed if isinstance(o, Mapping)
    }
    needed: dict[str, Mapping[str, Any]] = {}
    for pkg in wanted:
        meta = pkg.tool.get("overlay")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if not isinstance(name, str) or name not in by_name:
            raise LockFileError(
                f"pylock.toml: {pkg.name} {pkg.version} has patches but names no overlay of"
                " [tool.monorepo.inputs] overlays; run `monorepo lock` to regenerate the lock"
            )
        needed[name] = by_name[name]
    specs = [str(needed[n]["spec"]) for n in sorted(needed)]
    pinned = {
        str(o["spec"]): str(o["fingerprint"])
        for o in needed.values()
        if str(o["spec"]).startswith("git+") and o.get("fingerprint")
    }
    loaded = load_overlays(specs, base=base, cache=cache, offline=offline, pinned=pinned)
    overlays: dict[str, Overlay] = {o.spec: o for o in loaded.overlays}
    out: dict[str, tuple[Patch, ...]] = {}
    for pkg in wanted:
        meta = pkg.tool["overlay"]
        overlay = overlays[str(needed[meta["name"]]["spec"])]
        out[pkg.dir] = tuple(
            _locked_patch(pkg, overlay, entry) for entry in pkg.tool.get("patches", ())
        )
    return out


def _locked_patch(pkg: LockedPackage, overlay: Overlay, entry: Mapping[str, Any]) -> Patch:
    path, sha256 = str(entry.get("path", "")), str(entry.get("sha256", "")).lower()
    text: bytes | None = None
    for rule in overlay.rules.get(pkg.name, ()):
        for patch in rule.patches:
            if patch.path == path:
                text = patch.text
    if text is None:
        rel = PurePosixPath(path)
        if not path or rel.is_absolute() or ".." in rel.parts:
            raise LockFileError(
                f"pylock.toml: {pkg.name} {pkg.version}: patch path {path!r} is not inside the"
                f" overlay {overlay.name!r}; run `monorepo lock` to regenerate the lock"
            )
        try:
            text = overlay.root.joinpath(*rel.parts).read_bytes()
        except OSError:
            raise PullError(
                f"{pkg.name} {pkg.version}: patch {path} is missing from overlay"
                f" {overlay.name!r} ({overlay.spec}): the overlay changed since the lock was"
                " written; run `monorepo lock`"
            ) from None
    actual = hashlib.sha256(text).hexdigest()
    if actual != sha256:
        raise PullError(
            f"{pkg.name} {pkg.version}: patch {path} of overlay {overlay.name!r} has sha256"
            f" {actual} but the lock records {sha256}: the overlay changed since the lock was"
            " written; run `monorepo lock`"
        )
    return Patch(path=path, sha256=actual, text=text)
