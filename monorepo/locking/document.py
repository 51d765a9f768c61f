"""From a project's constraints to the packages of its lock: resolve, merge, close.

The middle of ``monorepo lock``, between :mod:`monorepo.locking.locker` (configuration, index
client, files) and the resolver: each target is resolved with its own
:class:`~monorepo.resolve.finder.IndexFinder`, the per-target results are merged into one entry
per package version (with a marker saying which targets and which extras or groups need
it), overlay rules are recorded, and the build dependencies are closed over for the
build host.  Apart from :mod:`monorepo.locking.locker` because it is the heavy half: the
resolver, finder and lock format load while the first index pages are on their way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from packaging.utils import NormalizedName
from packaging.version import Version

from monorepo._core.paths import CacheDir
from monorepo._core.reporter import Reporter
from monorepo.errors import MonorepoError
from monorepo.locking.buildclosure import build_host, close_over_build_dependencies
from monorepo.locking.freshness import canonical_inputs
from monorepo.locking.speed.sourcesahead import SourcesAhead
from monorepo.overlays.rules import GitReplacement, MatchedRule, OverlaySet, UrlReplacement
from monorepo.project.config import ProjectConfig
from monorepo.project.lockfile import (
    BUILD_GROUP,
    ArchiveSource,
    LockDocument,
    LockedPackage,
    SdistSource,
    Source,
    VcsSource,
    sorted_packages,
)
from monorepo.project.targets import Target
from monorepo.resolve.finder import GitRelease, IndexFinder, IndexRelease
from monorepo.resolve.resolver import Policy, Resolution, Scope, resolve

if TYPE_CHECKING:
    from monorepo.index.client import IndexClient


class NoSdistError(MonorepoError):
    """A locked version has no source distribution to vendor."""

    code = "no-sdist"


def scopes_of(config: ProjectConfig) -> list[Scope]:
    scopes = [Scope("project", "", config.dependencies)]
    scopes += [
        Scope("extra", name, reqs) for name, reqs in sorted(config.optional_dependencies.items())
    ]
    scopes += [
        Scope("group", name, reqs) for name, reqs in sorted(config.dependency_groups.items())
    ]
    return scopes


def target_marker(target: Target) -> str:
    """The PEP 508 marker that singles out one target environment."""
    env = target.marker_environment()
    return (
        f"python_version == '{env['python_version']}' and sys_platform == '{env['sys_platform']}'"
        f" and platform_machine == '{env['platform_machine']}'"
        f" and implementation_name == '{env['implementation_name']}'"
    )


def scope_marker(scope_ids: Iterable[str]) -> str | None:
    """``None`` when the project itself needs the package, else the extras/groups that do."""
    ids = set(scope_ids)
    if ":project" in ids:
        return None
    parts = []
    for sid in sorted(ids):
        _, kind, name = sid.split(":", 2)
        parts.append(f"'{name}' in extras" if kind == "extra" else f"'{name}' in dependency_groups")
    return " or ".join(parts) if parts else None


def package_marker(per_target: Mapping[str, str | None], targets: Sequence[Target]) -> str | None:
    """Combine per-target scope markers into the package's lock marker.

    *per_target* maps the names of the targets needing this entry to its scope
    marker there.  When every target needs it in the same way, the target part
    is left out; otherwise each target contributes ``(target and scope)``.
    """
    scopes = set(per_target.values())
    if len(per_target) == len(targets) and len(scopes) == 1:
        return next(iter(scopes))
    parts = []
    for t in targets:
        if t.name not in per_target:
            continue
        scope = per_target[t.name]
        tm = target_marker(t)
        parts.append(f"({tm})" if scope is None else f"({tm} and ({scope}))")
    return " or ".join(parts)


def source_urls(config: ProjectConfig) -> dict[NormalizedName, str]:
    out = {}
    for name, s in config.sources.items():
        url = f"git+{s.url}" + (f"@{s.rev}" if s.rev else "")
        if s.subdirectory:
            url += f"#subdirectory={s.subdirectory}"
        out[name] = url
    return out


def overlay_tool(matched: MatchedRule | None) -> dict[str, Any]:
    """What the lock records of the overlay rule applied to a package."""
    if matched is None:
        return {}
    rule, overlay = matched.rule, matched.overlay
    tool: dict[str, Any] = {
        "overlay": {
            "name": overlay.name,
            "commit": overlay.commit or overlay.fingerprint,
            "rule": rule.index,
            "versions": str(rule.versions),
            "reason": rule.reason,
        }
    }
    if rule.patches:
        tool["patches"] = [{"path": p.path, "sha256": p.sha256} for p in rule.patches]
    if rule.c_extension is not None:
        tool["c-extension"] = rule.c_extension
    if rule.cross_compile is not None:
        tool["cross-compile"] = rule.cross_compile
    if rule.system_libraries:
        tool["system-libraries"] = {k: list(v) for k, v in sorted(rule.system_libraries.items())}
    if rule.build_env:
        tool["build-env"] = dict(sorted(rule.build_env.items()))
    if rule.host_tools:
        tool["host-tools"] = dict(sorted(rule.host_tools.items()))
    if rule.config_settings:
        tool["config-settings"] = _settings_table(rule.config_settings)
    if rule.target_config_settings:
        tool["target-config-settings"] = {
            k: _settings_table(v) for k, v in sorted(rule.target_config_settings.items())
        }
    return tool


def _settings_table(settings: Mapping[str, str | tuple[str, ...]]) -> dict[str, Any]:
    return {k: v if isinstance(v, str) else list(v) for k, v in sorted(settings.items())}


def replaced_source(matched: MatchedRule | None) -> VcsSource | ArchiveSource | None:
    """An overlay's replacement source, which is then what gets vendored and locked."""
    if matched is None or matched.rule.source is None:
        return None
    src = matched.rule.source
    if isinstance(src, GitReplacement):
        return VcsSource(url=src.git, commit=src.commit, requested=None)
    assert isinstance(src, UrlReplacement)
    return ArchiveSource(url=src.url, sha256=src.sha256)


def merge(
    resolutions: Mapping[str, Resolution],
    targets: Sequence[Target],
    *,
    overlays: OverlaySet | None = None,
    role: str = "runtime",
) -> list[LockedPackage]:
    """One lock entry per (package, version, source), with markers for who needs it."""
    entries: dict[tuple[NormalizedName, Version, object], dict[str, Any]] = {}
    for target in targets:
        res = resolutions[target.name]
        for name, cand in res.packages.items():
            key = (name, cand.version, _source_key(cand.source))
            entry = entries.setdefault(
                key,
                {"cand": cand, "targets": {}, "deps": set(), "rp": res.requires_python.get(name)},
            )
            entry["targets"][target.name] = scope_marker(res.scopes.get(name, ()))
            for dep in res.edges.get(name, ()):
                entry["deps"].add((dep, res.packages[dep].version))
    versions: dict[NormalizedName, set[Version]] = {}
    for key in entries:
        versions.setdefault(key[0], set()).add(key[1])
    errors = []
    packages = []
    for (pkg, version, _), entry in sorted(entries.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        cand = entry["cand"]
        source: Source
        index = None
        matched = overlays.rule_for(pkg, version) if overlays else None
        replacement = replaced_source(matched)
        if replacement is not None:
            source = replacement
        elif isinstance(cand.source, IndexRelease):
            sdist = cand.source.sdist
            if sdist is None or sdist.sha256 is None:
                errors.append(f"{pkg} {version}" + ("" if sdist is None else " (no sha256 given)"))
                continue
            source = SdistSource(
                url=sdist.url, sha256=sdist.sha256, size=sdist.size, upload_time=sdist.upload_time
            )
            index = sdist.index_url
        elif isinstance(cand.source, GitRelease):
            source = VcsSource(
                url=cand.source.url,
                commit=cand.source.commit,
                requested=cand.source.requested,
                subdirectory=cand.source.subdirectory,
            )
        else:  # pragma: no cover
            raise TypeError(cand.source)
        deps = tuple(
            (dep, dv if len(versions.get(dep, ())) > 1 else None)
            for dep, dv in sorted(entry["deps"], key=lambda d: (d[0], d[1]))
        )
        deps = tuple(dict.fromkeys(deps))
        multi = len(versions[pkg]) > 1
        tool: dict[str, Any] = {"dir": f"{pkg}-{version}" if multi else str(pkg), "role": role}
        if role == "runtime":
            tool["targets"] = sorted(entry["targets"])
        tool.update(overlay_tool(matched))
        packages.append(
            LockedPackage(
                name=pkg,
                version=version,
                source=source,
                marker=package_marker(entry["targets"], targets),
                requires_python=str(entry["rp"]) if entry["rp"] else None,
                index=index,
                dependencies=deps,
                tool=tool,
            )
        )
    if errors:
        raise NoSdistError(
            "No source distribution for "
            + ", ".join(errors)
            + ": monorepo vendors and builds from hashed sources, and the index offers no"
            " sdist with a sha256 for "
            + ("this version" if len(errors) == 1 else "these versions")
            + ". Constrain to a version that has an sdist ([tool.monorepo] constraints), or add an overlay "
            "rule with a `source` (git commit or url + sha256) for the package."
        )
    return packages


def _source_key(source: object) -> object:
    if isinstance(source, GitRelease):
        return ("git", source.url, source.commit)
    return "index"


def resolve_document(
    config: ProjectConfig,
    client: IndexClient,
    index_urls: Sequence[str],
    overlays: OverlaySet,
    preferred: Mapping[NormalizedName, Version],
    offline: bool,
    reporter: Reporter,
    cache: CacheDir,
) -> LockDocument:
    """Resolve every target, merge, close over build dependencies: the new lock.

    *preferred* (the existing lock's runtime versions) steers the runtime resolutions
    only: the build closure is a function of the runtime set and the index
    (:mod:`monorepo.locking.buildclosure`), so a relock, ``-U`` and ``verify --resolve`` agree.
    """
    with SourcesAhead(cache, overlays, offline=offline or not config.build_dependencies) as ahead:
        return _resolve_document(
            config, client, index_urls, overlays, preferred, offline, reporter, cache, ahead
        )


def _resolve_document(
    config: ProjectConfig,
    client: IndexClient,
    index_urls: Sequence[str],
    overlays: OverlaySet,
    preferred: Mapping[NormalizedName, Version],
    offline: bool,
    reporter: Reporter,
    cache: CacheDir,
    ahead: SourcesAhead,
) -> LockDocument:
    resolutions: dict[str, Resolution] = {}
    sources = source_urls(config)
    for target in config.targets:
        reporter.task(f"resolve:{target.name}", f"Resolving for {target.name}")
        finder = IndexFinder(
            client,
            target,
            cache=cache,
            exclude_newer=config.exclude_newer,
            offline=offline,
            overlays=overlays,
        )
        policy = _policy(config, target, prefer_previous(preferred, resolutions), sources)
        try:
            resolutions[target.name] = resolve(
                scopes_of(config), finder, policy, target=target.name, reporter=ahead
            )
        except Exception:  # a conflict ends the task; Ctrl-C leaves it open (unfinished)
            reporter.done(f"resolve:{target.name}")
            raise
        reporter.done(f"resolve:{target.name}")
    packages = merge(resolutions, config.targets, overlays=overlays)
    if config.build_dependencies:
        packages = _with_build_dependencies(
            packages, config, client, overlays, sources, offline, reporter, cache, ahead
        )
    return LockDocument(
        packages=sorted_packages(packages),
        inputs=canonical_inputs(config, index_urls, overlays.canonical()),
        environments=tuple(target_marker(t) for t in config.targets),
        requires_python=str(config.requires_python) if config.requires_python else None,
        extras=tuple(sorted(config.optional_dependencies)),
        dependency_groups=tuple(
            sorted(
                {*config.dependency_groups, *(BUILD_GROUP for p in packages if p.role == "build")}
            )
        ),
    )


def _with_build_dependencies(
    packages: list[LockedPackage],
    config: ProjectConfig,
    client: IndexClient,
    overlays: OverlaySet,
    sources: Mapping[NormalizedName, str],
    offline: bool,
    reporter: Reporter,
    cache: CacheDir,
    ahead: SourcesAhead,
) -> list[LockedPackage]:
    """The sources pass: annotate every package and lock the build closure for the build host."""
    host = build_host()
    finder = IndexFinder(
        client,
        host,
        cache=cache,
        exclude_newer=config.exclude_newer,
        offline=offline,
        overlays=overlays,
    )

    def resolve_build(
        scopes: Sequence[Scope], preferred: Mapping[NormalizedName, Version]
    ) -> Resolution:
        return resolve(scopes, finder, _policy(config, host, preferred, sources), reporter=ahead)

    def merge_build(resolution: Resolution) -> list[LockedPackage]:
        return merge({host.name: resolution}, [host], overlays=overlays, role="build")

    backend = client.backend
    return close_over_build_dependencies(
        packages,
        resolve_build=resolve_build,
        merge_build=merge_build,
        ask_backend=(
            None
            if backend is None
            else lambda tree, build, what, identity: backend.build_requirements(
                tree, build, what=what, identity=identity
            )
        ),
        overlays=overlays,
        offline=offline,
        reporter=reporter,
        cache=cache,
        crate_index=config.crate_index,
    )


def _policy(
    config: ProjectConfig,
    target: Target,
    preferred: Mapping[NormalizedName, Version],
    sources: Mapping[NormalizedName, str],
) -> Policy:
    """The resolution knobs for one environment: the project's, evaluated for *target*."""
    env = target.marker_environment()
    return Policy(
        environment=env,
        python_version=Version(env["python_full_version"]),
        prereleases=config.prereleases,
        exclude_newer=config.exclude_newer,
        constraints=config.constraints,
        overrides=config.overrides,
        preferred=dict(preferred),
        sources=sources,
    )


def prefer_previous(
    preferred: Mapping[NormalizedName, Version], done: Mapping[str, Resolution]
) -> dict[NormalizedName, Version]:
    """Prefer the lock's versions, then what earlier targets chose (fewer divergences)."""
    out = dict(preferred)
    for res in done.values():
        for name, cand in res.packages.items():
            out.setdefault(name, cand.version)
    return out
