"""Is a lock still fresh for its project?  Semantic, like uv's ``lock --check``.

A lock is *stale* when re-locking could change what it means: a dependency was
added or removed, a requirement or constraint now excludes a locked version, or
an input that decides resolution changed (targets, indexes, exclude-newer,
prerelease policy, git sources, overlays).  A loosened requirement that the
locked version still satisfies keeps the lock fresh: re-locking would prefer the
same versions anyway.  A lock whose build closure does not hold together (a package
builds with a version the lock lacks, or that its build requirement excludes) or was
chosen by an earlier rule than this monorepo's is stale too: re-locking would change
it.  :func:`stale_reasons` is pure: config and lock in, reasons out;
:func:`current_reasons` gathers what it needs from the machine (the index URL, the
overlays) first, and :func:`require_fresh` is the refusal ``pull`` and ``build`` make,
like uv's ``--locked`` (``frozen`` skips it, like uv's ``--frozen``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from monorepo._core.paths import CacheDir
from monorepo.errors import StaleLockError
from monorepo.project.config import ProjectConfig
from monorepo.project.lockfile import LOCK_NAME, LockDocument, LockedPackage
from monorepo.project.targets import evaluate_marker

#: Revision of the rule that chooses the build closure (monorepo.locking.buildclosure), recorded
#: in the lock's inputs: a lock chosen by another rule is stale, as re-locking changes it.
#: 2: all build requirements resolved together, one version of each tool unless they
#: conflict (1, unrecorded: each package's requirements on their own).
BUILD_CLOSURE_RULE = 2

#: inputs compared as a whole: any change is stale
EXACT_INPUTS = (
    ("targets", "the targets"),
    ("index-urls", "the index URLs"),
    ("exclude-newer", "exclude-newer"),
    ("prereleases", "the prereleases policy"),
    ("sources", "[tool.monorepo.sources]"),
    ("build-dependencies", "build-dependencies"),
    ("build-closure", "the rule monorepo chooses build dependencies by"),
    ("overlays", "the overlays (names, commits or content)"),
    ("requires-python", "requires-python"),
)


def _key(req: Requirement) -> tuple[str, tuple[str, ...], str, str]:
    return (
        canonicalize_name(req.name),
        tuple(sorted(req.extras)),
        str(req.marker or ""),
        req.url or "",
    )


def _describe_key(key: tuple[str, tuple[str, ...], str, str]) -> str:
    name, extras, marker, url = key
    out = name + (f"[{','.join(extras)}]" if extras else "")
    if url:
        out += f" @ {url}"
    if marker:
        out += f"; {marker}"
    return out


def stale_reasons(
    config: ProjectConfig, lock: LockDocument, inputs: Mapping[str, Any]
) -> list[str]:
    """Why *lock* no longer fits *config* (empty when it is fresh).

    *inputs* is :func:`canonical_inputs` for the current config.
    """
    reasons: list[str] = []
    locked = lock.inputs
    for key, label in EXACT_INPUTS:
        if key == "build-closure" and _norm(locked.get("build-dependencies")) != _norm(
            inputs.get("build-dependencies")
        ):
            continue  # said already: build-dependencies changed
        if _norm(locked.get(key)) != _norm(inputs.get(key)):
            reasons.append(
                f"{label} changed ({_show(locked.get(key))} -> {_show(inputs.get(key))})"
            )
    scopes: list[tuple[str, Sequence[Requirement], Iterable[str]]] = [
        ("dependencies", config.dependencies, locked.get("dependencies", []))
    ]
    locked_extras = locked.get("optional-dependencies", {}) or {}
    for name in sorted(set(config.optional_dependencies) | set(locked_extras)):
        scopes.append(
            (
                f"extra '{name}'",
                config.optional_dependencies.get(name, ()),
                locked_extras.get(name, []),
            )
        )
    locked_groups = locked.get("dependency-groups", {}) or {}
    for name in sorted(set(config.dependency_groups) | set(locked_groups)):
        scopes.append(
            (f"group '{name}'", config.dependency_groups.get(name, ()), locked_groups.get(name, []))
        )
    by_name = lock.by_name()
    envs = {t.name: t.marker_environment() for t in config.targets}
    for label, current, was in scopes:
        before = {_key(Requirement(r)) for r in was}
        now = {_key(r) for r in current}
        for k in sorted(now - before):
            reasons.append(f"{label}: {_describe_key(k)} was added")
        for k in sorted(before - now):
            reasons.append(f"{label}: {_describe_key(k)} was removed")
        for req in current:
            reasons += _violations(req, by_name, envs, f"{label} requires")
    for req in config.constraints:
        reasons += _violations(req, by_name, envs, "constraint")
    old_overrides = {canonicalize_name(Requirement(r).name) for r in locked.get("overrides", [])}
    new_overrides = {canonicalize_name(r.name) for r in config.overrides}
    for name in sorted(old_overrides ^ new_overrides):
        reasons.append(
            f"the override on {name} was {'added' if name in new_overrides else 'removed'}"
        )
    for req in config.overrides:
        reasons += _violations(req, by_name, envs, "override")
    return reasons + build_closure_reasons(lock)


def build_closure_reasons(lock: LockDocument) -> list[str]:
    """Where the lock's build closure does not hold together (a hand edit, a bad merge).

    Each package's ``build-closure`` must name locked packages and satisfy its
    ``build-requires`` (those without a marker: markers are the build host's, which need
    not be this machine), and every build-only package must be in some closure.
    """
    locked = {(p.name, p.version) for p in lock.packages}
    used: set[tuple[NormalizedName, Version]] = set()
    reasons: list[str] = []
    for pkg in lock.packages:
        closure = pkg.tool.get("build-closure")
        if not isinstance(closure, list):
            continue
        label = f"{pkg.name} {pkg.version}"
        pins: dict[NormalizedName, Version] = {}
        for text in closure:
            name, _, version = str(text).partition("==")
            try:
                key = (canonicalize_name(name), Version(version))
            except InvalidVersion:
                reasons.append(f"{label}: build-closure entry {text!r} is not name==version")
                continue
            if key not in locked:
                reasons.append(f"{label} builds with {text}, which the lock does not hold")
            pins[key[0]] = key[1]
            used.add(key)
        for text in pkg.tool.get("build-requires", ()):
            try:
                req = Requirement(str(text))
            except InvalidRequirement:
                reasons.append(f"{label}: build requirement {text!r} is not valid PEP 508")
                continue
            if req.marker is not None or req.url:
                continue
            pinned = pins.get(canonicalize_name(req.name))
            if pinned is None or not req.specifier.contains(pinned, prereleases=True):
                has = f"{req.name} {pinned}" if pinned is not None else f"no {req.name}"
                reasons.append(f"{label} needs {req} to build, but its build closure has {has}")
    for pkg in lock.packages:
        if pkg.role == "build" and (pkg.name, pkg.version) not in used:
            reasons.append(f"build-only {pkg.name} {pkg.version} is in no package's build closure")
    return reasons


def _violations(
    req: Requirement,
    by_name: Mapping[NormalizedName, Sequence[LockedPackage]],
    envs: Mapping[str, Mapping[str, str]],
    label: str,
) -> list[str]:
    """Locked versions of *req*'s package that *req* (where its marker applies) excludes."""
    if req.url:
        return []
    name = canonicalize_name(req.name)
    out = []
    for pkg in by_name.get(name, ()):
        targets = pkg.targets or tuple(envs)
        applies = any(evaluate_marker(req.marker, envs[t], ()) for t in targets if t in envs)
        if applies and not req.specifier.contains(pkg.version, prereleases=True):
            out.append(f"{label} {req}, but the lock has {name} {pkg.version}")
    return out


def _norm(value: Any) -> Any:
    if value in (None, [], {}):
        return None
    return value


def _show(value: Any) -> str:
    if value in (None, [], {}):
        return "none"
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return ", ".join(str(v.get("name", v)) for v in value)
    return str(value)


def canonical_inputs(
    config: ProjectConfig, index_urls: Sequence[str], overlays: Sequence[Mapping[str, str]] = ()
) -> dict[str, Any]:
    """The inputs that decide the lock, in canonical form, for staleness checks."""

    def reqs(items: Iterable[Any]) -> list[str]:
        return sorted(str(r) for r in items)

    return {
        "requires-python": str(config.requires_python) if config.requires_python else None,
        "dependencies": reqs(config.dependencies),
        "optional-dependencies": {
            k: reqs(v) for k, v in sorted(config.optional_dependencies.items())
        },
        "dependency-groups": {k: reqs(v) for k, v in sorted(config.dependency_groups.items())},
        "constraints": reqs(config.constraints),
        "overrides": reqs(config.overrides),
        "targets": [t.canonical() for t in config.targets],
        "index-urls": list(index_urls),
        "exclude-newer": config.exclude_newer.strftime("%Y-%m-%dT%H:%M:%SZ")
        if config.exclude_newer
        else None,
        "prereleases": config.prereleases,
        "sources": {
            name: {
                k: v
                for k, v in (("git", s.url), ("rev", s.rev), ("subdirectory", s.subdirectory))
                if v
            }
            for name, s in sorted(config.sources.items())
        },
        "build-dependencies": config.build_dependencies,
        "build-closure": BUILD_CLOSURE_RULE if config.build_dependencies else None,
        "overlays": [dict(o) for o in overlays],
    }


def current_reasons(
    config: ProjectConfig,
    lock: LockDocument,
    *,
    cache: CacheDir,
    index_url: str | None = None,
    offline: bool = False,
) -> list[str]:
    """:func:`stale_reasons` against the project as it is now: the index URL it
    resolves to (*index_url* as a flag would give it) and its overlays, git ones at
    the commits the lock pinned.  The rule of ``lock --check``."""
    from monorepo.overlays.loading import project_overlays
    from monorepo.project.indexurl import resolve_index_urls

    urls = resolve_index_urls(config, flag=index_url).urls
    overlays = project_overlays(config, lock, upgrade=False, cache=cache, offline=offline)
    inputs = canonical_inputs(config, urls, overlays.canonical())
    return stale_reasons(config, lock, inputs)


def require_fresh(
    config: ProjectConfig,
    lock: LockDocument,
    *,
    command: str,
    cache: CacheDir,
    offline: bool = False,
) -> None:
    """Raise :class:`StaleLockError` when *lock* no longer fits *config*.

    *command* (``pull``, ``build``) words the way out: re-lock, or use the lock as it
    is with ``--frozen``.  Neither command re-locks on its own: a lock changes only
    when asked to, and what is vendored or built is always what the lock says.
    """
    reasons = current_reasons(config, lock, cache=cache, offline=offline)
    if not reasons:
        return
    then = " and `monorepo pull`" if command == "build" else ""
    raise StaleLockError(
        f"{config.root / LOCK_NAME} is stale, it no longer fits {config.pyproject.name}:\n  - "
        + "\n  - ".join(reasons)
        + f"\nRun `monorepo lock`{then} to update it, or `monorepo {command} --frozen` to"
        f" {command} from the lock as it is.",
        reasons,
    )
