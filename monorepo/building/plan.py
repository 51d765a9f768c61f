"""What there is to build: workspace.toml and the lock joined into packages, and their graph."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from monorepo.errors import BuildError
from monorepo.project import lockfile
from monorepo.project.config import ProjectConfig
from monorepo.project.targets import Target
from monorepo.sources.crates import Crate, crates_from_tool
from monorepo.vendoring.workspace import SELF_BUILDING, read_workspace

# --------------------------------------------------------------------- workspace


@dataclass(frozen=True)
class Package:
    """One package directory as workspace.toml and the lock describe it."""

    dir: str
    name: NormalizedName
    version: Version
    role: str
    backend: str
    requires: tuple[str, ...]
    backend_path: tuple[str, ...]
    c_extension: bool
    c_extension_overlay: bool
    build_env: Mapping[str, str]
    config_settings: Mapping[str, str | tuple[str, ...]]
    """An overlay's PEP 517 config settings for every target."""
    target_config_settings: Mapping[str, Mapping[str, str | tuple[str, ...]]]
    """An overlay's config settings for one target, keyed by target name or machine."""
    system_libraries: Mapping[str, tuple[str, ...]]
    #: overlay ``host-tools``: program -> the Debian package providing it (never built)
    host_tools: Mapping[str, str]
    #: the lock's ``build-closure`` (``name==version``), None when the lock has none
    closure: tuple[str, ...] | None
    cross_compile: bool | None
    dependencies: tuple[tuple[NormalizedName, Version | None], ...]
    lock_tree_hash: str | None
    targets: tuple[str, ...]
    #: the Rust crates its Cargo.lock files name (vendored in duni/.crates)
    crates: tuple[Crate, ...] = ()
    upload_time: datetime | None = None
    locked: lockfile.LockedPackage | None = None
    """The lock entry: what the wheel's SBOM (PEP 770) describes."""
    """The locked sdist's upload time: the build's ``SOURCE_DATE_EPOCH``."""

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    def config_settings_for(self, target: Target) -> dict[str, str | list[str]]:
        """The overlay's config settings for *target*: the common ones, then those keyed
        by the target's machine, then by its name (a later string replaces, lists add)."""
        out: dict[str, str | list[str]] = {}
        for layer in (
            self.config_settings,
            self.target_config_settings.get(target.machine, {}),
            self.target_config_settings.get(target.name, {}),
        ):
            for key, value in layer.items():
                new: str | list[str] = value if isinstance(value, str) else list(value)
                old = out.get(key)
                if isinstance(old, list) and isinstance(new, list):
                    out[key] = [*old, *new]
                else:
                    out[key] = new
        return out

    @property
    def self_building(self) -> bool:
        return bool(self.backend_path) or self.name in SELF_BUILDING


def load_plan(config: ProjectConfig) -> tuple[list[str], dict[str, Package]]:
    """The build order and the packages to build: workspace.toml joined with the lock."""
    path = config.duni / "workspace.toml"
    try:
        order, raw = read_workspace(config.duni)
    except FileNotFoundError:
        raise BuildError(  # a step left out, like a missing pylock.toml: exit 2
            f"{path} does not exist: run `monorepo lock` and `monorepo pull` first",
            path=path,
            exit_code=2,
        ) from None
    except ValueError as error:
        raise BuildError(f"{path} {error}; run `monorepo pull` to regenerate it") from error
    lock = lockfile.read(config.root / lockfile.LOCK_NAME)
    locked = {p.dir: p for p in lock.packages}
    missing = sorted(d for d in locked if d not in raw)
    if missing:
        listed = ", ".join(f"{locked[d].name} {locked[d].version}" for d in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise BuildError(
            f"pylock.toml locks {listed}{more}, which {path} does not describe: duni/ is"
            " older than the lock; run `monorepo pull`"
        )
    pkgs: dict[str, Package] = {}
    for d, entry in raw.items():
        lp = locked.get(d)
        if lp is None or str(lp.version) != str(entry.get("version")):
            raise BuildError(
                f"{path} describes {d} {entry.get('version')}, which pylock.toml does not lock:"
                " duni/ is older than the lock; run `monorepo pull`"
            )
        if not (config.duni / d).is_dir():
            raise BuildError(f"{config.duni / d} is missing; run `monorepo pull`")
        libs = entry.get("system-libraries", {})
        pkgs[d] = Package(
            dir=d,
            name=lp.name,
            version=lp.version,
            role=str(entry.get("role", "runtime")),
            backend=str(entry.get("build-backend")),
            requires=tuple(str(r) for r in entry.get("build-requires", ())),
            backend_path=tuple(str(p) for p in entry.get("backend-path", ())),
            c_extension=bool(entry.get("c-extension", False)),
            c_extension_overlay=entry.get("c-extension-source") == "overlay",
            build_env={str(k): str(v) for k, v in entry.get("build-env", {}).items()},
            config_settings=_settings(entry.get("config-settings", {})),
            target_config_settings={
                str(k): _settings(v) for k, v in entry.get("target-config-settings", {}).items()
            },
            system_libraries={str(k): tuple(map(str, v)) for k, v in libs.items()},
            host_tools={str(k): str(v) for k, v in entry.get("host-tools", {}).items()},
            closure=_closure(lp.tool.get("build-closure")),
            cross_compile=entry.get("cross-compile"),
            dependencies=lp.dependencies,
            lock_tree_hash=lp.tree_hash,
            targets=lp.targets,
            crates=crates_from_tool(lp.tool, what=f"{lp.name} {lp.version}"),
            upload_time=getattr(lp.source, "upload_time", None),
            locked=lp,
        )
    return order, pkgs


def _closure(value: object) -> tuple[str, ...] | None:
    if not isinstance(value, list | tuple):
        return None
    return tuple(str(v) for v in value)


def _settings(table: Mapping[str, Any]) -> dict[str, str | tuple[str, ...]]:
    return {str(k): v if isinstance(v, str) else tuple(str(x) for x in v) for k, v in table.items()}


class Graph:
    """Build requirements matched to locked packages, and runtime closures."""

    def __init__(self, pkgs: Mapping[str, Package], *, build_dependencies: bool = True) -> None:
        self.pkgs = pkgs
        #: whether the lock holds build closures (``build-dependencies``): what errors advise
        self.build_dependencies = build_dependencies
        self.by_name: dict[NormalizedName, list[Package]] = {}
        self.by_pin: dict[str, Package] = {}
        for p in pkgs.values():
            self.by_name.setdefault(p.name, []).append(p)
            self.by_pin[f"{p.name}=={p.version}"] = p

    def locked_closure(self, pkg: Package) -> tuple[set[str], list[str]] | None:
        """The dirs of *pkg*'s recorded ``build-closure`` (None when the lock has none).

        The lock resolved it (hook-revealed requirements included): the build installs
        exactly that, rather than matching requirements to locked packages again.
        """
        if pkg.closure is None:
            return None
        dirs: set[str] = set()
        problems: list[str] = []
        for pin in pkg.closure:
            name, _, version = pin.partition("==")
            found = self.by_pin.get(f"{canonicalize_name(name)}=={version}")
            if found is None:
                problems.append(
                    f"{pkg.label}'s locked build closure names {pin}, which pylock.toml does not"
                    " lock; run `monorepo lock` and `monorepo pull`"
                )
            else:
                dirs.add(found.dir)
        if pkg.self_building:
            dirs.discard(pkg.dir)
        return dirs, problems

    def match(self, pkg: Package, text: str, *, strict: bool) -> tuple[list[Package], str | None]:
        """(locked packages matching *text*, or a problem); markers use the build machine."""
        try:
            req = Requirement(text)
        except InvalidRequirement as error:
            return [], f"build requirement {text!r} is not valid PEP 508 ({error})"
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            return [], None
        if canonicalize_name(req.name) in {canonicalize_name(t) for t in pkg.host_tools}:
            return [], None  # a declared host tool: checked on PATH before the build
        candidates = self.by_name.get(canonicalize_name(req.name), [])
        if pkg.closure is not None:  # the version the lock chose for this build, if any
            pinned = [p for p in candidates if f"{p.name}=={p.version}" in pkg.closure]
            candidates = pinned or candidates
        chosen = [p for p in candidates if req.specifier.contains(p.version, prereleases=True)]
        if chosen:
            return [max(chosen, key=lambda p: p.version)], None
        if candidates and not strict:
            return [max(candidates, key=lambda p: p.version)], None
        if candidates:
            versions = ", ".join(str(p.version) for p in candidates)
            return [], (
                f"{pkg.label} needs {text} to build, but the lock has {req.name} {versions};"
                f" fix the requirement with an overlay rule for {pkg.name} (build-requires)"
                " and run `monorepo lock`"
            )
        if self.build_dependencies:
            return [], (
                f"{pkg.label} needs {text} to build, which is not in the lock (the lock must"
                " hold everything a build needs, and this was not asked for when it was made:"
                " `monorepo lock` asks the backend too, so the lock may be older than that, or"
                " the backend answers differently on this machine); run `monorepo lock` and"
                f" `monorepo pull` again, or declare it in an overlay rule for {pkg.name}:"
                " build-requires, or host-tools when it is a program such as ninja"
            )
        return [], (
            f"{pkg.label} needs {text} to build, which is not in the lock (the lock must hold"
            f" everything a build needs); add it to the build-requires of an overlay rule for"
            f" {pkg.name}, or set build-dependencies = true, then run `monorepo lock` and"
            " `monorepo pull`"
        )

    def closure(self, start: Iterable[Package]) -> set[str]:
        """*start* and its runtime dependencies, one version per name (the first reached:
        a build requirement's own choice wins over a version some dependency pins)."""
        chosen: dict[NormalizedName, Package] = {}
        queue = list(start)
        while queue:
            p = queue.pop(0)
            if p.name in chosen:
                continue
            chosen[p.name] = p
            for name, version in p.dependencies:
                deps = [d for d in self.by_name.get(name, []) if version in (None, d.version)]
                if deps:
                    queue.append(max(deps, key=lambda d: d.version))
        return {p.dir for p in chosen.values()}

    def needs(
        self, pkg: Package, requirements: Iterable[str], *, strict: bool
    ) -> tuple[set[str], list[str]]:
        """Dirs the build of *pkg* needs installed for *requirements*, and the problems."""
        direct: list[Package] = []
        problems: list[str] = []
        for text in requirements:
            found, problem = self.match(pkg, text, strict=strict)
            direct += found
            if problem:
                problems.append(problem)
        needs = self.closure(direct)
        if pkg.self_building:
            needs.discard(pkg.dir)
        return needs, problems
