"""Reading a project's pyproject.toml into one validated, typed object.

Every later step (lock, pull, verify, build) trusts :class:`ProjectConfig`, so all
checking happens here, once, with messages that name the file and the key: a typo
in ``[tool.monorepo]`` must fail loudly instead of being ignored, because a silently
dropped ``constraints`` or ``exclude-newer`` produces a lock that looks right and
is not.  :func:`parse_config` is pure (a dict in, a config out); only
:func:`load_config` and :func:`resolve_index_url` touch the disk or environment.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Literal, cast, get_args
from urllib.parse import urlsplit

from packaging.dependency_groups import DependencyGroupResolver
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name

from monorepo.errors import ConfigError
from monorepo.project.indexurl import is_url, normalize_index_url
from monorepo.project.targets import Target, describe_value, host_target, parse_target

__all__ = [
    "KNOWN_KEYS",
    "GitSource",
    "PrereleasePolicy",
    "ProjectConfig",
    "load_config",
    "parse_config",
]

PrereleasePolicy = Literal["if-necessary", "allow", "disallow"]
_PRERELEASE_POLICIES: tuple[str, ...] = get_args(PrereleasePolicy)

#: Every key ``[tool.monorepo]`` accepts; anything else is a typo and an error.
KNOWN_KEYS: tuple[str, ...] = (
    "index-url",
    "extra-index-urls",
    "targets",
    "overlays",
    "constraints",
    "overrides",
    "exclude-newer",
    "prereleases",
    "build-dependencies",
    "duni",
    "sources",
    "crate-index",
    "executor",
)
_SOURCE_KEYS = ("git", "rev", "subdirectory")

# A URL has a scheme of two or more letters followed by "://"; "C:\x" is a path.
# git's scp-like syntax, user@host:path, is a remote too.
_SCP_RE = re.compile(r"^[\w.-]+@[\w.-]+:")


@dataclass(frozen=True)
class GitSource:
    """A package taken from a git repository instead of the index.

    ``rev`` stays symbolic here; the lock pins it to a commit so that a moving
    branch cannot change what a lock means.
    """

    name: NormalizedName
    url: str
    rev: str | None
    subdirectory: str | None = None


@dataclass(frozen=True)
class ProjectConfig:
    """The validated contents of one pyproject.toml.

    Paths are absolute so that callers never have to know which directory the
    user ran ``monorepo`` from.
    """

    pyproject: Path
    root: Path
    name: str | None
    dependencies: tuple[Requirement, ...]
    optional_dependencies: dict[NormalizedName, tuple[Requirement, ...]]
    dependency_groups: dict[str, tuple[Requirement, ...]]
    requires_python: SpecifierSet | None
    index_url: str | None
    extra_index_urls: tuple[str, ...]
    targets: tuple[Target, ...]
    constraints: tuple[Requirement, ...]
    overrides: tuple[Requirement, ...]
    exclude_newer: datetime | None
    prereleases: PrereleasePolicy
    sources: dict[NormalizedName, GitSource]
    build_dependencies: bool
    duni: Path
    overlays: tuple[str, ...]
    #: where Rust crates are downloaded from (``sparse+URL`` or a ``dl`` template); see
    #: :mod:`monorepo.sources.crates`
    crate_index: str | None = None
    executor: str | None = None
    """Where ``monorepo build`` runs builds: ``local`` or ``dask://HOST:PORT`` (checked by
    :mod:`monorepo.building.executors`, which knows the engines)."""


# ---------------------------------------------------------------------------
# small helpers for messages and types


class _Ctx:
    """Carries the file name into every message so that none can forget it."""

    def __init__(self, pyproject: Path) -> None:
        self.pyproject = pyproject
        self.root = pyproject.parent

    def error(self, where: str, text: str) -> ConfigError:
        return ConfigError(f"{self.pyproject}: {where} {text}", path=self.pyproject)

    def wrong_type(self, where: str, expected: str, value: object) -> ConfigError:
        return self.error(where, f"must be {expected}, got {describe_value(value)}.")

    def table(self, value: object, where: str) -> Mapping[str, object]:
        if not isinstance(value, Mapping):
            raise self.wrong_type(where, "a table", value)
        return cast(Mapping[str, object], value)

    def string(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise self.wrong_type(where, "a string", value)
        return value

    def string_list(self, value: object, where: str) -> list[str]:
        if not isinstance(value, list):
            raise self.wrong_type(where, "an array of strings", value)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.wrong_type(f"{where}[{i}]", "a string", item)
        return cast(list[str], value)

    def requirements(self, value: object, where: str) -> tuple[Requirement, ...]:
        out: list[Requirement] = []
        for i, text in enumerate(self.string_list(value, where)):
            out.append(self.requirement(text, f"{where}[{i}]"))
        return tuple(out)

    def requirement(self, text: str, where: str) -> Requirement:
        try:
            return Requirement(text)
        except InvalidRequirement as exc:
            raise self.error(
                where,
                f"{text!r} is not a valid PEP 508 requirement: {exc}. "
                "Write it like 'name[extra]>=1.0; python_version < \"3.12\"'.",
            ) from exc


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


# ---------------------------------------------------------------------------
# [project] and [dependency-groups]


def _parse_project(
    ctx: _Ctx, project: Mapping[str, object]
) -> tuple[
    str | None,
    tuple[Requirement, ...],
    dict[NormalizedName, tuple[Requirement, ...]],
    SpecifierSet | None,
]:
    dynamic = project.get("dynamic", [])
    if "dynamic" in project:
        dynamic = ctx.string_list(dynamic, "[project] key 'dynamic'")
    if isinstance(dynamic, list) and "dependencies" in dynamic:
        raise ctx.error(
            "[project] dynamic",
            "lists 'dependencies': monorepo cannot lock dependencies that only a "
            "build backend knows. Move them into a static [project] dependencies "
            "array and remove 'dependencies' from dynamic.",
        )

    name: str | None = None
    if "name" in project:
        name = ctx.string(project["name"], "[project] key 'name'")

    dependencies: tuple[Requirement, ...] = ()
    if "dependencies" in project:
        dependencies = ctx.requirements(project["dependencies"], "[project] dependencies")

    optional: dict[NormalizedName, tuple[Requirement, ...]] = {}
    if "optional-dependencies" in project:
        table = ctx.table(project["optional-dependencies"], "[project] optional-dependencies")
        spelled: dict[NormalizedName, str] = {}
        for extra, reqs in table.items():
            norm = canonicalize_name(extra)
            if norm in spelled:
                raise ctx.error(
                    "[project.optional-dependencies]",
                    f"defines extra {extra!r} and {spelled[norm]!r}, which are the same "
                    f"name once normalized ({norm!r}); merge them into one.",
                )
            spelled[norm] = extra
            optional[norm] = ctx.requirements(reqs, f"[project.optional-dependencies] {extra}")
        optional = dict(sorted(optional.items()))

    requires_python: SpecifierSet | None = None
    if "requires-python" in project:
        text = ctx.string(project["requires-python"], "[project] key 'requires-python'")
        try:
            requires_python = SpecifierSet(text)
        except InvalidSpecifier as exc:
            raise ctx.error(
                "[project] requires-python",
                f"{text!r} is not a valid version specifier: {exc}. Write e.g. '>=3.11'.",
            ) from exc
    return name, dependencies, optional, requires_python


def _normalize_group(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _parse_dependency_groups(ctx: _Ctx, value: object) -> dict[str, tuple[Requirement, ...]]:
    """Expand every group with packaging's resolver after checking the shape ourselves.

    The pre-check exists for the messages: packaging reports problems as an
    ExceptionGroup without the file or the position, which a user cannot act on.
    """
    groups = ctx.table(value, "[dependency-groups]")
    spelled: dict[str, str] = {}
    for group in groups:
        norm = _normalize_group(group)
        if norm in spelled:
            raise ctx.error(
                "[dependency-groups]",
                f"defines group {group!r} and {spelled[norm]!r}, which are the same name "
                f"once normalized ({norm!r}); merge them into one.",
            )
        spelled[norm] = group
    for group, items in groups.items():
        where = f"[dependency-groups] {group}"
        if not isinstance(items, list):
            raise ctx.wrong_type(
                where, "an array of requirement strings and { include-group = ... } tables", items
            )
        for i, item in enumerate(items):
            if isinstance(item, str):
                ctx.requirement(item, f"{where}[{i}]")
            elif isinstance(item, Mapping):
                include = item.get("include-group")
                if set(item) != {"include-group"} or not isinstance(include, str):
                    raise ctx.error(
                        f"{where}[{i}]",
                        f'is not a valid include: expected {{ include-group = "name" }}, '
                        f"got keys {sorted(item)}.",
                    )
                if _normalize_group(include) not in spelled:
                    raise ctx.error(
                        where,
                        f"includes group {include!r}, which is not defined in "
                        f"[dependency-groups]. Defined groups: "
                        f"{', '.join(sorted(groups)) or '(none)'}.",
                    )
            else:
                raise ctx.wrong_type(
                    f"{where}[{i}]", "a requirement string or { include-group = ... }", item
                )

    resolver = DependencyGroupResolver(
        cast(Mapping[str, Sequence[str | Mapping[str, str]]], groups)
    )
    out: dict[str, tuple[Requirement, ...]] = {}
    for group in sorted(groups, key=_normalize_group):
        try:
            out[_normalize_group(group)] = resolver.resolve(group)
        except ExceptionGroup as exc:
            reasons = "; ".join(str(e) for e in exc.exceptions)
            raise ctx.error(
                f"[dependency-groups] {group}",
                f"cannot be expanded: {reasons}. Remove the include-group that closes the cycle.",
            ) from exc
    return out


# ---------------------------------------------------------------------------
# [tool.monorepo]


def _parse_exclude_newer(ctx: _Ctx, value: object) -> datetime:
    """Accept what users write for a cut-off and normalise it to aware UTC.

    A bare date means midnight UTC (not local time) so that the same
    pyproject.toml means the same index state on every machine.
    """
    where = "[tool.monorepo] key 'exclude-newer'"
    parsed: datetime | date
    if isinstance(value, datetime | date):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            parsed = (
                date.fromisoformat(text)
                if len(text) == 10
                else datetime.fromisoformat(text.replace("z", "Z"))
            )
        except ValueError as exc:
            raise ctx.error(
                where,
                f"{value!r} is not an RFC 3339 date-time or a date; write e.g. "
                "'2026-11-01T00:00:00Z' or '2026-11-01'.",
            ) from exc
    else:
        raise ctx.wrong_type(
            where,
            "an RFC 3339 date-time such as 2026-11-01T00:00:00Z or a date such as 2026-11-01",
            value,
        )
    if not isinstance(parsed, datetime):
        return datetime.combine(parsed, time(0, 0), tzinfo=UTC)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _suggest_source_key(key: str) -> str:
    """Point users of other tools' spellings (uv's branch/tag, pip's subdir) at ours."""
    aliases = {
        "branch": "rev",
        "tag": "rev",
        "commit": "rev",
        "url": "git",
        "subdir": "subdirectory",
    }
    if key in aliases:
        return f" Did you mean {aliases[key]!r}? (branch, tag and commit all go in 'rev'.)"
    return _suggest(key, _SOURCE_KEYS)


def _parse_git_source(ctx: _Ctx, name: str, value: object) -> GitSource:
    where = f"[tool.monorepo.sources] {name}"
    table = ctx.table(value, where)
    for key in table:
        if key not in _SOURCE_KEYS:
            raise ctx.error(
                where,
                f"key {key!r} is unknown.{_suggest_source_key(key)} Known keys: "
                f'{", ".join(_SOURCE_KEYS)}, e.g. {{ git = "https://git.example/x.git", '
                'rev = "v1.2" }.',
            )
    if "git" not in table:
        raise ctx.error(
            where,
            'has no \'git\' key; write e.g. { git = "https://git.example/x.git", rev = "v1.2" }.',
        )
    url = ctx.string(table["git"], f"{where} key 'git'").strip()
    if not url:
        raise ctx.error(f"{where} key 'git'", "is empty; give a repository URL or path.")
    if not (is_url(url) or _SCP_RE.match(url)):
        url = os.path.normpath(ctx.root / Path(url).expanduser())
    rev: str | None = None
    if "rev" in table:
        rev = ctx.string(table["rev"], f"{where} key 'rev'").strip() or None
    subdirectory: str | None = None
    if "subdirectory" in table:
        sub = ctx.string(table["subdirectory"], f"{where} key 'subdirectory'")
        parts = Path(sub).parts
        if Path(sub).is_absolute() or ".." in parts or sub.startswith(("/", "\\")):
            raise ctx.error(
                f"{where} key 'subdirectory'",
                f"{sub!r} must be a relative path inside the repository, without '..'.",
            )
        subdirectory = Path(sub).as_posix().strip("/") or None
        if subdirectory == ".":
            subdirectory = None
    return GitSource(name=canonicalize_name(name), url=url, rev=rev, subdirectory=subdirectory)


def _parse_targets(ctx: _Ctx, value: object) -> tuple[Target, ...]:
    where = "[tool.monorepo] key 'targets'"
    if not isinstance(value, list):
        raise ctx.wrong_type(where, "an array of target tables", value)
    if not value:
        raise ctx.error(
            where,
            "is empty; remove the key to lock for the running interpreter, or list at "
            "least one target.",
        )
    targets: list[Target] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        target = parse_target(item, where=f"{ctx.pyproject}: [tool.monorepo] targets[{i}]")
        if target.name in seen:
            raise ctx.error(
                f"[tool.monorepo] targets[{i}]",
                f"reuses the name {target.name!r}; every target needs a unique name.",
            )
        seen.add(target.name)
        if target.sysroot is not None:
            sysroot = os.path.normpath(ctx.root / Path(target.sysroot).expanduser())
            target = replace(target, sysroot=sysroot)
        targets.append(target)
    return tuple(targets)


def _parse_overlays(ctx: _Ctx, value: object) -> tuple[str, ...]:
    out: list[str] = []
    for i, text in enumerate(ctx.string_list(value, "[tool.monorepo] key 'overlays'")):
        text = text.strip()
        if not text:
            raise ctx.error(f"[tool.monorepo] overlays[{i}]", "is empty.")
        if text.startswith("git+"):
            entry = text
        elif is_url(text):
            raise ctx.error(
                f"[tool.monorepo] overlays[{i}]",
                f"{text!r} is neither a directory nor a git repository; write a git "
                "overlay as 'git+<url>@<rev>'.",
            )
        else:
            entry = os.path.normpath(ctx.root / Path(text).expanduser())
        if entry in out:
            raise ctx.error(
                f"[tool.monorepo] overlays[{i}]",
                f"{text!r} is listed twice; each overlay may appear once.",
            )
        out.append(entry)
    return tuple(out)


def _parse_duni(ctx: _Ctx, value: object) -> Path:
    """Refuse a vendor tree that contains the project: pull deletes unlocked dirs in it."""
    text = ctx.string(value, "[tool.monorepo] key 'duni'").strip()
    duni = Path(os.path.normpath(ctx.root / Path(text).expanduser()))
    root = Path(os.path.normpath(ctx.root))
    if duni == root or duni in root.parents:
        raise ctx.error(
            "[tool.monorepo] key 'duni'",
            f"{text!r} is the project directory or one of its parents; pull removes "
            "every unlocked directory inside duni/, so it must be a subdirectory such "
            "as 'duni'.",
        )
    return duni


def _no_extras_or_urls(ctx: _Ctx, reqs: tuple[Requirement, ...], key: str) -> None:
    for i, req in enumerate(reqs):
        if req.extras or req.url:
            what = "extras" if req.extras else "a URL"
            raise ctx.error(
                f"[tool.monorepo] {key}[{i}]",
                f"{str(req)!r} carries {what}; constraints only limit versions and add no "
                f"packages, so write just the name, version specifier and marker "
                f"(e.g. '{req.name}>=1,<2').",
            )


def _parse_tool(ctx: _Ctx, tool: Mapping[str, object]) -> dict[str, object]:
    for key in tool:
        if key not in KNOWN_KEYS:
            raise ctx.error(
                "[tool.monorepo]",
                f"key {key!r} is unknown.{_suggest(key, KNOWN_KEYS)} Known keys: "
                f"{', '.join(KNOWN_KEYS)}.",
            )
    out: dict[str, object] = {}
    if "index-url" in tool:
        where = "[tool.monorepo] key 'index-url'"
        out["index_url"] = normalize_index_url(
            ctx.string(tool["index-url"], where),
            base=ctx.root,
            where=f"{ctx.pyproject}: {where}",
            slash=False,
        )
    if "extra-index-urls" in tool:
        where = "[tool.monorepo] key 'extra-index-urls'"
        out["extra_index_urls"] = tuple(
            normalize_index_url(
                url,
                base=ctx.root,
                where=f"{ctx.pyproject}: [tool.monorepo] extra-index-urls[{i}]",
                slash=False,
            )
            for i, url in enumerate(ctx.string_list(tool["extra-index-urls"], where))
        )
    if "targets" in tool:
        out["targets"] = _parse_targets(ctx, tool["targets"])
    if "constraints" in tool:
        constraints = ctx.requirements(tool["constraints"], "[tool.monorepo] constraints")
        _no_extras_or_urls(ctx, constraints, "constraints")
        out["constraints"] = constraints
    if "overrides" in tool:
        out["overrides"] = ctx.requirements(tool["overrides"], "[tool.monorepo] overrides")
    if "exclude-newer" in tool:
        out["exclude_newer"] = _parse_exclude_newer(ctx, tool["exclude-newer"])
    if "prereleases" in tool:
        where = "[tool.monorepo] key 'prereleases'"
        policy = ctx.string(tool["prereleases"], where)
        if policy not in _PRERELEASE_POLICIES:
            raise ctx.error(
                where,
                f"is {policy!r}.{_suggest(policy, _PRERELEASE_POLICIES)} Choose one of: "
                f"{', '.join(repr(p) for p in _PRERELEASE_POLICIES)}.",
            )
        out["prereleases"] = policy
    if "build-dependencies" in tool:
        value = tool["build-dependencies"]
        if not isinstance(value, bool):
            raise ctx.wrong_type("[tool.monorepo] key 'build-dependencies'", "true or false", value)
        out["build_dependencies"] = value
    if "duni" in tool:
        out["duni"] = _parse_duni(ctx, tool["duni"])
    if "executor" in tool:
        out["executor"] = ctx.string(tool["executor"], "[tool.monorepo] key 'executor'")
    if "overlays" in tool:
        out["overlays"] = _parse_overlays(ctx, tool["overlays"])
    if "crate-index" in tool:
        where = "[tool.monorepo] key 'crate-index'"
        text = ctx.string(tool["crate-index"], where).strip()
        if urlsplit(text.removeprefix("sparse+")).scheme not in ("http", "https", "file"):
            raise ctx.error(
                where,
                f"is {text!r}: give a sparse registry (sparse+https://...) or a crate download"
                " URL (https://... or file://...).",
            )
        out["crate_index"] = text
    if "sources" in tool:
        table = ctx.table(tool["sources"], "[tool.monorepo] key 'sources'")
        sources: dict[NormalizedName, GitSource] = {}
        for name, spec in table.items():
            source = _parse_git_source(ctx, name, spec)
            if source.name in sources:
                raise ctx.error(
                    "[tool.monorepo.sources]",
                    f"names {source.name!r} twice (as different spellings); keep one.",
                )
            sources[source.name] = source
        out["sources"] = dict(sorted(sources.items()))
    return out


# ---------------------------------------------------------------------------
# entry points


def parse_config(data: Mapping[str, object], *, pyproject: Path) -> ProjectConfig:
    """Validate a parsed pyproject.toml; pure, so tests need no files.

    *pyproject* is only used to name the file in messages and to anchor relative
    paths; it is made absolute without touching the disk.
    """
    pyproject = Path(os.path.abspath(pyproject))
    ctx = _Ctx(pyproject)

    project: Mapping[str, object] = {}
    if "project" in data:
        project = ctx.table(data["project"], "[project]")
    name, dependencies, optional, requires_python = _parse_project(ctx, project)

    groups: dict[str, tuple[Requirement, ...]] = {}
    if "dependency-groups" in data:
        groups = _parse_dependency_groups(ctx, data["dependency-groups"])

    tool_section: Mapping[str, object] = {}
    if "tool" in data:
        tools = ctx.table(data["tool"], "[tool]")
        if "monorepo" in tools:
            tool_section = ctx.table(tools["monorepo"], "[tool.monorepo]")
    tool = _parse_tool(ctx, tool_section)

    return ProjectConfig(
        pyproject=pyproject,
        root=ctx.root,
        name=name,
        dependencies=dependencies,
        optional_dependencies=optional,
        dependency_groups=groups,
        requires_python=requires_python,
        index_url=cast("str | None", tool.get("index_url")),
        extra_index_urls=cast("tuple[str, ...]", tool.get("extra_index_urls", ())),
        targets=cast("tuple[Target, ...]", tool.get("targets") or (host_target(),)),
        constraints=cast("tuple[Requirement, ...]", tool.get("constraints", ())),
        overrides=cast("tuple[Requirement, ...]", tool.get("overrides", ())),
        exclude_newer=cast("datetime | None", tool.get("exclude_newer")),
        prereleases=cast(PrereleasePolicy, tool.get("prereleases", "if-necessary")),
        sources=cast("dict[NormalizedName, GitSource]", tool.get("sources", {})),
        build_dependencies=cast(bool, tool.get("build_dependencies", True)),
        duni=cast(Path, tool.get("duni", ctx.root / "duni")),
        overlays=cast("tuple[str, ...]", tool.get("overlays", ())),
        crate_index=cast("str | None", tool.get("crate_index")),
        executor=cast("str | None", tool.get("executor")),
    )


def load_config(project: Path) -> ProjectConfig:
    """Read and validate the pyproject.toml of *project* (a directory or the file)."""
    project = Path(project).expanduser()
    path = project if project.name == "pyproject.toml" or project.is_file() else None
    if path is None:
        path = project / "pyproject.toml"
    path = Path(os.path.abspath(path))
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path}: no pyproject.toml there (looked for {path}). Run monorepo in "
            "the project directory, pass the project directory, or create a "
            "pyproject.toml with a [project] table.",
            path=path,
        ) from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}.", path=path) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: is not UTF-8 (byte {exc.start}); TOML files must be UTF-8 encoded.",
            path=path,
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: invalid TOML: {exc}. Fix the syntax at that line and column.",
            path=path,
        ) from exc
    return parse_config(data, pyproject=path)
