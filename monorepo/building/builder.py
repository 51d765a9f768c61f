"""``monorepo build``: every package of ``duni/`` built into a wheel, offline, in dependency order.

Inputs are ``duni/workspace.toml`` (written by ``pull``: backends, build
requirements, overlay build facts, a topological order) and ``pylock.toml`` (the
runtime dependencies that make up a build requirement's closure).  Nothing comes
from outside ``duni/``: no index, no cached wheel, no pip.

Layout, per target (``duni-build/<target>/``)::

    envs/<dir>/   the package's build environment: a venv with what its build needs
    wheels/       the wheels (the default ``--out``)
    logs/<dir>.log   everything the backend printed, one file per package
    src/<dir>/    scratch copy of duni/<dir> a build runs in (kept when it fails)
    state.json    what was built from what (the up-to-date check)

Bootstrap
---------
Every build gets its own venv (:mod:`monorepo.buildenv`) holding exactly the wheels
its build needs: each build requirement matched to a locked package (the newest
version it allows), plus that package's runtime dependencies, recursively.  A
package is *ready* when all of those are built.  A backend that builds itself
(``backend-path``: flit-core, setuptools, hatchling, poetry-core ...) needs only
its own declared requirements, so those go first, then whatever they unlock.
Separate venvs let two builds use two versions of one backend, and a build never
sees a venv change under it.

Cross builds
------------
For a target that is not this machine, what the builds need is built natively
first (in the project's native target's ``duni-build`` directory, shared with
native builds), then the target's runtime packages with the sysroot's cross
environment (:meth:`monorepo.sysroot.SysrootInfo.cross_env`), checked for the
target, and imported on the target under its ``runner``.

PEP 517 hooks run through ``pyproject-hooks`` in a subprocess of the venv's
Python, in the scratch copy.  ``get_requires_for_build_wheel`` may ask for more
(hatchling's in-tree backend asks for hatchling's own dependencies): each must be
a locked package, otherwise the build fails naming the requirement and suggesting
an overlay ``build-requires``; when they are locked but not built yet, the
package waits for them.

Offline
-------
Every hook runs in a new network namespace (``unshare``) when the system allows
it, with proxies pointing at a closed loopback port and pip told ``--no-index``
regardless, and with an audit hook in the venv that fails (and records) any
Python socket connection or name lookup: a backend that tries the network fails
its build at once, even when it catches the error.

Checks
------
After each build: the wheel's tags fit the target, every extension module is an
ELF file for the target machine (:mod:`monorepo.elfcheck`), and a package an
overlay marks ``c-extension = true`` has one (a C library that was missing makes
pyyaml and markupsafe fall back to pure Python silently).  Overlay
``system-libraries`` are checked before anything starts, all at once, with the
command that installs them.

Up to date
----------
A package is skipped when ``state.json`` records the same key and its wheel is in
the output directory unchanged.  The key hashes the tree hash of ``duni/<dir>``
(recomputed, so a local edit rebuilds), the target, the backend, the build
requirements, the overlay's build facts and the keys of everything the build
needed: rebuilding a backend rebuilds what it built.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version
from pyproject_hooks import (
    BackendUnavailable,
    BuildBackendHookCaller,
    HookMissing,
    UnsupportedOperation,
)

from monorepo._core import fstree
from monorepo._core.fstree import remove_tree
from monorepo._core.reporter import NullReporter, Reporter
from monorepo.building.buildenv import OFFLINE_ENV, BuildEnv, file_sha256
from monorepo.building.elfcheck import MACHINES, check_wheel
from monorepo.errors import BuildError, ExtractError
from monorepo.extract import archive as extract
from monorepo.project import lockfile
from monorepo.project.config import ProjectConfig, load_config
from monorepo.project.targets import Target, host_target
from monorepo.sources.treehash import tree_hash
from monorepo.sysroot.make import SysrootError, SysrootInfo, read_sysroot
from monorepo.vendor.workspace import SELF_BUILDING

__all__ = [
    "BUILD_DIR",
    "BuildResult",
    "PackageResult",
    "build",
    "check_system_libraries",
    "choose_target",
    "network_isolation",
]

BUILD_DIR = "duni-build"
"""Where builds go, beside pyproject.toml: ``duni-build/<target>/``."""
_FORMAT = 1
_TAIL_LINES = 25
DEAD_PROXY = "http://127.0.0.1:9"
"""A proxy that refuses every connection (the discard port, closed on any sane host)."""
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy")
_DEFAULT_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip file can hold


# ---------------------------------------------------------------------- results


@dataclass(frozen=True)
class PackageResult:
    """One package's outcome: its wheel when built or skipped, the reason when failed."""

    dir: str
    name: str
    version: str
    wheel: Path | None = None
    log: Path | None = None
    seconds: float = 0.0
    reason: str = ""
    tail: tuple[str, ...] = ()
    host: bool = False
    """Built for the build machine (a build requirement of a cross build)."""

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}" + (" (host)" if self.host else "")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"dir": self.dir, "name": self.name, "version": self.version}
        if self.host:
            data["host"] = True
        if self.wheel is not None:
            data["wheel"] = str(self.wheel)
        if self.log is not None:
            data["log"] = str(self.log)
        if self.seconds:
            data["seconds"] = round(self.seconds, 2)
        if self.reason:
            data["reason"] = self.reason
            data["tail"] = list(self.tail)
        return data


@dataclass
class BuildResult:
    """What a build did: packages built, skipped as up to date, and failed."""

    target: str
    wheels: Path
    logs: Path
    built: list[PackageResult] = field(default_factory=list)
    skipped: list[PackageResult] = field(default_factory=list)
    failed: list[PackageResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "target": self.target,
            "wheels": str(self.wheels),
            "logs": str(self.logs),
            "ok": self.ok,
            "built": [p.to_dict() for p in self.built],
            "skipped": [p.to_dict() for p in self.skipped],
            "failed": [p.to_dict() for p in self.failed],
            "warnings": list(self.warnings),
        }


# --------------------------------------------------------------------- workspace


@dataclass(frozen=True)
class _Pkg:
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
    system_libraries: Mapping[str, tuple[str, ...]]
    cross_compile: bool | None
    dependencies: tuple[tuple[NormalizedName, Version | None], ...]
    lock_tree_hash: str | None
    targets: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def self_building(self) -> bool:
        return bool(self.backend_path) or self.name in SELF_BUILDING


def _load_workspace(config: ProjectConfig) -> tuple[list[str], dict[str, _Pkg]]:
    path = config.duni / "workspace.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuildError(
            f"{path} does not exist: run `monorepo lock` and `monorepo pull` first"
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise BuildError(
            f"cannot read {path} ({error}); run `monorepo pull` to regenerate it"
        ) from error
    if data.get("format") != 1:
        raise BuildError(
            f"{path} has format {data.get('format')!r}, this monorepo reads format 1;"
            " run `monorepo pull` to regenerate it"
        )
    lock = lockfile.read(config.root / lockfile.LOCK_NAME)
    locked = {p.dir: p for p in lock.packages}
    raw = data.get("packages", {})
    order = [str(d) for d in data.get("build-order", [])]
    if not isinstance(raw, Mapping) or set(order) != set(raw):
        raise BuildError(
            f"{path} is inconsistent (its build-order and packages differ); run `monorepo pull`"
        )
    missing = sorted(d for d in locked if d not in raw)
    if missing:
        listed = ", ".join(f"{locked[d].name} {locked[d].version}" for d in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise BuildError(
            f"pylock.toml locks {listed}{more}, which {path} does not describe: duni/ is"
            " older than the lock; run `monorepo pull`"
        )
    pkgs: dict[str, _Pkg] = {}
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
        pkgs[d] = _Pkg(
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
            system_libraries={str(k): tuple(map(str, v)) for k, v in libs.items()},
            cross_compile=entry.get("cross-compile"),
            dependencies=lp.dependencies,
            lock_tree_hash=lp.tree_hash,
            targets=lp.targets,
        )
    return order, pkgs


class _Graph:
    """Build requirements matched to locked packages, and runtime closures."""

    def __init__(self, pkgs: Mapping[str, _Pkg]) -> None:
        self.pkgs = pkgs
        self.by_name: dict[NormalizedName, list[_Pkg]] = {}
        for p in pkgs.values():
            self.by_name.setdefault(p.name, []).append(p)

    def match(self, pkg: _Pkg, text: str, *, strict: bool) -> tuple[list[_Pkg], str | None]:
        """(locked packages matching *text*, or a problem); markers use the build machine."""
        try:
            req = Requirement(text)
        except InvalidRequirement as error:
            return [], f"build requirement {text!r} is not valid PEP 508 ({error})"
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            return [], None
        candidates = self.by_name.get(canonicalize_name(req.name), [])
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
        return [], (
            f"{pkg.label} needs {text} to build, which is not in the lock (the lock must hold"
            f" everything a build needs); add it to the build-requires of an overlay rule for"
            f" {pkg.name}, or set build-dependencies = true, then run `monorepo lock` and"
            " `monorepo pull`"
        )

    def closure(self, start: Iterable[_Pkg]) -> set[str]:
        """*start* and its runtime dependencies, one version per name (the first reached:
        a build requirement's own choice wins over a version some dependency pins)."""
        chosen: dict[NormalizedName, _Pkg] = {}
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
        self, pkg: _Pkg, requirements: Iterable[str], *, strict: bool
    ) -> tuple[set[str], list[str]]:
        """Dirs the build of *pkg* needs installed for *requirements*, and the problems."""
        direct: list[_Pkg] = []
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


# ----------------------------------------------------------------------- targets


def is_native(target: Target) -> bool:
    """Whether this machine's interpreter can build for *target* without cross-compiling."""
    host = host_target()
    same_machine = target.machine == host.machine or (
        MACHINES.get(target.machine) is not None
        and MACHINES.get(target.machine) == MACHINES.get(host.machine)
    )
    return target.platform == host.platform and same_machine


def choose_target(config: ProjectConfig, name: str | None) -> Target:
    """The target named *name*, else the only one, else the one this machine runs."""
    targets = config.targets
    names = ", ".join(t.name for t in targets)
    if name is not None:
        for t in targets:
            if t.name == name:
                return t
        raise BuildError(
            f"{config.pyproject}: no target named {name!r} in [tool.monorepo] targets"
            f" (targets: {names})"
        )
    if len(targets) == 1:
        return targets[0]
    native = [t for t in targets if is_native(t)]
    if native:
        return native[0]
    raise BuildError(f"{config.pyproject} has several targets ({names}); choose one with --target")


def _host_variant_target(config: ProjectConfig) -> Target:
    """The target whose builds fill a cross build's venv: a native one of the project's
    (so its ``duni-build/<name>`` is shared with native builds), else this machine."""
    host = host_target()
    for t in config.targets:
        if is_native(t) and t.python_version == host.python_version:
            return t
    return host


def _sysroot(target: Target) -> SysrootInfo:
    """The target's sysroot, as ``python -m monorepo.sysroot`` describes it."""
    if target.sysroot is None:
        raise BuildError(
            f"target {target.name} ({target.platform} {target.machine}) is not this machine"
            f" ({host_target().platform} {host_target().machine}), so it is cross-compiled, and"
            " that needs a sysroot: make one with `python -m monorepo.sysroot sysroots/"
            f'{target.machine}` and add sysroot = "sysroots/{target.machine}", cc and runner to'
            " the target (docs/cross.md)"
        )
    try:
        info = read_sysroot(Path(target.sysroot))
    except SysrootError as error:
        raise BuildError(f"target {target.name}: {error}") from error
    if info.python != target.python_version:
        raise BuildError(
            f"target {target.name} is Python {target.python_version} but its sysroot"
            f" {info.root} holds Python {info.python}; make a sysroot for the right suite"
        )
    if MACHINES.get(info.machine) != MACHINES.get(target.machine):
        raise BuildError(
            f"target {target.name} is {target.machine} but its sysroot {info.root} is for"
            f" {info.machine}"
        )
    compiler = shlex.split(target.cc)[0] if target.cc else f"{info.triplet}-gcc"
    if shutil.which(compiler) is None:
        raise BuildError(
            f"target {target.name}: the cross compiler {compiler} is not installed (Debian:"
            f" apt-get install -y gcc-{info.triplet}); set cc in the target to use another"
        )
    return info


def _check_sysroot_libraries(
    info: SysrootInfo, wanted: Mapping[str, Mapping[str, Sequence[str]]]
) -> None:
    """The overlay's Debian ``system-libraries`` of cross-built packages must be in the sysroot."""
    missing: dict[str, list[str]] = {}
    for label, libs in sorted(wanted.items()):
        for lib in libs.get("debian", ()):
            name = lib.split(":", 1)[0]
            if name not in info.packages:
                missing.setdefault(name, []).append(label)
    if missing:
        names = sorted(missing)
        listed = ", ".join(f"{n} (for {', '.join(missing[n])})" for n in names)
        extra = " ".join(f"--package {n}" for n in names)
        raise BuildError(
            f"the sysroot {info.root} lacks system packages the build needs: {listed}. Add"
            f" them with:\n  python -m monorepo.sysroot {info.root} --arch {info.arch}"
            f" --suite {info.suite} {extra} --refresh"
        )


# -------------------------------------------------------------- system libraries


def _os_release(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return out
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip("\"'")
    return out


def _dpkg_installed(name: str) -> bool:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", name],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode == 0 and proc.stdout.strip().endswith("ok installed")


def check_system_libraries(
    wanted: Mapping[str, Mapping[str, Sequence[str]]],
    *,
    os_release: Path = Path("/etc/os-release"),
    installed: Callable[[str], bool] | None = None,
    reporter: Reporter | None = None,
) -> None:
    """Raise :class:`BuildError` listing every missing system package, with the install command.

    *wanted* maps a package label to its overlay ``system-libraries`` (distribution ->
    package names).  Debian and its derivatives are checked with ``dpkg-query``;
    on other systems the libraries are only reported, as a warning.
    """
    reporter = reporter if reporter is not None else NullReporter()
    if not wanted:
        return
    release = _os_release(os_release)
    ids = [release.get("ID", ""), *release.get("ID_LIKE", "").split()]
    if "debian" not in ids or (installed is None and shutil.which("dpkg-query") is None):
        for label, libs in sorted(wanted.items()):
            listed = "; ".join(f"{k}: {' '.join(v)}" for k, v in sorted(libs.items()))
            if listed:
                reporter.message(
                    "warning",
                    f"{label} needs system libraries ({listed}); monorepo checks them only on"
                    " Debian-like systems, so make sure they are installed",
                )
        return
    check = installed if installed is not None else _dpkg_installed
    missing: dict[str, list[str]] = {}
    for label, libs in sorted(wanted.items()):
        for lib in libs.get("debian", ()):
            if lib in missing or not check(lib):
                missing.setdefault(lib, []).append(label)
    if missing:
        names = sorted(missing)
        listed = ", ".join(f"{n} (for {', '.join(missing[n])})" for n in names)
        sudo = "" if hasattr(os, "geteuid") and os.geteuid() == 0 else "sudo "
        raise BuildError(
            f"system packages the build needs are not installed: {listed}. Install them with:\n"
            f"  {sudo}apt-get install -y {' '.join(names)}\n"
            "then run `monorepo build` again"
        )


# ------------------------------------------------------------------ offline guard


_ISOLATION: list[list[str]] = []


def network_isolation() -> list[str]:
    """The command prefix that runs a program without network, or [] when unavailable.

    ``unshare -n`` (root) or ``unshare -rn`` (an unprivileged user namespace) gives
    the build a network namespace with only a down loopback interface: connecting
    anywhere fails at once.  Probed once per process by running ``true`` under it.
    """
    if not _ISOLATION:
        prefix: list[str] = []
        unshare = shutil.which("unshare")
        if unshare is not None and sys.platform.startswith("linux"):
            flags = "-n" if os.geteuid() == 0 else "-rn"
            try:
                ok = (
                    subprocess.run(
                        [unshare, flags, "--", "true"], capture_output=True, timeout=10
                    ).returncode
                    == 0
                )
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            if ok:
                prefix = [unshare, flags, "--"]
        _ISOLATION.append(prefix)
    return list(_ISOLATION[0])


def _offline_environ(base: Mapping[str, str]) -> dict[str, str]:
    """*base* without proxies or pip indexes, with a dead proxy and pip set to --no-index."""
    env = {
        k: v
        for k, v in base.items()
        if k.lower() not in (*_PROXY_VARS, "no_proxy") and not k.startswith("PIP_")
    }
    for var in _PROXY_VARS:
        env[var] = env[var.upper()] = DEAD_PROXY
    env["PIP_NO_INDEX"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["UV_OFFLINE"] = "1"
    return env


# ----------------------------------------------------------------------- building


@dataclass(frozen=True)
class _Variant:
    """Where the builds of one target go, and whether they are cross builds."""

    target: Target
    root: Path
    wheels: Path
    cross: bool
    sysroot: SysrootInfo | None = None

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"


Node = tuple[int, str]
"""(variant index, package dir): variant 0 builds for the build machine's venv."""


@dataclass
class _Built:
    wheel: Path
    dynamic: set[str]
    seconds: float


@dataclass
class _NeedMore:
    dynamic: set[str]


@dataclass
class _Failed:
    reason: str
    log: Path | None


_Outcome = _Built | _NeedMore | _Failed


def _tail(path: Path | None) -> tuple[str, ...]:
    if path is None:
        return ()
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ()
    return tuple(lines[-_TAIL_LINES:])


_NOT_IMPORTED = frozenset({"test", "tests", "testing", "docs", "doc", "examples", "benchmarks"})


def _top_level_modules(names: Iterable[str]) -> list[str]:
    """Importable top-level names of a wheel (packages, modules, extension modules)."""
    found: set[str] = set()
    for name in names:
        first, sep, rest = name.partition("/")
        if first.endswith((".dist-info", ".data")):
            continue
        if sep and rest == "__init__.py":
            found.add(first)
        elif not sep and first.endswith(".py"):
            found.add(first[:-3])
        elif not sep and first.endswith(".so"):
            found.add(first.split(".", 1)[0])
    return sorted(
        m for m in found if m.isidentifier() and m not in _NOT_IMPORTED and m != "__init__"
    )


def _log_backend_warnings(output: Path, log: Any) -> None:
    """Move the warnings a hook relays (``pyproject-hooks`` would re-issue them in this
    process, where they would be printed) from its output file into the log."""
    try:
        data = json.loads(output.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    relayed = data.pop("warnings", None) if isinstance(data, dict) else None
    if not relayed:
        return
    for w in relayed:
        if isinstance(w, dict):
            log.write(
                f"{w.get('filename')}:{w.get('lineno')}: {w.get('category')}: {w.get('message')}\n"
            )
    output.write_text(json.dumps(data), encoding="utf-8")


def _copy_tree(source: Path, dest: Path) -> None:
    """A scratch copy of a vendored tree; iterative, so a tree of any depth copies."""
    remove_tree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fstree.copy_tree(source, dest)


class _Builder:
    def __init__(
        self,
        config: ProjectConfig,
        pkgs: Mapping[str, _Pkg],
        order: Sequence[str],
        variants: Sequence[_Variant],
        *,
        jobs: int,
        reporter: Reporter,
        isolation: Sequence[str],
    ) -> None:
        self.config = config
        self.pkgs = pkgs
        self.rank = {d: i for i, d in enumerate(order)}
        self.graph = _Graph(pkgs)
        self.variants = variants
        self.jobs = jobs
        self.reporter = reporter
        self.isolation = list(isolation)
        self.states = [self._read_state(v) for v in variants]
        self.tree_hashes: dict[str, str] = {}
        self.static: dict[str, tuple[set[str], list[str]]] = {}
        self.dynamic: dict[Node, set[str]] = {}
        self.status: dict[Node, str] = {}
        self.keys: dict[Node, str] = {}
        self.wheels: dict[Node, Path] = {}
        self.pending: set[Node] = set()
        self.results: dict[Node, PackageResult] = {}
        self.warnings: list[str] = []

    # ---------------------------------------------------------------- state

    @staticmethod
    def _read_state(variant: _Variant) -> dict[str, Any]:
        try:
            data = json.loads(variant.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            return {}
        packages = data.get("packages")
        return packages if isinstance(packages, dict) else {}

    def _write_state(self, index: int) -> None:
        variant = self.variants[index]
        data = {"format": _FORMAT, "packages": self.states[index]}
        tmp = variant.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, variant.state_path)

    # ---------------------------------------------------------------- graph

    def static_needs(self, d: str) -> tuple[set[str], list[str]]:
        if d not in self.static:
            pkg = self.pkgs[d]
            self.static[d] = self.graph.needs(pkg, pkg.requires, strict=False)
        return self.static[d]

    def needs(self, node: Node) -> set[str]:
        return self.static_needs(node[1])[0] | self.dynamic.get(node, set())

    def enqueue(self, node: Node) -> None:
        """Add *node* and (as build-machine builds) everything its build needs."""
        stack = [node]
        while stack:
            n = stack.pop()
            if n in self.status or n in self.pending:
                continue
            self.pending.add(n)
            stack += [(0, d) for d in self.needs(n)]

    def tree_key(self, d: str) -> str:
        if d not in self.tree_hashes:
            actual = tree_hash(self.config.duni / d)
            pkg = self.pkgs[d]
            if pkg.lock_tree_hash and actual != pkg.lock_tree_hash:
                self.warn(
                    f"duni/{d} differs from the tree pylock.toml records for {pkg.label}"
                    " (edited by hand?); building it as it is. `monorepo verify` lists the"
                    " differences"
                )
            self.tree_hashes[d] = actual
        return self.tree_hashes[d]

    def key(self, node: Node, needs: Iterable[str]) -> str:
        index, d = node
        pkg = self.pkgs[d]
        target = self.variants[index].target
        data = {
            "format": _FORMAT,
            "target": {**target.canonical(), "cc": target.cc, "sysroot": target.sysroot},
            "cross": self.variants[index].cross,
            "tree": self.tree_key(d),
            "backend": pkg.backend,
            "requires": list(pkg.requires),
            "backend-path": list(pkg.backend_path),
            "build-env": dict(sorted(pkg.build_env.items())),
            "c-extension": [pkg.c_extension, pkg.c_extension_overlay],
            "needs": {n: self.keys[(0, n)] for n in sorted(needs)},
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.reporter.message("warning", text)

    # ------------------------------------------------------------ scheduling

    def result(self, node: Node, **kw: Any) -> PackageResult:
        pkg = self.pkgs[node[1]]
        return PackageResult(
            dir=pkg.dir,
            name=str(pkg.name),
            version=str(pkg.version),
            host=len(self.variants) > 1 and node[0] == 0,
            **kw,
        )

    def fail(self, node: Node, reason: str, log: Path | None) -> None:
        self.status[node] = "failed"
        self.results[node] = self.result(node, reason=reason, log=log, tail=_tail(log))
        label = self.results[node].label
        where = f" (log: {log})" if log is not None else ""
        self.reporter.message("info", f"failed {label}: {reason}{where}")

    def done(self, node: Node, status: str, wheel: Path, seconds: float) -> None:
        index, d = node
        self.status[node] = status
        self.wheels[node] = wheel
        log = self.variants[index].logs / f"{d}.log"
        self.results[node] = self.result(
            node, wheel=wheel, log=log if status == "built" else None, seconds=seconds
        )
        if status == "built":
            self.reporter.message(
                "info", f"built {self.results[node].label} ({seconds:.1f}s): {wheel.name}"
            )

    def available(self) -> dict[str, Path]:
        """Build-machine wheels ready to go into a build's venv, by dir."""
        return {
            d: self.wheels[(i, d)]
            for (i, d), status in self.status.items()
            if i == 0 and status in ("built", "skipped")
        }

    def up_to_date(self, node: Node, key: str) -> Path | None:
        index, d = node
        recorded = self.states[index].get(d)
        if not isinstance(recorded, dict) or recorded.get("key") != key:
            return None
        wheel = self.variants[index].wheels / str(recorded.get("wheel", ""))
        if not wheel.is_file() or file_sha256(wheel) != recorded.get("sha256"):
            return None
        return wheel

    def run(self, requested: Iterable[Node]) -> None:
        for node in requested:
            self.enqueue(node)
        for node in list(self.pending):
            recorded = self.states[node[0]].get(node[1])
            if isinstance(recorded, dict):
                known = {str(x) for x in recorded.get("dynamic", ()) if str(x) in self.pkgs}
                if known:
                    self.dynamic[node] = known
                    self.pending.discard(node)
                    self.enqueue(node)
        total = len(self.pending)
        self.reporter.task("build", f"Building {total} packages", total)
        running: dict[Future[_Outcome], tuple[Node, str]] = {}
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="build") as pool:
            while True:
                self.schedule(pool, running)
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    node, key = running.pop(future)
                    self.finish(node, key, future)
        for node in sorted(self.pending, key=self.order):
            ready = self.available()
            waiting = sorted(n for n in self.needs(node) if n not in ready)
            self.fail(
                node,
                "not built: its build requirements wait on each other"
                f" ({', '.join(waiting)}); break the cycle with an overlay's build-requires",
                None,
            )
            self.reporter.advance("build")
        self.pending.clear()
        self.reporter.done("build")

    def order(self, node: Node) -> tuple[int, int]:
        return (node[0], self.rank.get(node[1], len(self.rank)))

    def schedule(
        self, pool: ThreadPoolExecutor, running: dict[Future[_Outcome], tuple[Node, str]]
    ) -> None:
        progressed = True
        while progressed:
            progressed = False
            ready = self.available()
            for node in sorted(self.pending, key=self.order):
                needs = self.needs(node)
                problems = self.static_needs(node[1])[1]
                broken = sorted(n for n in needs if self.status.get((0, n)) == "failed")
                if problems or broken:
                    self.pending.discard(node)
                    if problems:
                        reason = "; ".join(problems)
                    else:
                        labels = ", ".join(self.pkgs[n].label for n in broken)
                        reason = f"not built: its build needs {labels}, which failed"
                    self.fail(node, reason, None)
                    self.reporter.advance("build")
                    progressed = True
                    continue
                if not needs <= ready.keys():
                    continue
                self.pending.discard(node)
                progressed = True
                key = self.key(node, needs)
                self.keys[node] = key
                wheel = self.up_to_date(node, key)
                if wheel is not None:
                    self.reporter.message("debug", f"up to date: {wheel.name}")
                    self.done(node, "skipped", wheel, 0.0)
                    self.reporter.advance("build")
                    continue
                self.status[node] = "running"
                future = pool.submit(self.build_one, node, set(needs), dict(ready))
                running[future] = (node, key)

    def finish(self, node: Node, key: str, future: Future[_Outcome]) -> None:
        index, d = node
        try:
            outcome = future.result()
        except Exception as error:  # a bug or an unexpected OS error: keep the others going
            outcome = _Failed(f"internal error: {error!r}", None)
        if isinstance(outcome, _NeedMore):
            del self.status[node]
            self.dynamic[node] = outcome.dynamic
            self.enqueue(node)
            return
        self.reporter.advance("build")
        if isinstance(outcome, _Failed):
            self.fail(node, outcome.reason, outcome.log)
            return
        needs = self.needs(node) | outcome.dynamic
        self.dynamic[node] = outcome.dynamic
        key = self.key(node, needs)
        self.keys[node] = key
        state = self.states[index]
        previous = state.get(d)
        if isinstance(previous, dict) and previous.get("wheel") != outcome.wheel.name:
            (self.variants[index].wheels / str(previous.get("wheel"))).unlink(missing_ok=True)
        state[d] = {
            "key": key,
            "wheel": outcome.wheel.name,
            "sha256": file_sha256(outcome.wheel),
            "dynamic": sorted(outcome.dynamic),
        }
        self._write_state(index)
        self.done(node, "built", outcome.wheel, outcome.seconds)

    # ------------------------------------------------------------ smoke test

    def smoke_test(self, index: int) -> None:
        """Import every top-level module of each wheel built for the target, on the target.

        All the target's wheels (built or up to date) are unpacked into one directory so
        that runtime dependencies import too; the target's interpreter from the sysroot
        runs under the target's ``runner`` (qemu).  A package that does not import fails.
        """
        variant = self.variants[index]
        sysroot = variant.sysroot
        runner = variant.target.runner
        if sysroot is None or runner is None:
            return
        nodes = [n for n in self.status if n[0] == index]
        ready = [n for n in nodes if self.status[n] in ("built", "skipped")]
        todo = [n for n in nodes if self.status[n] == "built"]
        if not todo:
            return
        prefix = shlex.split(runner.format(sysroot=str(sysroot.root)))
        with fstree.temporary_directory(prefix="smoke-", dir=variant.root) as tmp:
            # Each wheel unpacked by the one extractor (its rules and limits), into a
            # directory of its own; all of them are on the path, so dependencies import.
            sites: list[str] = []
            modules: dict[Node, list[str]] = {}
            for n, node in enumerate(ready):
                site = tmp / str(n)
                try:
                    written = extract.extract_archive(
                        self.wheels[node], site, package=node[1], layout="tree"
                    )
                except ExtractError as error:
                    if node in todo:
                        self.fail(node, str(error), None)
                        todo.remove(node)
                    continue
                sites.append(str(site))
                if node in todo:
                    modules[node] = _top_level_modules(written)
            for node in todo:
                if not modules[node]:
                    continue
                code = f"import sys; sys.path[:0] = {sites!r}; " + "; ".join(
                    f"import {m}" for m in modules[node]
                )
                log = variant.logs / f"{node[1]}.log"
                cmd = [*prefix, str(sysroot.interpreter_path), "-I", "-c", code]
                with log.open("a", encoding="utf-8") as fh:
                    fh.write(f"\n# ---- import on the target: {shlex.join(cmd)} ----\n")
                    fh.flush()
                    try:
                        proc = subprocess.run(
                            [*self.isolation, *cmd],
                            stdin=subprocess.DEVNULL,
                            stdout=fh,
                            stderr=subprocess.STDOUT,
                            timeout=600,
                            check=False,
                        )
                        code_ = proc.returncode
                    except (OSError, subprocess.TimeoutExpired) as error:
                        fh.write(f"{error}\n")
                        code_ = -1
                if code_ != 0:
                    wheel = self.wheels[node]
                    self.states[index].pop(node[1], None)
                    self._write_state(index)
                    wheel.unlink(missing_ok=True)
                    self.fail(
                        node,
                        f"{', '.join(modules[node])} does not import on the target"
                        f" (under {prefix[0]}); see the end of the log",
                        log,
                    )
                else:
                    self.reporter.message(
                        "debug", f"imports on {variant.target.name}: {', '.join(modules[node])}"
                    )

    # ------------------------------------------------------------- one build

    def hook_environ(self, node: Node, venv: BuildEnv, netlog: Path) -> dict[str, str]:
        index, d = node
        pkg = self.pkgs[d]
        env = _offline_environ(venv.environ(os.environ))
        env[OFFLINE_ENV] = str(netlog)
        env["GIT_CEILING_DIRECTORIES"] = str(self.variants[index].src)
        env.setdefault("SOURCE_DATE_EPOCH", _DEFAULT_EPOCH)
        sysroot = self.variants[index].sysroot
        if sysroot is not None:
            env.update(sysroot.cross_env(self.variants[index].target.cc))
        env.update(pkg.build_env)
        return env

    def build_one(self, node: Node, needs: set[str], available: Mapping[str, Path]) -> _Outcome:
        index, d = node
        pkg = self.pkgs[d]
        variant = self.variants[index]
        for directory in (variant.logs, variant.src, variant.tmp, variant.wheels):
            directory.mkdir(parents=True, exist_ok=True)
        log = variant.logs / f"{d}.log"
        netlog = variant.logs / f"{d}.network"
        netlog.unlink(missing_ok=True)
        src = variant.src / d
        started = time.monotonic()
        venv = BuildEnv(variant.root / "envs" / d)
        environ = self.hook_environ(node, venv, netlog)
        with log.open("w", encoding="utf-8") as fh:
            fh.write(
                f"# monorepo build of {pkg.label} for {variant.target.name}\n"
                f"# source: {self.config.duni / d} (copied to {src})\n"
                f"# backend: {pkg.backend}"
                + (f" (backend-path {list(pkg.backend_path)})" if pkg.backend_path else "")
                + f"\n# build-requires: {list(pkg.requires)}\n"
                + (f"# build-env: {dict(pkg.build_env)}\n" if pkg.build_env else "")
            )

        def runner(
            cmd: Sequence[str],
            cwd: str | None = None,
            extra_environ: Mapping[str, str] | None = None,
        ) -> None:
            full = {**environ, **(extra_environ or {})}
            hook = cmd[2] if len(cmd) > 2 else "?"
            with log.open("a", encoding="utf-8") as fh:
                fh.write(f"\n# ---- {hook} ----\n")
                fh.flush()
                try:
                    subprocess.run(
                        [*self.isolation, *cmd],
                        cwd=cwd,
                        env=full,
                        stdin=subprocess.DEVNULL,
                        stdout=fh,
                        stderr=subprocess.STDOUT,
                        check=True,
                    )
                finally:
                    if len(cmd) > 3:
                        _log_backend_warnings(Path(cmd[3]) / "output.json", fh)

        def network_attempt() -> str | None:
            try:
                lines = netlog.read_text(encoding="utf-8").splitlines()
            except OSError:
                return None
            return lines[0] if lines else None

        if variant.cross and pkg.cross_compile is False:
            return _Failed(
                f"an overlay rule says {pkg.label} does not cross-compile"
                f" (cross-compile = false); build it on a {variant.target.machine} machine or"
                " fix it in the overlay",
                None,
            )
        hook = "get_requires_for_build_wheel"
        try:
            _copy_tree(self.config.duni / d, src)
            venv.ensure()
            venv.sync([available[n] for n in sorted(needs)])
            caller = BuildBackendHookCaller(
                str(src),
                pkg.backend,
                backend_path=list(pkg.backend_path) or None,
                runner=runner,
                python_executable=str(venv.python),
            )
            extra = caller.get_requires_for_build_wheel({})
            dynamic, problems = self.graph.needs(pkg, extra, strict=True)
            if problems:
                return _Failed(
                    "; ".join(problems).replace(
                        " to build,", " to build (its backend asked for it),"
                    ),
                    log,
                )
            if not dynamic <= available.keys():
                return _NeedMore(dynamic)
            if dynamic - needs:
                venv.sync([available[n] for n in sorted(needs | dynamic)])
            hook = "build_wheel"
            out = variant.tmp / d
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            name = caller.build_wheel(str(out), {})
            attempt = network_attempt()
            if attempt is not None:
                return _Failed(f"the build tried to reach the network: {attempt}", log)
            wheel = out / name
            target = variant.target
            check = check_wheel(
                wheel,
                platform=target.platform,
                machine=target.machine,
                python=target.python_version,
                require_extension=pkg.c_extension and pkg.c_extension_overlay,
            )
            if check.problems:
                with log.open("a", encoding="utf-8") as fh:
                    fh.write("\n# ---- checks ----\n" + "\n".join(check.problems) + "\n")
                return _Failed("; ".join(check.problems), log)
            final = variant.wheels / name
            os.replace(wheel, final)
            shutil.rmtree(out, ignore_errors=True)
            remove_tree(src, ignore_errors=True)
            return _Built(final, dynamic, time.monotonic() - started)
        except subprocess.CalledProcessError as error:
            attempt = network_attempt()
            if attempt is not None:
                return _Failed(f"the build tried to reach the network: {attempt}", log)
            return _Failed(
                f"the backend's {hook} hook failed (exit status {error.returncode})", log
            )
        except BackendUnavailable as error:
            with log.open("a", encoding="utf-8") as fh:
                fh.write(error.traceback)
            return _Failed(
                f"cannot import the build backend {pkg.backend!r}"
                f" ({(error.args[0] if error.args else '').splitlines()[0]}); is a package that"
                " provides it in the build requirements?",
                log,
            )
        except (HookMissing, UnsupportedOperation) as error:
            return _Failed(f"the backend {pkg.backend!r} cannot build a wheel ({error!r})", log)
        except OSError as error:
            return _Failed(f"{error}", log)


# --------------------------------------------------------------------- entry point


def _select(
    pkgs: Mapping[str, _Pkg], names: Sequence[str], target: Target, *, cross: bool = False
) -> list[str]:
    if names:
        chosen: list[str] = []
        unknown: list[str] = []
        for n in names:
            found = [d for d, p in pkgs.items() if d == n or p.name == canonicalize_name(n)]
            if not found:
                unknown.append(n)
            chosen += found
        if unknown:
            raise BuildError(
                f"not in duni/workspace.toml: {', '.join(unknown)}; build names locked packages"
            )
        return chosen
    return [
        d
        for d, p in pkgs.items()
        if (not p.targets or target.name in p.targets) and not (cross and p.role == "build")
    ]


def build(
    project: str | os.PathLike[str] = ".",
    *,
    target: str | None = None,
    out: str | os.PathLike[str] | None = None,
    jobs: int | None = None,
    packages: Sequence[str] = (),
    reporter: Reporter | None = None,
    isolate: bool | None = None,
    frozen: bool = False,
) -> BuildResult:
    """Build ``duni/`` into wheels for *target*, offline (see the module docstring).

    *out* is the wheel directory (default ``duni-build/<target>/wheels``); *jobs* the
    number of builds run at once (default: CPUs); *packages* limits the build to
    those names (plus what their builds need); *isolate* forces (True) or forbids
    (False) a network namespace (default: when available).  *frozen* builds from the
    lock as it is; otherwise a lock that no longer fits pyproject.toml raises
    :class:`~monorepo.errors.StaleLockError` (exit 1), like uv's ``--locked``.
    A package that fails is reported in :attr:`BuildResult.failed` with its log; the
    others still build.  Raises :class:`BuildError` for input problems: no workspace,
    unknown target or package, missing system libraries.
    """
    reporter = reporter if reporter is not None else NullReporter()
    config = load_config(Path(project))
    chosen = choose_target(config, target)
    workers = jobs if jobs is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise BuildError(f"--jobs must be at least 1, not {workers}")
    host_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if chosen.python_version != host_version:
        raise BuildError(
            f"target {chosen.name} is Python {chosen.python_version} but monorepo runs on"
            f" Python {host_version}; run monorepo build with a Python {chosen.python_version}"
            " (build backends run on the build machine's interpreter, also for cross builds)"
        )
    cross = not is_native(chosen)
    sysroot = _sysroot(chosen) if cross else None
    lock_path = config.root / lockfile.LOCK_NAME
    if not frozen and lock_path.exists():  # (no lock at all: _load_workspace says what to do)
        from monorepo.locking.freshness import require_fresh

        require_fresh(
            config,
            lockfile.read(lock_path),
            command="build",
            offline=True,  # build is offline: git overlays from their cached mirrors
        )
    order, pkgs = _load_workspace(config)
    root = config.root / BUILD_DIR / chosen.name
    wheels = Path(out).resolve() if out is not None else root / "wheels"
    target_variant = _Variant(
        target=chosen,
        root=root,
        wheels=wheels,
        cross=cross,
        sysroot=sysroot,
    )
    if cross:
        host = _host_variant_target(config)
        host_root = config.root / BUILD_DIR / host.name
        variants = [
            _Variant(target=host, root=host_root, wheels=host_root / "wheels", cross=False),
            target_variant,
        ]
    else:
        variants = [target_variant]
    selected = _select(pkgs, packages, chosen, cross=cross)
    for v in variants:
        v.root.mkdir(parents=True, exist_ok=True)
    result = BuildResult(target=chosen.name, wheels=wheels, logs=target_variant.logs)
    if isolate is False:
        isolation: list[str] = []
    else:
        isolation = network_isolation()
        if not isolation:
            if isolate:
                raise BuildError(
                    "cannot run builds in a network namespace here (unshare -rn failed);"
                    " allow unprivileged user namespaces or build without isolate=True"
                )
            reporter.message(
                "debug", "no network namespace available; relying on a dead proxy and audit hook"
            )
    with contextlib.ExitStack() as stack:
        for v in variants[::-1]:  # the target's lock first, then the build machine's
            stack.enter_context(filelock.FileLock(v.root / "lock"))
        builder = _Builder(
            config,
            pkgs,
            order,
            variants,
            jobs=workers,
            reporter=reporter,
            isolation=isolation,
        )
        index = len(variants) - 1
        requested = [(index, d) for d in selected]
        closure: set[str] = set()
        for d in selected:
            closure |= builder.static_needs(d)[0]
        native = closure if cross else closure | set(selected)
        check_system_libraries(
            {pkgs[d].label: pkgs[d].system_libraries for d in sorted(native)},
            reporter=reporter,
        )
        if target_variant.sysroot is not None:
            _check_sysroot_libraries(
                target_variant.sysroot, {pkgs[d].label: pkgs[d].system_libraries for d in selected}
            )
        builder.run(requested)
        if cross and chosen.runner:
            builder.smoke_test(index)
    for node in sorted(builder.results, key=builder.order):
        res = builder.results[node]
        status = builder.status[node]
        if status == "built":
            result.built.append(res)
        elif status == "skipped":
            result.skipped.append(res)
        else:
            result.failed.append(res)
    result.warnings = builder.warnings
    return result
