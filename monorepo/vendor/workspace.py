"""``duni/workspace.toml``: what a builder needs to know about the vendored tree.

``pull`` writes it after every run so that ``build`` (and any other tool) can build
``duni/`` offline without re-reading the lock or guessing: per package directory the
name, version and role, the build backend and its requirements, whether it has a C
extension, the overlay's build facts, and one topological ``build-order``.

Everything here is a pure function of the lock and the vendored trees; rendering is
deterministic (sorted keys, no timestamps) so an unchanged input rewrites nothing.

Build order
-----------
Package *p* must be built after every package its build needs installed: each of
its build requirements matched to a locked package, plus that package's runtime
dependency closure (from the lock's ``dependencies``).  Among packages free to go
next, the one with the smallest (name, version, dir) goes first.  A package that
needs itself to build is a cycle, except for backends that build themselves from
their own tree (``backend-path``, and flit-core whose in-tree backend is the point);
any other cycle is an error naming it, because no order can build it from source.
"""

from __future__ import annotations

import heapq
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name

from monorepo._core import fstree
from monorepo.errors import PullError
from monorepo.project.lockfile import LockDocument, LockedPackage

__all__ = [
    "DEFAULT_BACKEND",
    "DEFAULT_REQUIRES",
    "FORMAT",
    "SELF_BUILDING",
    "TreeFacts",
    "build_order",
    "detect_c_extension",
    "read_tree_facts",
    "render",
    "workspace_data",
]

FORMAT = 1
DEFAULT_BACKEND = "setuptools.build_meta:__legacy__"
"""PEP 517's fallback for a tree without ``build-backend``."""
DEFAULT_REQUIRES = ("setuptools>=40.8.0",)
"""PEP 518's fallback for a tree without ``[build-system] requires``."""
SELF_BUILDING: frozenset[str] = frozenset({"flit-core"})
"""Backends known to build themselves through their in-tree backend."""

_C_SUFFIXES = (".c", ".cc", ".cpp", ".cxx", ".pyx", ".rs")
_OVERLAY_BUILD_KEYS = ("cross-compile", "system-libraries", "build-env")
_SKIP_DIRS = frozenset({".git", ".hg", "__pycache__"})


def detect_c_extension(tree: Path, paths: Iterable[str] | None = None) -> bool:
    """True when the tree has C/C++/Cython/Rust sources or a setup.py that builds an Extension.

    A heuristic by design (an overlay's ``c-extension`` overrides it): a ``.c`` file
    that only serves tests is a false positive, a generated extension a false negative.
    *paths*, the tree's files and links relative to it (a caller that has just listed
    the tree, as pull has), spare walking it again.
    """
    if paths is not None:
        for rel in paths:
            if rel.endswith(_C_SUFFIXES) and _SKIP_DIRS.isdisjoint(rel.split("/")[:-1]):
                return True
    else:
        for _dirpath, dirnames, filenames in fstree.walk(tree):  # os.walk recurses
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
            for name in filenames:
                if name.endswith(_C_SUFFIXES):
                    return True
    setup = tree / "setup.py"
    try:
        text = setup.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "Extension(" in text


@dataclass(frozen=True)
class TreeFacts:
    """What workspace.toml reads from a vendored tree.

    A function of the tree's content alone, so ``pull`` keeps it beside each tree's
    manifest, keyed by the tree hash, instead of walking every tree and parsing every
    pyproject.toml on each run (most of a no-op pull of a large set).
    """

    build_system: Mapping[str, Any]
    """pyproject.toml's ``[build-system]`` table; empty when there is none."""
    c_extension: bool
    """:func:`detect_c_extension` of the tree."""
    error: str | None = None
    """Why pyproject.toml could not be read (raised only if the lock has no build fields)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "build-system": dict(self.build_system),
            "c-extension": self.c_extension,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TreeFacts:
        return cls(dict(data["build-system"]), bool(data["c-extension"]), data.get("error"))


def read_tree_facts(tree: Path, paths: Iterable[str] | None = None) -> TreeFacts:
    """Read *tree*'s :class:`TreeFacts` from disk (*paths*: see :func:`detect_c_extension`)."""
    path = tree / "pyproject.toml"
    error = None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        data, error = {}, f"cannot read {path} ({exc})"
    raw = data.get("build-system", {})
    table = raw if isinstance(raw, Mapping) else {}
    return TreeFacts(table, detect_c_extension(tree, paths), error)


def _build_system(pkg: LockedPackage, facts: TreeFacts | None) -> tuple[str, list[str], list[str]]:
    """(backend, requires, backend-path): the lock's fields, else the tree's pyproject.toml."""
    tool = pkg.tool
    if "build-backend" in tool or "build-requires" in tool:
        return (
            str(tool.get("build-backend") or DEFAULT_BACKEND),
            [str(r) for r in tool.get("build-requires", DEFAULT_REQUIRES)],
            [str(p) for p in tool.get("backend-path", ())],
        )
    table: Mapping[str, Any] = {}
    if facts is not None:
        if facts.error is not None:
            raise PullError(
                f"{pkg.name} {pkg.version}: {facts.error}; fix it with an overlay"
                " patch, or record build-requires for the package in an overlay rule"
            )
        table = facts.build_system
    requires = table.get("requires", list(DEFAULT_REQUIRES))
    backend = table.get("build-backend") or DEFAULT_BACKEND
    backend_path = table.get("backend-path", [])
    return (
        str(backend),
        [str(r) for r in requires] if isinstance(requires, list) else list(DEFAULT_REQUIRES),
        [str(p) for p in backend_path] if isinstance(backend_path, list) else [],
    )


def workspace_data(
    lock: LockDocument,
    trees: Mapping[str, Path],
    *,
    facts: Callable[[str, Path], TreeFacts] | None = None,
) -> dict[str, Any]:
    """The content of workspace.toml for *lock*, reading each tree of *trees* (dir -> path).

    A package whose tree is missing from *trees* is described from the lock alone
    (no C-extension detection, PEP 518 defaults when the lock has no build fields).
    *facts* (dir, path) -> :class:`TreeFacts` replaces :func:`read_tree_facts`, for a
    caller that knows them already.
    """
    packages: dict[str, dict[str, Any]] = {}
    requires: dict[str, list[str]] = {}
    in_tree: set[str] = set()
    for pkg in sorted(lock.packages, key=lambda p: p.dir):
        tree = trees.get(pkg.dir)
        known = None
        if tree is not None:
            known = facts(pkg.dir, tree) if facts is not None else read_tree_facts(tree)
        backend, reqs, backend_path = _build_system(pkg, known)
        entry: dict[str, Any] = {
            "name": str(pkg.name),
            "version": str(pkg.version),
            "role": pkg.role,
            "build-backend": backend,
            "build-requires": sorted(reqs),
        }
        if backend_path:
            entry["backend-path"] = backend_path
            in_tree.add(pkg.dir)
        if isinstance(pkg.tool.get("c-extension"), bool):
            entry["c-extension"] = bool(pkg.tool["c-extension"])
            entry["c-extension-source"] = "overlay"
        else:
            entry["c-extension"] = known is not None and known.c_extension
            entry["c-extension-source"] = "detected"
        for key in _OVERLAY_BUILD_KEYS:
            if key in pkg.tool:
                entry[key] = pkg.tool[key]
        packages[pkg.dir] = entry
        requires[pkg.dir] = reqs
    cycles: list[list[str]] = []
    data: dict[str, Any] = {
        "format": FORMAT,
        "build-order": build_order(lock, requires, in_tree=in_tree, cycles=cycles),
    }
    if cycles:
        # recorded, not raised: vendoring must not fail over it; `monorepo build` refuses
        # the packages on a cycle and names it
        data["build-cycles"] = cycles
    data["packages"] = packages
    return data


def _matches(
    by_name: Mapping[NormalizedName, list[LockedPackage]], name: NormalizedName, req: Requirement
) -> list[LockedPackage]:
    candidates = by_name.get(name, [])
    chosen = [p for p in candidates if req.specifier.contains(p.version, prereleases=True)]
    return chosen or list(candidates)


def _runtime_closure(
    start: Iterable[LockedPackage], by_name: Mapping[NormalizedName, list[LockedPackage]]
) -> set[str]:
    seen: set[str] = set()
    stack = list(start)
    while stack:
        pkg = stack.pop()
        if pkg.dir in seen:
            continue
        seen.add(pkg.dir)
        for name, version in pkg.dependencies:
            for dep in by_name.get(name, []):
                if version is None or dep.version == version:
                    stack.append(dep)
    return seen


def build_order(
    lock: LockDocument,
    build_requires: Mapping[str, Sequence[str]],
    *,
    in_tree: Collection[str] = (),
    cycles: list[list[str]] | None = None,
) -> list[str]:
    """Every locked dir, each after everything its build needs (see the module docstring).

    *build_requires* maps a dir to its build requirement strings (a dir not in it
    needs nothing); *in_tree* names dirs whose backend builds itself (``backend-path``).
    Requirements naming no locked package are ignored (with ``build-dependencies =
    false`` the lock holds no build packages).  Raises :class:`PullError` on a cycle,
    unless *cycles* is given: then the cycle is appended to it and the packages left
    on it follow in name order.
    """
    by_name = lock.by_name()
    by_dir = {p.dir: p for p in lock.packages}
    after: dict[str, set[str]] = {}
    for pkg in lock.packages:
        direct: list[LockedPackage] = []
        for text in build_requires.get(pkg.dir, ()):
            try:
                req = Requirement(text)
            except InvalidRequirement as error:
                raise PullError(
                    f"{pkg.name} {pkg.version}: build requirement {text!r} is not a valid PEP"
                    f" 508 requirement ({error}); fix it with an overlay's build-requires and run"
                    " `monorepo lock`"
                ) from error
            direct += _matches(by_name, canonicalize_name(req.name), req)
        needs = _runtime_closure(direct, by_name)
        if pkg.dir in needs and (pkg.name in SELF_BUILDING or pkg.dir in in_tree):
            needs.discard(pkg.dir)
        after[pkg.dir] = needs

    def key(d: str) -> tuple[str, Any, str]:
        return (by_dir[d].name, by_dir[d].version, d)

    remaining = {d: set(n) for d, n in after.items()}
    users: dict[str, set[str]] = {d: set() for d in after}
    for d, needs in after.items():
        for n in needs:
            users[n].add(d)
    ready = [key(d) for d, needs in remaining.items() if not needs]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        d = heapq.heappop(ready)[2]
        order.append(d)
        for user in sorted(users[d]):
            remaining[user].discard(d)
            if not remaining[user]:
                heapq.heappush(ready, key(user))
        del remaining[d]
    if remaining:
        cycle = _find_cycle({d: n & remaining.keys() for d, n in remaining.items()})
        if cycles is not None:
            cycles.append(cycle)
            return order + sorted(remaining, key=key)
        raise PullError(
            "the build requirements form a cycle, so no order builds them from source: "
            + " -> ".join(cycle)
            + " (each needs the next, or something in its runtime dependencies, to build)."
            " Break it with an overlay: give one of them build-requires that avoid the"
            " others, or mark a backend that builds itself with backend-path"
        )
    return order


def _find_cycle(graph: Mapping[str, set[str]]) -> list[str]:
    """One cycle of *graph* (node -> nodes it needs), as a closed path, smallest start first."""
    for start in sorted(graph):
        path: list[str] = []
        on_path: dict[str, int] = {}
        node = start
        while node not in on_path:
            on_path[node] = len(path)
            path.append(node)
            nxt = sorted(graph[node])
            if not nxt:
                break
            node = nxt[0]
        else:
            cycle = path[on_path[node] :]
            return [*cycle, node]
    return sorted(graph)  # pragma: no cover - remaining nodes always contain a cycle


def render(data: Mapping[str, Any]) -> str:
    """workspace.toml text for *data* (from :func:`workspace_data`): sorted, no timestamps."""
    doc = tomlkit.document()
    doc.add(tomlkit.comment("Generated by `monorepo pull` from pylock.toml. Do not edit by hand."))
    doc.add(
        tomlkit.comment(
            "Rebuild with `monorepo lock && monorepo pull`; audit with `monorepo verify`."
        )
    )
    doc.add("format", data["format"])
    order = tomlkit.array()
    order.extend(data["build-order"])
    order.multiline(True)
    doc.add("build-order", order)
    packages = tomlkit.table(is_super_table=True)
    for d in sorted(data["packages"]):
        table = tomlkit.table()
        for key, value in data["packages"][d].items():
            table.add(key, _item(value))
        packages.add(d, table)
    doc.add("packages", packages)
    return tomlkit.dumps(doc)


def _item(value: Any) -> Any:
    if isinstance(value, Mapping):
        inline = tomlkit.inline_table()
        for k in sorted(value):
            inline.append(k, _item(value[k]))
        return inline
    if isinstance(value, list | tuple):
        array = tomlkit.array()
        array.extend(_item(v) for v in value)
        return array
    return value
