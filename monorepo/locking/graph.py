"""``monorepo list`` and ``monorepo why``: read the locked dependency graph, from the lock alone.

The graph's nodes are the lock's entries; its edges are each entry's
``dependencies`` (runtime) and, for the build closure, the ``build-requires`` the
lock records for it (an edge to every locked package of that name whose version
satisfies the requirement).  The roots are the project's scopes as the lock's
inputs record them: ``project`` (its dependencies), ``project[extra]`` and
``project (group name)``.  Nothing touches the network or duni/.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name

from monorepo.errors import LockFileError
from monorepo.project import lockfile
from monorepo.project.config import load_config
from monorepo.project.lockfile import LockDocument, LockedPackage, VcsSource
from monorepo.project.pyproject import requirement_origin

__all__ = [
    "DependencyPath",
    "PackageInfo",
    "Step",
    "TargetTree",
    "TreeNode",
    "dependency_paths",
    "dependency_tree",
    "list_packages",
    "tree",
    "why",
]

Via = Literal["runtime", "build"]


@dataclass(frozen=True)
class PackageInfo:
    """One locked package as ``monorepo list`` shows it."""

    name: str
    version: str
    role: str
    source: str
    """The sdist or archive URL, or ``git+URL@commit``."""
    overlay: str | None
    """The overlay whose rule applies (``name`` or ``name (n patches)``), if any."""
    dir: str
    marker: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "role": self.role,
            "source": self.source,
            "overlay": self.overlay,
            "dir": self.dir,
            "marker": self.marker,
        }


_ORIGIN_WORDS = {
    "overlay": "its overlay rule's build-requires",
    "default": "PEP 517's default",
    "backend": "asked by its build backend",
}


@dataclass(frozen=True)
class Step:
    """A package on a path, reached from the previous step by a runtime or a build edge."""

    name: str
    version: str
    via: Via
    #: for a build edge, where the requirement came from when not the source's
    #: pyproject.toml: ``overlay``, ``default`` or ``backend`` (``requirement_origin``)
    origin: str = ""


@dataclass(frozen=True)
class DependencyPath:
    """A path from one project scope to the package asked about."""

    scope: str
    """``project``, ``project[extra]`` or ``project (group name)``."""
    steps: tuple[Step, ...]

    def __str__(self) -> str:
        """``project -> fastapi 0.115 -> starlette 0.38``; a build edge reads ``app 1.0 (build) -> x``."""
        parts = [self.scope]
        for i, step in enumerate(self.steps):
            nxt = self.steps[i + 1] if i + 1 < len(self.steps) else None
            label = f"{step.name} {step.version}"
            if nxt is not None and nxt.via == "build":
                label += f" (build, {_ORIGIN_WORDS[nxt.origin]})" if nxt.origin else " (build)"
            parts.append(label)
        return " -> ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "steps": [
                {"name": s.name, "version": s.version, "via": s.via}
                | ({"origin": s.origin} if s.origin else {})
                for s in self.steps
            ],
            "text": str(self),
        }


def _read(project: Path | str) -> LockDocument:
    config = load_config(Path(project))
    return lockfile.read(config.root / lockfile.LOCK_NAME)


def list_packages(project: Path | str = ".") -> list[PackageInfo]:
    """Every locked package, sorted by name and version (from pylock.toml only)."""
    doc = _read(project)
    out = []
    for pkg in doc.packages:
        source = pkg.source
        shown = f"git+{source.url}@{source.commit}" if isinstance(source, VcsSource) else source.url
        meta = pkg.tool.get("overlay")
        overlay = None
        if isinstance(meta, Mapping) and meta.get("name"):
            overlay = str(meta["name"])
            patches = len(pkg.tool.get("patches", ()))
            if patches:
                overlay += f" ({patches} patch{'es' if patches != 1 else ''})"
        out.append(
            PackageInfo(
                name=str(pkg.name),
                version=str(pkg.version),
                role=pkg.role,
                source=shown,
                overlay=overlay,
                dir=pkg.dir,
                marker=pkg.marker,
            )
        )
    return sorted(out, key=lambda p: (p.name, p.version))


def _requirement_names(reqs: Iterable[object]) -> list[tuple[NormalizedName, Requirement | None]]:
    out: list[tuple[NormalizedName, Requirement | None]] = []
    for text in reqs:
        try:
            req = Requirement(str(text))
        except InvalidRequirement:
            continue
        out.append((canonicalize_name(req.name), req))
    return out


def _matching(
    by_name: Mapping[NormalizedName, list[LockedPackage]],
    name: NormalizedName,
    req: Requirement | None,
) -> list[LockedPackage]:
    candidates = by_name.get(name, [])
    if req is None or req.url:
        return list(candidates)
    chosen = [p for p in candidates if req.specifier.contains(p.version, prereleases=True)]
    return chosen or list(candidates)


def _graph(
    doc: LockDocument,
) -> tuple[
    dict[str, list[LockedPackage]],
    dict[str, list[tuple[LockedPackage, Via]]],
    dict[tuple[str, str], str],
]:
    """(scope -> root packages, dir -> [(next package, edge kind)], (dir, dir) -> the
    origin of a build edge's requirement when not the source's pyproject.toml)."""
    by_name = doc.by_name()
    roots: dict[str, list[LockedPackage]] = {}
    inputs = doc.inputs
    scopes: list[tuple[str, Iterable[object]]] = [("project", inputs.get("dependencies", []))]
    for extra, reqs in sorted((inputs.get("optional-dependencies") or {}).items()):
        scopes.append((f"project[{extra}]", reqs))
    for group, reqs in sorted((inputs.get("dependency-groups") or {}).items()):
        scopes.append((f"project (group {group})", reqs))
    for scope, reqs in scopes:
        found: list[LockedPackage] = []
        for name, req in _requirement_names(reqs):
            found += [p for p in _matching(by_name, name, req) if p not in found]
        roots[scope] = found
    edges: dict[str, list[tuple[LockedPackage, Via]]] = {}
    origins: dict[tuple[str, str], str] = {}
    for pkg in doc.packages:
        out: list[tuple[LockedPackage, Via]] = []
        for name, version in pkg.dependencies:
            for dep in by_name.get(name, []):
                if (version is None or dep.version == version) and (dep, "runtime") not in out:
                    out.append((dep, "runtime"))
        for name, req in _requirement_names(pkg.tool.get("build-requires", ())):
            for dep in _matching(by_name, name, req):
                if (dep, "build") not in out:
                    out.append((dep, "build"))
                    origin = requirement_origin(pkg.tool, str(req)) if req is not None else ""
                    if origin not in ("", "pyproject"):
                        origins[(pkg.dir, dep.dir)] = origin
        edges[pkg.dir] = out
    return roots, edges, origins


def dependency_paths(doc: LockDocument, name: str, *, limit: int = 50) -> list[DependencyPath]:
    """Paths from the project's scopes to every locked version of *name*, shortest first.

    Only simple paths (no package twice) through packages that can reach the
    target are walked; at most *limit* are returned.  Raises
    :class:`~monorepo.errors.LockFileError` when *name* is not locked.
    """
    key = canonicalize_name(name)
    targets = {p.dir for p in doc.packages if p.name == key}
    if not targets:
        raise LockFileError(
            f"{name} is not in pylock.toml; `monorepo list` shows the locked packages"
        )
    roots, edges, origins = _graph(doc)
    # Which packages can reach a target at all: walk the reversed edges from the targets.
    reverse: dict[str, set[str]] = {}
    for src, outs in edges.items():
        for dep, _ in outs:
            reverse.setdefault(dep.dir, set()).add(src)
    useful = set(targets)
    stack = list(targets)
    while stack:
        for src in reverse.get(stack.pop(), ()):
            if src not in useful:
                useful.add(src)
                stack.append(src)
    found: list[DependencyPath] = []

    def walk(scope: str, path: list[tuple[LockedPackage, Via]]) -> None:
        if len(found) >= limit * 4:
            return
        last = path[-1][0]
        if last.dir in targets:
            steps = tuple(
                Step(
                    str(p.name),
                    str(p.version),
                    via,
                    origins.get((path[i - 1][0].dir, p.dir), "") if i and via == "build" else "",
                )
                for i, (p, via) in enumerate(path)
            )
            found.append(DependencyPath(scope, steps))
            return
        on_path = {p.dir for p, _ in path}
        for dep, via in edges.get(last.dir, ()):
            if dep.dir in useful and dep.dir not in on_path:
                walk(scope, [*path, (dep, via)])

    for scope, packages in roots.items():
        for pkg in packages:
            if pkg.dir in useful:
                walk(scope, [(pkg, "runtime")])
    unique = list(dict.fromkeys(found))
    unique.sort(key=lambda p: (len(p.steps), str(p)))
    return unique[:limit]


def why(project: Path | str, name: str, *, limit: int = 50) -> list[DependencyPath]:
    """The dependency paths from *project*'s scopes to the locked package *name*.

    An empty list means the package is locked but no scope reaches it (a stale lock).
    """
    return dependency_paths(_read(project), name, limit=limit)


@dataclass(frozen=True)
class TreeNode:
    """A package in ``monorepo tree``: reached from its parent by a runtime or build edge.

    A package shown already (higher up, or in another branch) is not expanded again:
    its node has ``repeated`` set and no children, as ``cargo tree`` marks ``(*)``.
    """

    name: str
    version: str
    role: str
    """``runtime`` or ``build`` (a build-only package: in no target's runtime set)."""
    via: Via
    children: tuple[TreeNode, ...] = ()
    repeated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "role": self.role,
            "via": self.via,
            "repeated": self.repeated,
            "children": [c.to_dict() for c in self.children],
        }


@dataclass(frozen=True)
class TargetTree:
    """One target's tree: each project scope (``project``, ``project[extra]``, ...) and
    the packages it requires on that target."""

    target: str
    scopes: tuple[tuple[str, tuple[TreeNode, ...]], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "scopes": [
                {"scope": scope, "packages": [n.to_dict() for n in nodes]}
                for scope, nodes in self.scopes
            ],
        }


def dependency_tree(
    doc: LockDocument,
    targets: Iterable[str],
    *,
    build: bool = True,
    depth: int | None = None,
) -> list[TargetTree]:
    """The locked graph of *doc* as one tree per target (see :func:`tree`)."""
    roots, edges, _origins = _graph(doc)
    return [_target_tree(t, roots, edges, build=build, depth=depth) for t in targets]


def _target_tree(
    target: str,
    roots: Mapping[str, list[LockedPackage]],
    edges: Mapping[str, list[tuple[LockedPackage, Via]]],
    *,
    build: bool,
    depth: int | None,
) -> TargetTree:
    seen: set[str] = set()

    def applies(pkg: LockedPackage, via: Via) -> bool:
        if via == "build":
            return build
        return pkg.role == "build" or not pkg.targets or target in pkg.targets

    def node(pkg: LockedPackage, via: Via, level: int) -> TreeNode:
        label = (str(pkg.name), str(pkg.version), pkg.role, via)
        if pkg.dir in seen:
            return TreeNode(*label, repeated=True)
        seen.add(pkg.dir)
        if depth is not None and level >= depth:
            return TreeNode(*label)
        children = tuple(
            node(dep, kind, level + 1)
            for dep, kind in sorted(
                edges.get(pkg.dir, ()), key=lambda e: (e[1] != "runtime", e[0].dir)
            )
            if applies(dep, kind)
        )
        return TreeNode(*label, children=children)

    scopes = tuple(
        (scope, tuple(node(p, "runtime", 1) for p in packages if applies(p, "runtime")))
        for scope, packages in roots.items()
    )
    return TargetTree(target, tuple((s, n) for s, n in scopes if n))


def tree(
    project: Path | str = ".",
    *,
    target: str | None = None,
    build: bool = True,
    depth: int | None = None,
) -> list[TargetTree]:
    """The locked dependency tree of each target of *project* (or only *target*).

    Runtime edges are followed only to packages locked for that target; build edges
    (a package's ``build-requires``, resolved to the locked build closure) lead to
    build-only packages, marked by their ``role``, unless *build* is False.  *depth*
    limits the levels shown.  Raises :class:`~monorepo.errors.LockFileError` for a
    *target* the lock does not have.
    """
    config = load_config(Path(project))
    doc = lockfile.read(config.root / lockfile.LOCK_NAME)
    names = [t.name for t in config.targets]
    if target is not None:
        if target not in names:
            raise LockFileError(
                f"no target {target!r} in {config.pyproject}: its targets are {', '.join(names)}",
                path=config.pyproject,
                exit_code=2,
            )
        names = [target]
    return dependency_tree(doc, names, build=build, depth=depth)
