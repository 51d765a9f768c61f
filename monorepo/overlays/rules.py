"""An overlay's rules: what one package version gets, parsed purely from the files' bytes.

:class:`OverlaySet` answers "which rule applies" with the precedence the package
docstring (:mod:`monorepo.overlays`) states; :func:`parse_rules` validates one
package's ``overlay.toml``.  Loading directories and git repositories is
:mod:`monorepo.overlays.loading`'s.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidName, NormalizedName, canonicalize_name
from packaging.version import Version

from monorepo.errors import OverlayError
from monorepo.sources.patches import Patch

__all__ = [
    "FORMAT",
    "GitReplacement",
    "MatchedRule",
    "Overlay",
    "OverlaySet",
    "Rule",
    "UrlReplacement",
    "only_keys",
    "parse_rules",
]

FORMAT = 1
"""The overlay format version this code reads (``[overlay] format``)."""

COMMIT_ID = re.compile(r"[0-9a-f]{40}")
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
        "host-tools",
        "config-settings",
        "target-config-settings",
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
    #: build-machine programs the build runs (``ninja``) -> the Debian package providing it
    host_tools: dict[str, str] = field(default_factory=dict)
    config_settings: dict[str, str | tuple[str, ...]] = field(default_factory=dict)
    """PEP 517 config settings for every build of the package."""
    target_config_settings: dict[str, dict[str, str | tuple[str, ...]]] = field(
        default_factory=dict
    )
    """More config settings for one target, keyed by target name or machine."""
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
    only_keys(data, {"rule"}, where, "")
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
    only_keys(deps, {"add", "remove"}, at, "dependencies.")
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
        host_tools=_host_tools(raw.get("host-tools", {}), at),
        config_settings=_config_settings(raw.get("config-settings", {}), at, "config-settings"),
        target_config_settings=_target_config_settings(raw.get("target-config-settings", {}), at),
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
        if not COMMIT_ID.fullmatch(commit):
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


def _host_tools(value: object, at: str) -> dict[str, str]:
    ok = isinstance(value, dict) and all(
        isinstance(k, str) and k and "/" not in k and isinstance(v, str) and v.strip()
        for k, v in value.items()
    )
    if not ok:
        raise OverlayError(
            f"{at}: key host-tools must map a program the build runs to the Debian package"
            ' that provides it, e.g. { ninja = "ninja-build", patchelf = "patchelf" }.'
        )
    assert isinstance(value, dict)
    return {str(k): str(v).strip() for k, v in sorted(value.items())}


def _config_settings(value: object, at: str, key: str) -> dict[str, str | tuple[str, ...]]:
    """A PEP 517 config-settings table: each value a string or a list of strings."""
    ok = isinstance(value, dict) and all(
        isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
        for v in value.values()
    )
    if not ok:
        raise OverlayError(
            f"{at}: key {key} must be a table of strings or lists of strings (PEP 517"
            ' config settings), e.g. { "setup-args" = ["-Dblas=openblas"] }.'
        )
    assert isinstance(value, dict)
    return {str(k): v if isinstance(v, str) else tuple(v) for k, v in value.items()}


def _target_config_settings(value: object, at: str) -> dict[str, dict[str, str | tuple[str, ...]]]:
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise OverlayError(
            f"{at}: key target-config-settings must map a target name or machine to config"
            ' settings, e.g. { armv7l = { "setup-args" = ["-Dsimd=false"] } }.'
        )
    return {
        str(k): _config_settings(v, at, f"target-config-settings.{k}") for k, v in value.items()
    }


def only_keys(table: Mapping[str, Any], allowed: set[str], where: str, prefix: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise OverlayError(
            f"{where}: unknown key {prefix}{unknown[0]}. Allowed here: "
            f"{', '.join(prefix + k for k in sorted(allowed))}."
        )
