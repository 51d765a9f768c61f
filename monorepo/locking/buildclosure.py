"""The sources pass of ``lock``: lock everything needed to *build* the set, too.

With ``build-dependencies = true`` every locked source is fetched, patched by its
overlay rule in a scratch copy, and its ``[build-system]`` read; all build requirements
are resolved together for the build host (one version of each tool, split only where
requirements conflict), and the packages that brings in are themselves fetched and
read, until the closure is complete.  The result: ``duni/`` alone can build the whole
set offline (DESIGN.md sections 4 and 8).

The closure is a function of the runtime packages and the index, never of an existing
lock, a cache, the number of workers or the order answers arrive in: so a relock,
``lock -U`` and ``verify --resolve`` all give the same bytes.

Build-only packages are marked so a PEP 751 installer skips them by default: the
``build`` dependency group and the marker ``'build' in dependency_groups``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from monorepo._core.fstree import temporary_directory
from monorepo._core.paths import CacheDir
from monorepo._core.reporter import NullReporter, Reporter
from monorepo.errors import ResolutionError
from monorepo.overlays.rules import OverlaySet
from monorepo.project.lockfile import BUILD_GROUP, ArchiveSource, LockedPackage, SdistSource
from monorepo.project.pyproject import BuildSystem, build_requirer, read_build_system
from monorepo.project.targets import Target
from monorepo.resolve.resolver import Resolution, Scope

#: resolves scopes together for the build host, preferring the given versions; supplied by
#: the locker (index, policy)
ResolveBuild = Callable[[Sequence[Scope], Mapping[NormalizedName, Version]], Resolution]
#: merges a build resolution into lock entries; supplied by the locker
MergeBuild = Callable[[Resolution], list[LockedPackage]]
#: what a tree's backend adds to its static build requirements when asked (its
#: ``get_requires_for_build_wheel``), None when it cannot say: (tree, build system, what,
#: tree hash) -> requirements; supplied by the locker (:meth:`BuildBackend.build_requirements`)
AskBackend = Callable[[Path, BuildSystem, str, str], "tuple[str, ...] | None"]

MAX_ROUNDS = 20


def annotate(
    packages: Sequence[LockedPackage],
    *,
    overlays: OverlaySet,
    offline: bool,
    reporter: Reporter,
    cache: CacheDir,
    jobs: int = 8,
    ask_backend: AskBackend | None = None,
    crate_index: str | None = None,
    own_task: bool = True,
) -> list[LockedPackage]:
    """Add tree-hash and build-system fields to every package that lacks them.

    Where static ``[build-system] requires`` are not enough (a backend of
    :data:`~monorepo.project.pyproject.DYNAMIC_BACKENDS`), *ask_backend* runs its
    ``get_requires_for_build_wheel`` on the patched tree: what it adds joins
    ``build-requires`` and is listed in ``build-requires-backend`` (the provenance errors
    and ``why`` name), except programs the overlay rule declares as ``host-tools``
    (meson-python's ``ninja``, ``patchelf``): those are checked on the build machine,
    never built from source.

    A package whose tree has a ``Cargo.lock`` gets its ``crates`` too
    (:mod:`monorepo.locking.crates`), downloaded from *crate_index* (the project's
    ``crate-index``; the environment's or cargo's when None).

    Progress is task ``sources``, one step per package; with ``own_task=False`` the
    caller has opened it (once, for several calls) and closes it.

    Each source is downloaded for this anyway, so an sdist or archive whose index gave
    no size (a PEP 503 HTML page has none) gets the size of the verified download: the
    lock then records the same identity (url, size, sha256) whatever the index format.
    """
    from monorepo.index.http import HttpClient
    from monorepo.locking.crates import CrateLocker
    from monorepo.sources.fetch import fetch_source, materialize_entries
    from monorepo.sources.store import ContentStore
    from monorepo.sources.treehash import hash_entries

    store = ContentStore(cache.store)
    todo = [p for p in packages if "tree-hash" not in p.tool]
    if not todo:
        return list(packages)
    # one client for all downloads of this pass: pooled connections, not one per package
    http = HttpClient(offline=offline, reporter=reporter)
    if own_task:
        reporter.task("sources", "Fetching and patching sources", total=len(todo))
    crates = CrateLocker(
        setting=crate_index,
        store=store,
        get=lambda url: http.get(url).body,
        fetch=http.stream,
        offline=offline,
        warn=lambda message: reporter.message("warning", message),
    )

    def one(pkg: LockedPackage) -> LockedPackage:
        matched = overlays.rule_for(pkg.name, pkg.version)
        rule = matched.rule if matched is not None else None
        what = f"{pkg.name} {pkg.version}"
        fetched = fetch_source(pkg, store=store, cache=cache, fetch=http.stream, offline=offline)
        # Removed at any depth (a git source's tree is not capped like an archive's).
        with temporary_directory(prefix="monorepo-src-") as tmp:
            tree = tmp / "tree"
            tree_hash = hash_entries(
                materialize_entries(
                    pkg,
                    tree,
                    patches=rule.patches if rule else (),
                    store=store,
                    cache=cache,
                    fetched=lambda: fetched,
                )
            )
            build = read_build_system(
                tree, what=what, override=rule.build_requires if rule else None
            )
            asked = None
            if ask_backend is not None and build.asks_backend:
                asked = ask_backend(tree, build, what, tree_hash)
            locked_crates = crates.lock(tree, what)
        reporter.advance("sources")
        tool = dict(pkg.tool)
        tool["tree-hash"] = tree_hash
        tool.update(build.to_tool())
        tools = {canonicalize_name(t) for t in (rule.host_tools if rule else ())}
        kept = sorted(r for r in asked or () if canonicalize_name(Requirement(r).name) not in tools)
        if kept:
            tool["build-requires"] = sorted({*tool["build-requires"], *kept})
            tool["build-requires-backend"] = kept
        if locked_crates:
            tool["crates"] = locked_crates
        source = pkg.source
        if isinstance(source, SdistSource | ArchiveSource) and source.size is None:
            source = dataclasses.replace(source, size=fetched.stat().st_size)
        return dataclasses.replace(pkg, tool=tool, source=source)

    done: dict[int, LockedPackage] = {}
    with http, ThreadPoolExecutor(max_workers=jobs) as pool:
        for i, result in zip(
            [i for i, p in enumerate(packages) if "tree-hash" not in p.tool],
            pool.map(one, todo),
            strict=True,
        ):
            done[i] = result
    if own_task:
        reporter.done("sources")
    return [done.get(i, p) for i, p in enumerate(packages)]


def build_requirements(packages: Iterable[LockedPackage]) -> tuple[Requirement, ...]:
    """The union of the build requirements the packages record, deduplicated, sorted."""
    seen: dict[str, Requirement] = {}
    for pkg in packages:
        for text in pkg.tool.get("build-requires", ()):
            seen.setdefault(str(Requirement(text)), Requirement(text))
    return tuple(seen[k] for k in sorted(seen))


@dataclass(frozen=True)
class _Unit:
    """One distinct set of build requirements, and the packages whose builds need it.

    Packages with equal requirements always share a build environment, so the
    partition below works on units, not packages: fewer resolutions, and two
    packages asking for the same thing can never end up with different tools.
    """

    key: tuple[str, ...]
    requirements: tuple[Requirement, ...]
    packages: tuple[str, ...]  # "name version", for messages
    #: who asks, per package: "lxml 6.2.0's build settings (sdist pyproject.toml)"
    requirers: tuple[str, ...] = ()

    @property
    def scope(self) -> Scope:
        # the key names the scope: the same unit is the same root in every resolution
        return Scope(
            "group",
            f"{BUILD_GROUP}:{' | '.join(self.key)}",
            self.requirements,
            description=self.asked_by,
        )

    @property
    def asked_by(self) -> str:
        """The requirers (package, version, origin), for messages: the first three and how many more."""
        more = len(self.requirers) - 3
        return "; ".join(self.requirers[:3]) + (f" and {more} more" if more > 0 else "")

    @property
    def label(self) -> str:
        """The packages, for messages: the first three and how many more."""
        more = len(self.packages) - 3
        return ", ".join(self.packages[:3]) + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class _Group:
    """Units whose build requirements resolve together, and that one resolution."""

    units: tuple[_Unit, ...]
    resolution: Resolution


def _units(members: Iterable[LockedPackage], overlays: OverlaySet) -> list[_Unit]:
    """The distinct non-empty build-requirement sets of *members*, sorted by key.

    Each package is named with where its build requirements come from (the label of
    :func:`~monorepo.project.pyproject.build_requirer`), so that a build requirement no
    version meets is blamed on the right package and the right file.
    """
    del overlays  # the origin is recorded in each package's tool table
    by_key: dict[tuple[str, ...], tuple[tuple[Requirement, ...], dict[str, str]]] = {}
    for pkg in members:
        requirements = build_requirements([pkg])
        if requirements:
            key = tuple(str(r) for r in requirements)
            label = f"{pkg.name} {pkg.version}"
            where = "sdist" if isinstance(pkg.source, SdistSource) else "source"
            by_key.setdefault(key, (requirements, {}))[1][label] = build_requirer(
                label, pkg.tool, where=where
            )
    return [
        _Unit(key, requirements, tuple(sorted(names)), tuple(names[n] for n in sorted(names)))
        for key, (requirements, names) in sorted(by_key.items())
    ]


def _versions(resolution: Resolution) -> dict[NormalizedName, Version]:
    return {name: cand.version for name, cand in resolution.packages.items()}


def _partition(
    units: Sequence[_Unit],
    resolve_build: ResolveBuild,
    base: Mapping[NormalizedName, Version],
) -> list[_Group]:
    """Split *units* into as few jointly resolvable groups as first-fit finds; resolve each.

    All build requirements are first resolved together, like one environment for every
    build: one version of each tool.  Only when that is impossible (two packages' build
    requirements truly conflict, ``setuptools_scm<8`` beside ``setuptools-scm>=8``) are
    the units split, first-fit in key order: each joins the first group it resolves
    together with, or starts a new one.  Every group is then resolved once more,
    preferring the versions earlier groups chose, so tools that do not conflict are still
    shared.  The answer depends on the units and the index alone: never on a previous
    lock, a cache, or the order anything was downloaded in.
    """
    try:
        return [_Group(tuple(units), resolve_build([u.scope for u in units], base))]
    except ResolutionError:
        if len(units) == 1:
            raise _unit_error(units[0], resolve_build, base) from None
    groups: list[list[_Unit]] = []
    chosen: list[dict[NormalizedName, Version]] = []
    for unit in units:
        for members, versions in zip(groups, chosen, strict=True):
            found = _fits(unit, versions, resolve_build, base)
            if found is None:
                try:
                    resolution = resolve_build(
                        [u.scope for u in (*members, unit)], {**base, **versions}
                    )
                except ResolutionError:
                    continue
                found = _versions(resolution)
                versions.clear()
            members.append(unit)
            versions.update(found)
            break
        else:
            earlier: dict[NormalizedName, Version] = {}
            for versions in chosen:
                earlier = {**versions, **earlier}
            try:
                resolution = resolve_build([unit.scope], {**earlier, **base})
            except ResolutionError:
                raise _unit_error(unit, resolve_build, base) from None
            groups.append([unit])
            chosen.append(_versions(resolution))
    out: list[_Group] = []
    earlier = {}
    for members in groups:
        resolution = resolve_build([u.scope for u in members], {**earlier, **base})
        out.append(_Group(tuple(members), resolution))
        earlier = {**_versions(resolution), **earlier}
    return out


def _fits(
    unit: _Unit,
    versions: Mapping[NormalizedName, Version],
    resolve_build: ResolveBuild,
    base: Mapping[NormalizedName, Version],
) -> dict[NormalizedName, Version] | None:
    """The group's *versions* plus what *unit* adds, when it can use them as they are.

    A cheap test before resolving a whole group again: *unit* resolved alone, preferring
    the group's versions.  When it takes the group's version of every name they share,
    the union is a consistent choice for both (each side's dependencies are satisfied
    within its own half), so the unit belongs to the group.  Otherwise (None) only a
    joint resolution can tell.
    """
    try:
        found = _versions(resolve_build([unit.scope], {**base, **versions}))
    except ResolutionError:
        return None
    if any(versions.get(name, version) != version for name, version in found.items()):
        return None
    return {**versions, **found}


def _unit_error(
    unit: _Unit, resolve_build: ResolveBuild, base: Mapping[NormalizedName, Version]
) -> ResolutionError:
    """The error for build requirements that cannot be resolved even on their own."""
    explanation = None
    try:
        resolve_build([unit.scope], base)
    except ResolutionError as exc:
        reason = str(exc)
        explanation = exc.explanation
    else:  # pragma: no cover - only called after that very resolution failed
        reason = "they cannot be resolved."
    return ResolutionError(
        f"While resolving the build requirements of {unit.label} ({', '.join(unit.key)}),"
        f" asked for by {unit.asked_by}:\n"
        f"{reason}\n"
        "An overlay rule's `build-requires` can replace them.",
        explanation,
    )


def close_over_build_dependencies(
    runtime: Sequence[LockedPackage],
    *,
    resolve_build: ResolveBuild,
    merge_build: MergeBuild,
    overlays: OverlaySet,
    offline: bool,
    cache: CacheDir,
    reporter: Reporter | None = None,
    ask_backend: AskBackend | None = None,
    crate_index: str | None = None,
) -> list[LockedPackage]:
    """Runtime packages (annotated) plus every build-only package, annotated too.

    The build closure is a fixed point: the packages to build are the runtime ones plus
    the build-only packages that resolving all their build requirements chooses
    (:func:`_partition`: one version of each tool unless requirements truly conflict).
    It starts from the runtime packages and repeats with the chosen build-only packages
    until the choice no longer changes, each round resolving from scratch, so the result
    is a function of the runtime set and the index (resolutions prefer the runtime
    versions, so a tool that is also a runtime dependency is vendored once).  Every
    package records its ``build-closure``: the exact ``name==version`` set its build
    environment needs.
    """
    reporter = reporter or NullReporter()
    # One task each for the whole fixed point (not one per round): their counts only
    # grow, and a display keyed by task never sees the same key opened twice.
    reporter.task("sources", "Fetching and patching sources")
    reporter.task("resolve:build", "Resolving build dependencies")
    try:
        return _closure(
            runtime,
            resolve_build,
            merge_build,
            overlays,
            offline,
            reporter,
            cache,
            crate_index,
            ask_backend,
        )
    finally:
        reporter.done("resolve:build")
        reporter.done("sources")


def _closure(
    runtime: Sequence[LockedPackage],
    resolve_build: ResolveBuild,
    merge_build: MergeBuild,
    overlays: OverlaySet,
    offline: bool,
    reporter: Reporter,
    cache: CacheDir,
    crate_index: str | None,
    ask_backend: AskBackend | None,
) -> list[LockedPackage]:
    def annotated_copies(packages: Sequence[LockedPackage]) -> list[LockedPackage]:
        return annotate(
            packages,
            overlays=overlays,
            offline=offline,
            reporter=reporter,
            cache=cache,
            ask_backend=ask_backend,
            crate_index=crate_index,
            own_task=False,  # the caller's one "sources" task counts every round
        )

    runtime = annotated_copies(runtime)
    runtime_keys = {(p.name, p.version) for p in runtime}
    base: dict[NormalizedName, Version] = {}
    for p in runtime:  # the newest where targets disagree
        if p.name not in base or p.version > base[p.name]:
            base[p.name] = p.version
    annotated: dict[tuple[NormalizedName, Version], LockedPackage] = {}
    build_only: list[tuple[NormalizedName, Version]] = []
    for _ in range(MAX_ROUNDS):
        members = [*runtime, *(annotated[k] for k in build_only)]
        units = _units(members, overlays)
        groups = _partition(units, resolve_build, base) if units else []
        reporter.advance("resolve:build")
        entries: dict[tuple[NormalizedName, Version], LockedPackage] = {}
        picked: dict[tuple[NormalizedName, Version], Resolution] = {}
        for group in groups:
            for entry in merge_build(_in_build_group(group.resolution)):
                key = (entry.name, entry.version)
                if key not in runtime_keys and key not in entries:
                    entries[key] = entry
                    picked[key] = group.resolution
        chosen = sorted(entries)
        if chosen == build_only:
            return finish(_assemble(members, groups, picked))
        new = [entries[k] for k in chosen if k not in annotated]
        for p in annotated_copies(new):
            annotated[(p.name, p.version)] = p
        build_only = chosen
    raise ResolutionError("The build-dependency closure did not converge; report this as a bug.")


def _in_build_group(resolution: Resolution) -> Resolution:
    """*resolution* with every package reached from the ``build`` group (its lock marker)."""
    everyone = frozenset({Scope("group", BUILD_GROUP, ()).identifier})
    return dataclasses.replace(resolution, scopes={name: everyone for name in resolution.packages})


def _assemble(
    members: Sequence[LockedPackage],
    groups: Sequence[_Group],
    picked: Mapping[tuple[NormalizedName, Version], Resolution],
) -> list[LockedPackage]:
    """*members* with their ``build-closure``, and dependencies made unambiguous.

    Where the lock holds several versions of a name, a dependency on it names the
    version: the runtime one for a runtime package, for a build-only package the one
    its group resolved.
    """
    closures: dict[tuple[str, ...], list[str]] = {}
    for group in groups:
        for unit in group.units:
            reached = sorted(
                name
                for name, scopes in group.resolution.scopes.items()
                if unit.scope.identifier in scopes
            )
            closures[unit.key] = [
                f"{name}=={group.resolution.packages[name].version}" for name in reached
            ]
    versions: dict[NormalizedName, set[Version]] = {}
    for p in members:
        versions.setdefault(p.name, set()).add(p.version)
    runtime_version = {p.name: p.version for p in members if p.role == "runtime"}
    out = []
    for pkg in members:
        tool = dict(pkg.tool)
        tool["build-closure"] = closures.get(tuple(str(r) for r in build_requirements([pkg])), [])
        resolution = picked.get((pkg.name, pkg.version))
        deps = []
        for name, version in pkg.dependencies:
            if version is None and len(versions.get(name, ())) > 1:
                if pkg.role == "runtime":
                    version = runtime_version.get(name)
                elif resolution is not None and name in resolution.packages:
                    version = resolution.packages[name].version
            deps.append((name, version))
        out.append(dataclasses.replace(pkg, tool=tool, dependencies=tuple(dict.fromkeys(deps))))
    return out


def finish(packages: Sequence[LockedPackage]) -> list[LockedPackage]:
    """Give every entry a unique duni/ directory: ``name`` or, when ambiguous, ``name-version``."""
    counts: dict[str, int] = {}
    for p in packages:
        counts[p.name] = counts.get(p.name, 0) + 1
    out = []
    for p in packages:
        want = f"{p.name}-{p.version}" if counts[p.name] > 1 else str(p.name)
        if p.tool.get("dir") != want:
            tool: dict[str, Any] = dict(p.tool)
            tool["dir"] = want
            p = dataclasses.replace(p, tool=tool)
        out.append(p)
    return out


def build_host() -> Target:
    """The machine that will run the builds: this one (its interpreter's environment)."""
    from monorepo.project.targets import host_target

    host = host_target()
    return dataclasses.replace(host, name="build")
