"""Overlay repositories: per-package fixes layered over what the index serves.

An overlay (DESIGN.md section 5) is a directory or a git repository holding, per
normalized package name, an ordered list of rules: patches to the sdist, metadata
fixes, a replacement source, build facts.  The lock records which overlay (and
which of its commits) and which rule applied to every package, so a later ``pull``
or ``verify`` reproduces the same tree.

Parsing and rule matching are pure functions of the files' bytes; the only I/O is
reading the overlay directory and, for git overlays, fetching into the cache and
exporting one commit's tree.  Exports are keyed by commit id and never modified
afterwards, so what was locked is what is read, whatever happens to the branch.

Precedence is explicit, unlike opam-monorepo's "picked arbitrarily": overlays are
consulted in configuration order and the *first overlay that has a rule file for
the package owns that package*; inside the file the first rule whose ``versions``
contain the version wins.  A later overlay is never consulted for a package an
earlier one has a file for, so a project overlay can replace, or with an empty rule
file switch off, what the default overlay says about a package.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidName, NormalizedName, canonicalize_name
from packaging.version import Version

from monorepo._core import fstree
from monorepo._core.paths import cache_root
from monorepo.errors import OverlayError
from monorepo.sources.patches import Patch

if TYPE_CHECKING:
    from monorepo.project.config import ProjectConfig
    from monorepo.project.lockfile import LockDocument

__all__ = [
    "FORMAT",
    "GitReplacement",
    "MatchedRule",
    "Overlay",
    "OverlaySet",
    "Patch",
    "Rule",
    "UrlReplacement",
    "default_overlay_dir",
    "directory_fingerprint",
    "load_overlay",
    "load_overlays",
    "parse_rules",
]

FORMAT = 1
"""The overlay format version this code reads (``[overlay] format``)."""

_OVERLAY_FILE = "overlay.toml"
_PACKAGES_DIR = "packages"
_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RULE_KEYS = frozenset(
    {
        "versions",
        "reason",
        "patches",
        "dependencies",
        "build-requires",
        "source",
        "cross-compile",
        "c-extension",
        "system-libraries",
        "build-env",
    }
)


@dataclass(frozen=True)
class GitReplacement:
    """Build the package from this git commit instead of the index's sdist."""

    git: str
    commit: str


@dataclass(frozen=True)
class UrlReplacement:
    """Build the package from this archive (checked by sha256) instead of the sdist."""

    url: str
    sha256: str


@dataclass(frozen=True)
class Rule:
    """One ``[[rule]]`` of a package's overlay file.

    ``None`` for ``build_requires``, ``cross_compile`` and ``c_extension`` means
    "the rule says nothing", which differs from an empty list or ``False``.
    *index* is the rule's 0-based position in its file, recorded in the lock.
    """

    package: NormalizedName
    versions: SpecifierSet
    reason: str
    patches: tuple[Patch, ...] = ()
    add_dependencies: tuple[Requirement, ...] = ()
    remove_dependencies: tuple[NormalizedName, ...] = ()
    build_requires: tuple[Requirement, ...] | None = None
    source: GitReplacement | UrlReplacement | None = None
    cross_compile: bool | None = None
    c_extension: bool | None = None
    system_libraries: dict[str, tuple[str, ...]] = field(default_factory=dict)
    build_env: dict[str, str] = field(default_factory=dict)
    index: int = 0

    def matches(self, version: Version) -> bool:
        """Whether the rule covers *version*; pre-releases count: ">=1.5" covers 1.6rc1."""
        return self.versions.contains(version, prereleases=True)


@dataclass(frozen=True)
class Overlay:
    """A loaded overlay: where it came from, what exactly was read, and its rules."""

    name: str
    spec: str
    root: Path
    commit: str | None
    fingerprint: str
    rules: dict[NormalizedName, tuple[Rule, ...]]
    description: str = ""


@dataclass(frozen=True)
class MatchedRule:
    """The rule that applies to a package version, with the overlay it came from."""

    overlay: Overlay
    rule: Rule


class OverlaySet:
    """Overlays in precedence order (earlier wins), answering "which rule applies"."""

    def __init__(self, overlays: Sequence[Overlay] = ()) -> None:
        names: dict[str, str] = {}
        for overlay in overlays:
            if overlay.name in names:
                raise OverlayError(
                    f"Two overlays are both named {overlay.name!r}: {names[overlay.name]} and "
                    f"{overlay.spec}. The lock names overlays by name, so rename one in its "
                    "top-level overlay.toml ([overlay] name) or drop one from "
                    "[tool.monorepo] overlays."
                )
            names[overlay.name] = overlay.spec
        self.overlays: tuple[Overlay, ...] = tuple(overlays)

    def __repr__(self) -> str:
        return f"OverlaySet({[o.name for o in self.overlays]!r})"

    def rule_for(self, name: str, version: Version) -> MatchedRule | None:
        """The rule for *name* at *version*, or None.

        The first overlay with a rule file for the package decides alone (see the
        module docstring); inside it the first matching rule wins.
        """
        key = canonicalize_name(name)
        for overlay in self.overlays:
            rules = overlay.rules.get(key)
            if rules is None:
                continue
            for rule in rules:
                if rule.matches(version):
                    return MatchedRule(overlay, rule)
            return None
        return None

    def canonical(self) -> list[dict[str, str]]:
        """What the lock records to notice that an overlay changed (staleness input)."""
        return [
            {"name": o.name, "spec": o.spec, "fingerprint": o.fingerprint} for o in self.overlays
        ]


def default_overlay_dir() -> Path:
    """The ``overlays/`` directory shipped next to the ``monorepo`` package.

    This is right for a source checkout and an editable install; shipping it as
    package data for a regular (wheel) install is a packaging decision left to
    the project lead (pyproject.toml).
    """
    return Path(__file__).resolve().parents[2] / "overlays"


# ---------------------------------------------------------------------------
# Loading


def load_overlays(
    specs: Sequence[str],
    *,
    base: Path,
    offline: bool = False,
    pinned: Mapping[str, str] | None = None,
) -> OverlaySet:
    """Load every overlay of *specs* in order; *pinned* maps a spec to its locked commit."""
    pins = pinned or {}
    return OverlaySet(
        [
            load_overlay(spec, base=base, offline=offline, pinned_commit=pins.get(spec))
            for spec in specs
        ]
    )


def load_overlay(
    spec: str,
    *,
    base: Path,
    offline: bool = False,
    pinned_commit: str | None = None,
) -> Overlay:
    """Load one overlay: a directory (relative to *base*) or ``git+<url>@<rev>``.

    For git, *pinned_commit* (from an existing lock) is used instead of resolving
    *rev* again, so a branch that moved on does not change a locked project;
    *offline* uses the cached clone only.  *pinned_commit* is ignored for a
    directory, whose fingerprint is a content hash (:func:`directory_fingerprint`).
    """
    if spec.startswith("git+"):
        return _load_git_overlay(spec, base=base, offline=offline, pinned_commit=pinned_commit)
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
    _only_keys(top, {"overlay"}, where, "")
    meta = top.get("overlay")
    if not isinstance(meta, dict):
        raise OverlayError(
            f'{where} has no [overlay] table. Start it with [overlay] name = "...", '
            f"format = {FORMAT}."
        )
    _only_keys(meta, {"name", "format", "description"}, where, "overlay.")
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


# ---------------------------------------------------------------------------
# Pure parsing of one package's rule file


def parse_rules(
    data: Mapping[str, Any],
    *,
    package: NormalizedName,
    where: str,
    package_dir: Path,
    root: Path,
) -> tuple[Rule, ...]:
    """Validate a package's parsed ``overlay.toml`` into rules, in file order.

    Patch files are read from *package_dir* and named relative to *root*; *where*
    is how error messages name the file.
    """
    _only_keys(data, {"rule"}, where, "")
    raw = data.get("rule", [])
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise OverlayError(
            f"{where}: key rule must be an array of tables; write each rule as a [[rule]] table."
        )
    return tuple(
        _parse_rule(r, package=package, where=where, index=i, package_dir=package_dir, root=root)
        for i, r in enumerate(raw)
    )


def _parse_rule(
    raw: Mapping[str, Any],
    *,
    package: NormalizedName,
    where: str,
    index: int,
    package_dir: Path,
    root: Path,
) -> Rule:
    at = f"{where} ([[rule]] #{index + 1} for {package})"
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise OverlayError(
            f"{at}: unknown key {unknown[0]!r}. Known keys: {', '.join(sorted(_RULE_KEYS))}."
        )
    versions = _versions(raw, at)
    reason = raw.get("reason")
    if not isinstance(reason, str) or not reason.strip() or "\n" in reason.strip():
        raise OverlayError(
            f"{at}: key reason is required and must be one non-empty line saying why the rule "
            "exists (an upstream issue, the failure it fixes)."
        )
    deps = raw.get("dependencies", {})
    if not isinstance(deps, dict):
        raise OverlayError(
            f"{at}: key dependencies must be a table {{ add = [...], remove = [...] }}."
        )
    _only_keys(deps, {"add", "remove"}, at, "dependencies.")
    add = tuple(
        _requirement(s, at, "dependencies.add") for s in _str_list(deps, "add", at, "dependencies.")
    )
    remove = tuple(
        _name(s, at, "dependencies.remove") for s in _str_list(deps, "remove", at, "dependencies.")
    )
    build_requires: tuple[Requirement, ...] | None = None
    if "build-requires" in raw:
        build_requires = tuple(
            _requirement(s, at, "build-requires") for s in _str_list(raw, "build-requires", at)
        )
    return Rule(
        package=package,
        versions=versions,
        reason=reason.strip(),
        patches=tuple(
            _patch(p, at, package_dir=package_dir, root=root) for p in _str_list(raw, "patches", at)
        ),
        add_dependencies=add,
        remove_dependencies=remove,
        build_requires=build_requires,
        source=_source(raw.get("source"), at),
        cross_compile=_opt_bool(raw, "cross-compile", at),
        c_extension=_opt_bool(raw, "c-extension", at),
        system_libraries=_system_libraries(raw.get("system-libraries", {}), at),
        build_env=_build_env(raw.get("build-env", {}), at),
        index=index,
    )


def _versions(raw: Mapping[str, Any], at: str) -> SpecifierSet:
    value = raw.get("versions")
    if not isinstance(value, str):
        raise OverlayError(
            f"{at}: key versions is required and must be a PEP 440 specifier string such as "
            '">=1.2,<2" ("" matches every version).'
        )
    try:
        return SpecifierSet(value)
    except InvalidSpecifier as exc:
        raise OverlayError(
            f"{at}: key versions = {value!r} is not a PEP 440 specifier ({exc}). Write e.g. "
            '">=1.2,<2", or "" to match every version.'
        ) from exc


def _str_list(raw: Mapping[str, Any], key: str, at: str, prefix: str = "") -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise OverlayError(f"{at}: key {prefix}{key} must be a list of strings.")
    return value


def _requirement(text: str, at: str, key: str) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise OverlayError(
            f"{at}: key {key} entry {text!r} is not a PEP 508 requirement ({exc}). "
            'Write e.g. "requests>=2" or "tomli; python_version < \'3.11\'".'
        ) from exc


def _name(text: str, at: str, key: str) -> NormalizedName:
    try:
        return canonicalize_name(text, validate=True)
    except InvalidName as exc:
        raise OverlayError(
            f"{at}: key {key} entry {text!r} is not a package name; list bare names there "
            "(no versions or markers)."
        ) from exc


def _patch(text: str, at: str, *, package_dir: Path, root: Path) -> Patch:
    rel = PurePosixPath(text)
    if not text or "\\" in text or rel.is_absolute() or ".." in rel.parts:
        raise OverlayError(
            f"{at}: key patches entry {text!r} must be a relative POSIX path inside the "
            'package\'s directory, e.g. "patches/0001-fix-build.patch".'
        )
    path = package_dir.joinpath(*rel.parts)
    inside = path.resolve().is_relative_to(package_dir.resolve())
    if not inside or not path.is_file():
        raise OverlayError(
            f"{at}: key patches entry {text!r}: patch file not found at {path}. Add the file "
            "or correct the path (it is relative to the package's directory)."
        )
    data = path.read_bytes()
    return Patch(
        path=path.relative_to(root).as_posix(),
        sha256=hashlib.sha256(data).hexdigest(),
        text=data,
    )


def _source(value: object, at: str) -> GitReplacement | UrlReplacement | None:
    if value is None:
        return None
    hint = (
        'Write source = { git = "<url>", commit = "<40 hex>" } or '
        'source = { url = "<url>", sha256 = "<64 hex>" }.'
    )
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise OverlayError(f"{at}: key source must be a table of strings. {hint}")
    keys = set(value)
    if keys == {"git", "commit"}:
        commit = value["commit"].lower()
        if not _HEX40.fullmatch(commit):
            raise OverlayError(
                f"{at}: key source.commit {value['commit']!r} is not a full 40-hex commit id; "
                "a branch or tag could move, so overlays pin commits."
            )
        return GitReplacement(git=value["git"], commit=commit)
    if keys == {"url", "sha256"}:
        sha = value["sha256"].lower()
        if not _HEX64.fullmatch(sha):
            raise OverlayError(
                f"{at}: key source.sha256 {value['sha256']!r} is not 64 hex digits. Use the "
                "archive's sha256 (e.g. from `sha256sum`)."
            )
        return UrlReplacement(url=value["url"], sha256=sha)
    raise OverlayError(f"{at}: key source has keys {sorted(keys)}. {hint}")


def _opt_bool(raw: Mapping[str, Any], key: str, at: str) -> bool | None:
    value = raw.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise OverlayError(f"{at}: key {key} must be true or false, not {value!r}.")


def _system_libraries(value: object, at: str) -> dict[str, tuple[str, ...]]:
    ok = isinstance(value, dict) and all(
        isinstance(v, list) and all(isinstance(x, str) for x in v) for v in value.values()
    )
    if not ok:
        raise OverlayError(
            f"{at}: key system-libraries must map a distribution to a list of its package "
            'names, e.g. { debian = ["libyaml-dev"], alpine = ["yaml-dev"] }.'
        )
    assert isinstance(value, dict)
    return {str(k): tuple(v) for k, v in value.items()}


def _build_env(value: object, at: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise OverlayError(
            f"{at}: key build-env must be a table of strings, e.g. "
            '{ CFLAGS = "-O2", SETUPTOOLS_SCM_PRETEND_VERSION = "1.0" }.'
        )
    return {str(k): v for k, v in value.items()}


def _only_keys(table: Mapping[str, Any], allowed: set[str], where: str, prefix: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise OverlayError(
            f"{where}: unknown key {prefix}{unknown[0]}. Allowed here: "
            f"{', '.join(prefix + k for k in sorted(allowed))}."
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
    spec: str, *, base: Path, offline: bool, pinned_commit: str | None
) -> Overlay:
    """A git overlay through :mod:`monorepo.git` (the mirror git sources use too),
    exported per commit under ``<cache>/overlays/<sha256 of the URL>/<commit>``."""
    from monorepo.sources import git  # libgit2 is loaded only by runs that need it

    url, rev = _split_git_spec(spec, base)
    if pinned_commit is not None and not _HEX40.fullmatch(pinned_commit.lower()):
        raise OverlayError(
            f"The lock pins overlay {spec} to {pinned_commit!r}, which is not a commit id. "
            "Run `monorepo lock` again to re-pin it."
        )
    home = cache_root() / "overlays" / hashlib.sha256(url.encode()).hexdigest()
    commit = pinned_commit.lower() if pinned_commit is not None else None
    if commit is None or not (home / commit).is_dir():
        if offline and not git.mirror_exists(url):
            raise OverlayError(
                f"Overlay {spec} has never been fetched and --offline forbids fetching it. "
                "Run the command once without --offline."
            )
        try:
            repo = git.open_mirror(url, offline=offline, need=None if offline else commit)
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
    root = git.export_commit(url, commit, offline=offline, dest=home / commit)
    return read_overlay(root, spec=spec, commit=commit, fingerprint=commit)


DEFAULT_SPEC = "monorepo-default"


def load_project_overlays(
    specs: Sequence[str],
    *,
    base: Path,
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
    overlays = list(load_overlays(specs, base=base, offline=offline, pinned=pinned).overlays)
    root = default_overlay_dir()
    if include_default and (root / _OVERLAY_FILE).is_file() and DEFAULT_SPEC not in specs:
        overlays.append(
            read_overlay(
                root, spec=DEFAULT_SPEC, commit=None, fingerprint=directory_fingerprint(root)
            )
        )
    return OverlaySet(overlays)


def project_overlays(
    config: ProjectConfig, existing: LockDocument | None, *, upgrade: bool, offline: bool = False
) -> OverlaySet:
    """The project's overlays, git ones at the commits the lock pinned (unless upgrading)."""
    pinned: dict[str, str] = {}
    if existing is not None and not upgrade:
        for o in existing.inputs.get("overlays", []):
            if str(o.get("spec", "")).startswith("git+"):
                pinned[o["spec"]] = o["fingerprint"]
    return load_project_overlays(config.overlays, base=config.root, offline=offline, pinned=pinned)
