"""``monorepo lock``: from a project's configuration to its pylock.toml.

This module is the edge where configuration, the index client and the resolver
meet: it resolves each target, merges the per-target results into one lock
(one entry per package version, with a marker saying which targets and which
extras or groups need it), and writes the file atomically.  The pure pieces it
uses (markers, inputs, freshness) are functions here and in :mod:`freshness`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from . import __version__, lockmemo, warmstart, workerproc
from .buildclosure import build_host, close_over_build_dependencies
from .config import ProjectConfig, load_config, resolve_index_url
from .errors import LockFileError, MonorepoError
from .finder import GitRelease, IndexFinder, IndexRelease
from .freshness import canonical_inputs, stale_reasons
from .lockfile import (
    BUILD_GROUP,
    LOCK_NAME,
    RENDERER,
    ArchiveSource,
    LockDocument,
    LockedPackage,
    SdistSource,
    Source,
    VcsSource,
    parse,
    render,
    render_data,
    sorted_packages,
    write_atomic,
)
from .overlays import GitReplacement, MatchedRule, OverlaySet, UrlReplacement, project_overlays
from .paths import cache_root
from .reporter import NullReporter, Reporter
from .resolver import Policy, Resolution, Scope, resolve
from .targets import Target

if TYPE_CHECKING:
    from .index import IndexClient


class NoSdistError(MonorepoError):
    """A locked version has no source distribution to vendor."""


@dataclass(frozen=True)
class LockResult:
    """What :func:`lock` did."""

    path: Path
    document: LockDocument
    changed: bool
    #: name -> (old version or None, new version or None) for what changed
    changes: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)


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


def read_existing(path: Path, reporter: Reporter) -> tuple[str, LockDocument] | None:
    """The lock on disk (text and document); None when absent or unreadable (with a warning)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return text, parse(text, path=path)
    except LockFileError as exc:
        reporter.message("warning", f"ignoring the existing lock: {exc}")
        return None


def _render_marker(text: str) -> Path:
    """Where the cache remembers that this version of monorepo rendered exactly *text*."""
    key = hashlib.sha256(f"{__version__}\n{RENDERER}\n{text}".encode()).hexdigest()
    return cache_root() / "rendered" / key[:2] / key


def rendered(document: LockDocument, existing: tuple[str, LockDocument] | None) -> str:
    """``render(document)``, or the text on disk when it already is exactly that.

    Rendering through tomlkit is a tenth of a warm lock, and a relock usually changes
    nothing.  The text on disk is reused only when its data equals the new lock's and the
    cache remembers that this version of monorepo rendered that very text (the marker is
    keyed by the text's digest), so a hand-edited or older-format file is still rewritten.
    """
    if existing is not None:
        text, old = existing
        if render_data(old) == render_data(document) and _render_marker(text).exists():
            return text
    text = render(document)
    with contextlib.suppress(OSError):
        marker = _render_marker(text)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    return text


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
    return tool


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


def lock(
    project: Path | str = ".",
    *,
    upgrade: bool = False,
    upgrade_packages: Sequence[str] = (),
    offline: bool = False,
    index_url: str | None = None,
    reporter: Reporter | None = None,
    write: bool = True,
    exclude_newer: datetime | None = None,
) -> LockResult:
    """Resolve the project at *project* for all its targets and write pylock.toml.

    Versions of an existing lock are preferred (minimal updates); *upgrade*
    releases all of them, *upgrade_packages* only the named ones.  With
    ``write=False`` nothing is written (``verify --resolve`` uses that).
    *exclude_newer* replaces the configured cut-off for this run (``verify
    --resolve`` pins a lock without one to its newest upload time).
    On any failure the existing lock is left untouched.
    """
    from .index import IndexClient

    reporter = reporter or NullReporter()
    config = load_config(Path(project))
    if exclude_newer is not None:
        config = dataclasses.replace(config, exclude_newer=exclude_newer)
    primary, _where = resolve_index_url(config, flag=index_url)
    index_urls = [primary, *config.extra_index_urls]
    path = config.root / LOCK_NAME
    on_disk = read_existing(path, reporter)
    existing = on_disk[1] if on_disk is not None else None
    preferred: dict[NormalizedName, Version] = {}
    preferred_build: dict[NormalizedName, Version] = {}
    if existing is not None and not upgrade:
        released = {canonicalize_name(n) for n in upgrade_packages}
        for p in existing.packages:
            if p.name not in released:
                (preferred if p.role == "runtime" else preferred_build).setdefault(
                    p.name, p.version
                )
    # Other cores read and parse pages while this process resolves (monorepo.indexworker).
    with IndexClient(
        index_urls, offline=offline, reporter=reporter, workers=workerproc.index_workers()
    ) as client:
        # Every page this lock will probably read, fetched at once while the overlays
        # load and the resolver starts (see monorepo.warmstart).
        client.prefetch(_likely_pages(config, existing))
        overlays = project_overlays(config, existing, upgrade=upgrade, offline=offline)
        # Audits (write=False) always resolve; git sources can move without any page changing.
        key = None
        if write and not config.sources:
            key = _memo_key(config, index_urls, overlays, preferred, preferred_build)
        reused = _reuse(key, client, path, reporter) if key is not None else None
        if reused is not None:
            text, document = reused
        else:
            document = _resolve_document(
                config, client, index_urls, overlays, preferred, preferred_build, offline, reporter
            )
            text = rendered(document, on_disk)
            if key is not None and all(_from_index(p) for p in document.packages):
                lockmemo.store(key, lockmemo.Memo(pages=client.pages_read(), text=text))
    changed = write_atomic(path, text) if write else False
    if write:
        warmstart.remember(config.root, (p.name for p in document.packages))
    return LockResult(
        path=path, document=document, changed=changed, changes=diff_versions(existing, document)
    )


def _memo_key(
    config: ProjectConfig,
    index_urls: Sequence[str],
    overlays: OverlaySet,
    preferred: Mapping[NormalizedName, Version],
    preferred_build: Mapping[NormalizedName, Version],
) -> str:
    """Everything besides the index pages that decides this lock (see ``lockmemo``)."""
    return lockmemo.memo_key(
        {
            "monorepo": __version__,
            "renderer": RENDERER,
            "root": str(config.root),
            "inputs": canonical_inputs(config, index_urls, overlays.canonical()),
            "exclude-newer": config.exclude_newer.isoformat() if config.exclude_newer else None,
            "preferred": sorted((str(n), str(v)) for n, v in preferred.items()),
            "preferred-build": sorted((str(n), str(v)) for n, v in preferred_build.items()),
            "build-host": build_host().canonical() if config.build_dependencies else None,
        }
    )


def _from_index(pkg: LockedPackage) -> bool:
    """Whether all *pkg* is comes from index pages (no git, no direct or overlay URL)."""
    return bool(pkg.index) and type(pkg.source) is SdistSource


def _reuse(
    key: str, client: IndexClient, path: Path, reporter: Reporter
) -> tuple[str, LockDocument] | None:
    """The remembered lock for *key* when every page it read is unchanged, else None."""
    memo = lockmemo.load(key)
    if memo is None or not client.pages_unchanged(memo.pages):
        return None
    try:
        document = parse(memo.text, path=path)
    except LockFileError:
        return None
    reporter.message(
        "debug",
        f"the inputs and the {len(memo.pages)} index pages of the last lock are unchanged:"
        " its resolution is reused",
    )
    return memo.text, document


def _resolve_document(
    config: ProjectConfig,
    client: IndexClient,
    index_urls: Sequence[str],
    overlays: OverlaySet,
    preferred: Mapping[NormalizedName, Version],
    preferred_build: Mapping[NormalizedName, Version],
    offline: bool,
    reporter: Reporter,
) -> LockDocument:
    """Resolve every target, merge, close over build dependencies: the new lock."""
    resolutions: dict[str, Resolution] = {}
    sources = source_urls(config)
    for target in config.targets:
        reporter.task(f"resolve:{target.name}", f"Resolving for {target.name}")
        finder = IndexFinder(
            client,
            target,
            exclude_newer=config.exclude_newer,
            offline=offline,
            overlays=overlays,
        )
        policy = _policy(config, target, _prefer_previous(preferred, resolutions), sources)
        resolutions[target.name] = resolve(scopes_of(config), finder, policy)
        reporter.done(f"resolve:{target.name}")
    packages = merge(resolutions, config.targets, overlays=overlays)
    if config.build_dependencies:
        packages = _with_build_dependencies(
            packages, config, client, overlays, dict(preferred_build), sources, offline, reporter
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


def _likely_pages(config: ProjectConfig, existing: LockDocument | None) -> list[str]:
    """The project pages a lock of *config* will probably read, most certain first.

    The root requirements that apply to some target, then the packages of the existing
    lock, then those the last lock of this project wrote (``warmstart``): a hint only.
    """
    envs = [dict(t.marker_environment(), extra="") for t in config.targets]
    names: list[str] = [
        canonicalize_name(r.name)
        for scope in scopes_of(config)
        for r in scope.requirements
        if r.marker is None or any(r.marker.evaluate(e) for e in envs)
    ]
    if existing is not None:
        names += [p.name for p in existing.packages]
    names += warmstart.remembered(config.root)
    return list(dict.fromkeys(names))


def _with_build_dependencies(
    packages: list[LockedPackage],
    config: ProjectConfig,
    client: IndexClient,
    overlays: OverlaySet,
    preferred_build: Mapping[NormalizedName, Version],
    sources: Mapping[NormalizedName, str],
    offline: bool,
    reporter: Reporter,
) -> list[LockedPackage]:
    """The sources pass: annotate every package and lock the build closure for the build host."""
    host = build_host()
    finder = IndexFinder(
        client, host, exclude_newer=config.exclude_newer, offline=offline, overlays=overlays
    )

    def resolve_build(scope: Scope, runtime: Mapping[NormalizedName, Version]) -> Resolution:
        policy = _policy(config, host, {**preferred_build, **runtime}, sources)
        reporter.task("resolve:build", "Resolving build dependencies")
        try:
            return resolve([scope], finder, policy)
        finally:
            reporter.done("resolve:build")

    def merge_build(resolution: Resolution) -> list[LockedPackage]:
        return merge({host.name: resolution}, [host], overlays=overlays, role="build")

    return close_over_build_dependencies(
        packages,
        resolve_build=resolve_build,
        merge_build=merge_build,
        overlays=overlays,
        offline=offline,
        reporter=reporter,
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


def _prefer_previous(
    preferred: Mapping[NormalizedName, Version], done: Mapping[str, Resolution]
) -> dict[NormalizedName, Version]:
    """Prefer the lock's versions, then what earlier targets chose (fewer divergences)."""
    out = dict(preferred)
    for res in done.values():
        for name, cand in res.packages.items():
            out.setdefault(name, cand.version)
    return out


def diff_versions(
    old: LockDocument | None, new: LockDocument
) -> dict[str, tuple[str | None, str | None]]:
    """package -> (old versions, new versions) for every package whose versions differ."""

    def versions(doc: LockDocument | None) -> dict[str, str]:
        out: dict[str, list[str]] = {}
        for p in doc.packages if doc else ():
            out.setdefault(p.name, []).append(str(p.version))
        return {k: ", ".join(sorted(v)) for k, v in out.items()}

    before, after = versions(old), versions(new)
    return {
        name: (before.get(name), after.get(name))
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    }


@dataclass(frozen=True)
class CheckResult:
    """What :func:`check` found: ``fresh`` or the reasons the lock is stale."""

    path: Path
    fresh: bool
    reasons: tuple[str, ...]


def check(project: Path | str = ".", *, index_url: str | None = None) -> CheckResult:
    """Whether pylock.toml is fresh for the project, without touching the network.

    The same semantic rule as uv's ``lock --check`` (see :mod:`monorepo.freshness`).
    A missing or unreadable lock is stale, not an error.
    """

    config = load_config(Path(project))
    primary, _ = resolve_index_url(config, flag=index_url)
    path = config.root / LOCK_NAME
    try:
        existing = parse(path.read_text(encoding="utf-8"), path=path)
    except FileNotFoundError:
        return CheckResult(path, False, (f"{path} does not exist",))
    except LockFileError as exc:
        return CheckResult(path, False, (str(exc),))
    overlays = project_overlays(config, existing, upgrade=False)
    inputs = canonical_inputs(config, [primary, *config.extra_index_urls], overlays.canonical())
    reasons = stale_reasons(config, existing, inputs)
    return CheckResult(path, not reasons, tuple(reasons))
