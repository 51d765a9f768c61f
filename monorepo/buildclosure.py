"""The sources pass of ``lock``: lock everything needed to *build* the set, too.

With ``build-dependencies = true`` every locked source is fetched, patched by its
overlay rule in a scratch copy, and its ``[build-system]`` read; the union of all
build requirements is resolved for the build host, and the packages that brings
in are themselves fetched and read, until the closure is complete.  The result:
``duni/`` alone can build the whole set offline (DESIGN.md sections 4 and 8).

Build-only packages are marked so a PEP 751 installer skips them by default: the
``build`` dependency group and the marker ``'build' in dependency_groups``.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import NormalizedName
from packaging.version import Version

from .buildsystem import read_build_system
from .errors import ResolutionError
from .lockfile import BUILD_GROUP, ArchiveSource, LockedPackage, SdistSource
from .overlays import OverlaySet
from .reporter import NullReporter, Reporter
from .resolver import Resolution, Scope
from .targets import Target

#: resolves one scope for the build host; supplied by the locker (index, policy)
ResolveBuild = Callable[[Scope, Mapping[NormalizedName, Version]], Resolution]
#: merges a build resolution into lock entries; supplied by the locker
MergeBuild = Callable[[Resolution], list[LockedPackage]]

MAX_ROUNDS = 20


def annotate(
    packages: Sequence[LockedPackage],
    *,
    overlays: OverlaySet,
    offline: bool,
    reporter: Reporter,
    jobs: int = 8,
) -> list[LockedPackage]:
    """Add tree-hash and build-system fields to every package that lacks them.

    Each source is downloaded for this anyway, so an sdist or archive whose index gave
    no size (a PEP 503 HTML page has none) gets the size of the verified download: the
    lock then records the same identity (url, size, sha256) whatever the index format.
    """
    from .cache import ContentStore
    from .http import HttpClient
    from .sources import fetch_source, materialize_entries
    from .treehash import hash_entries

    store = ContentStore()
    todo = [p for p in packages if "tree-hash" not in p.tool]
    if not todo:
        return list(packages)
    # one client for all downloads of this pass: pooled connections, not one per package
    http = HttpClient(offline=offline, reporter=reporter)
    reporter.task("sources", "Fetching and patching sources", total=len(todo))

    def one(pkg: LockedPackage) -> LockedPackage:
        matched = overlays.rule_for(pkg.name, pkg.version)
        rule = matched.rule if matched is not None else None
        what = f"{pkg.name} {pkg.version}"
        fetched = fetch_source(pkg, store=store, fetch=http.stream, offline=offline)
        with tempfile.TemporaryDirectory(prefix="monorepo-src-") as tmp:
            tree = Path(tmp) / "tree"
            tree_hash = hash_entries(
                materialize_entries(
                    pkg,
                    tree,
                    patches=rule.patches if rule else (),
                    store=store,
                    fetched=lambda: fetched,
                )
            )
            build = read_build_system(
                tree, what=what, override=rule.build_requires if rule else None
            )
        reporter.advance("sources")
        tool = dict(pkg.tool)
        tool["tree-hash"] = tree_hash
        tool.update(build.to_tool())
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
    reporter.done("sources")
    return [done.get(i, p) for i, p in enumerate(packages)]


def build_requirements(packages: Iterable[LockedPackage]) -> tuple[Requirement, ...]:
    """The union of the build requirements the packages record, deduplicated, sorted."""
    seen: dict[str, Requirement] = {}
    for pkg in packages:
        for text in pkg.tool.get("build-requires", ()):
            seen.setdefault(str(Requirement(text)), Requirement(text))
    return tuple(seen[k] for k in sorted(seen))


def close_over_build_dependencies(
    runtime: Sequence[LockedPackage],
    *,
    resolve_build: ResolveBuild,
    merge_build: MergeBuild,
    overlays: OverlaySet,
    offline: bool,
    reporter: Reporter | None = None,
) -> list[LockedPackage]:
    """Runtime packages (annotated) plus every build-only package, annotated too.

    Each package's build requirements are resolved on their own, as its build
    environment is its own (PEP 517 isolation): two sdists may need incompatible
    setuptools, which one joint resolution could not express.  Versions chosen
    earlier are preferred, so the set stays small; identical requirement sets
    resolve once.  Every package records its ``build-closure`` (the exact
    ``name==version`` set its build environment needs).
    """
    reporter = reporter or NullReporter()
    level = annotate(runtime, overlays=overlays, offline=offline, reporter=reporter)
    done: list[LockedPackage] = []
    known: dict[tuple[str, Version], LockedPackage] = {(p.name, p.version): p for p in level}
    preferred: dict[NormalizedName, Version] = {p.name: p.version for p in level}
    cache: dict[tuple[str, ...], tuple[list[LockedPackage], list[str]]] = {}
    for _ in range(MAX_ROUNDS):
        if not level:
            return finish(done)
        discovered: dict[tuple[str, Version], LockedPackage] = {}
        for pkg in sorted(level, key=lambda p: (p.name, p.version)):
            requirements = build_requirements([pkg])
            key = tuple(str(r) for r in requirements)
            if key not in cache:
                if not requirements:
                    cache[key] = ([], [])
                else:
                    try:
                        resolution = resolve_build(
                            Scope("group", BUILD_GROUP, requirements), preferred
                        )
                    except ResolutionError as exc:
                        raise ResolutionError(
                            f"While resolving the build requirements of {pkg.name} {pkg.version} "
                            f"({', '.join(key)}): {exc} An overlay rule's `build-requires` can replace them."
                        ) from None
                    entries = merge_build(resolution)
                    cache[key] = (entries, sorted(f"{e.name}=={e.version}" for e in entries))
                    for e in entries:
                        preferred.setdefault(e.name, e.version)
            entries, closure = cache[key]
            tool = dict(pkg.tool)
            tool["build-closure"] = closure
            done.append(dataclasses.replace(pkg, tool=tool))
            for e in entries:
                k = (e.name, e.version)
                if k not in known and k not in discovered:
                    discovered[k] = e
        level = annotate(
            list(discovered.values()), overlays=overlays, offline=offline, reporter=reporter
        )
        known.update({(p.name, p.version): p for p in level})
    raise ResolutionError("The build-dependency closure did not converge; report this as a bug.")


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
    from .targets import host_target

    host = host_target()
    return dataclasses.replace(host, name="build")
