"""``monorepo build``'s entry point: the target chosen, the variants laid out, the graph run.

The package docstring (:mod:`monorepo.building`) describes the layout under
``duni-build/<target>/``, the bootstrap, cross builds, the offline guard and the checks.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import filelock
from packaging.utils import canonicalize_name

from monorepo._core.isolation import network_isolation
from monorepo._core.paths import CacheDir
from monorepo._core.reporter import NullReporter, Reporter
from monorepo._core.warnrelay import RELAY
from monorepo.building.cache import BuildCache
from monorepo.building.executors import (
    DASK_SCHEME,
    LOCAL,
    Executor,
    LocalExecutor,
    check_executor_spec,
)
from monorepo.building.plan import Package, load_plan
from monorepo.building.record import KeyMaker, write_records
from monorepo.building.results import BuildResult
from monorepo.building.scheduler import Scheduler
from monorepo.building.smoke import smoke_test
from monorepo.building.syslibs import check_libraries
from monorepo.building.targets import (
    Variant,
    choose_target,
    host_variant_target,
    is_native,
    target_sysroot,
)
from monorepo.errors import BuildError
from monorepo.project import lockfile
from monorepo.project.config import load_config
from monorepo.project.targets import Target

__all__ = ["BUILD_DIR", "build"]

BUILD_DIR = "duni-build"
"""Where builds go, beside pyproject.toml: ``duni-build/<target>/``."""


# ----------------------------------------------------------------------- building


"""(variant index, package dir): variant 0 builds for the build machine's venv."""


# --------------------------------------------------------------------- entry point


def _toolchain(keys: KeyMaker, pkg: Package, variant: Variant) -> object:
    """What compiles *pkg* for *variant*, as the build record keys it: the compiler and
    its ``--version`` for a C extension (rustc and cargo too for Rust), the sysroot's digest for a cross build."""
    identity = keys.toolchain_of(pkg, variant)
    compiler = identity.as_dict() if identity is not None else None
    sysroot = keys.sysroot(variant.sysroot) if variant.sysroot is not None else None
    return [compiler, sysroot]


def _build_cache(
    choice: str | os.PathLike[str] | bool, cache_dir: str | os.PathLike[str] | None
) -> BuildCache | None:
    if choice is False:
        return None
    if choice is True:
        return BuildCache(CacheDir.at(cache_dir).builds)
    return BuildCache(Path(choice).expanduser().resolve())


def open_executor(
    spec: str | None, *, jobs: int, reporter: Reporter, where: str = "--executor"
) -> Executor:
    """The executor *spec* names: ``local`` (None too) with *jobs* threads, or a Dask
    cluster's scheduler (``dask://HOST:PORT``)."""
    spec = check_executor_spec(spec or LOCAL, where=where)
    if spec == LOCAL:
        return LocalExecutor(jobs)
    from monorepo.building.cluster import DaskExecutor

    return DaskExecutor("tcp://" + spec[len(DASK_SCHEME) :], reporter=reporter)


def _select(
    pkgs: Mapping[str, Package], names: Sequence[str], target: Target, *, cross: bool = False
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
                f"not in duni/workspace.toml: {', '.join(unknown)}; build names locked packages",
                exit_code=2,
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
    cache_dir: str | os.PathLike[str] | None = None,
    build_root: str | os.PathLike[str] | None = None,
    executor: str | Executor | None = None,
    build_cache: str | os.PathLike[str] | bool = True,
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
    unknown target or package, missing system libraries.  *cache_dir* is where the
    freshness check finds git overlays' mirrors (default: ``MONOREPO_CACHE_DIR``, else
    the user cache directory); nothing else of a build comes from the cache.
    *build_root* replaces ``duni-build``: each target's builds, venvs and record go
    under ``<build_root>/<target>`` (``verify --rebuild`` builds in a scratch one).
    Every build writes ``<target>/build.toml``, the build record
    (:mod:`monorepo.building.record`).
    *executor* is where builds run: ``local`` (threads here, the default) or
    ``dask://HOST:PORT`` (a Dask cluster, :mod:`monorepo.building.cluster`), or an
    :class:`~monorepo.building.executors.Executor`; default ``[tool.monorepo] executor``.
    *build_cache* is the directory of built wheels by input key
    (:mod:`monorepo.building.cache`): True for ``builds/`` in the cache directory, a path
    for another (e.g. on a shared file system), False for none.
    """
    reporter = reporter if reporter is not None else NullReporter()
    config = load_config(Path(project))
    chosen = choose_target(config, target)
    workers = jobs if jobs is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise BuildError(f"--jobs must be at least 1, not {workers}", exit_code=2)
    host_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if chosen.python_version != host_version:
        raise BuildError(
            f"target {chosen.name} is Python {chosen.python_version} but monorepo runs on"
            f" Python {host_version}; run monorepo build with a Python {chosen.python_version}"
            " (build backends run on the build machine's interpreter, also for cross builds)"
        )
    cross = not is_native(chosen)
    sysroot = target_sysroot(chosen) if cross else None
    for note in sysroot.notes if sysroot is not None else ():
        reporter.message("warning", note)
    lock_path = config.root / lockfile.LOCK_NAME
    if not frozen and lock_path.exists():  # (no lock at all: load_plan says what to do)
        from monorepo.locking.freshness import require_fresh

        require_fresh(
            config,
            lockfile.read(lock_path),
            command="build",
            cache=CacheDir.at(cache_dir),
            offline=True,  # build is offline: git overlays from their cached mirrors
        )
    order, pkgs = load_plan(config)
    base = Path(build_root).resolve() if build_root is not None else config.root / BUILD_DIR
    root = base / chosen.name
    wheels = Path(out).resolve() if out is not None else root / "wheels"
    target_variant = Variant(
        target=chosen,
        root=root,
        wheels=wheels,
        cross=cross,
        sysroot=sysroot,
    )
    if cross:
        host = host_variant_target(config)
        host_root = base / host.name
        variants = [
            Variant(target=host, root=host_root, wheels=host_root / "wheels", cross=False),
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
    if executor is None and config.executor is not None:
        executor = check_executor_spec(
            config.executor, where=f"{config.pyproject}: [tool.monorepo] executor"
        )
    if executor is None or isinstance(executor, str):
        engine = open_executor(executor, jobs=workers, reporter=reporter)
    else:
        engine = executor
    with contextlib.ExitStack() as stack:
        for v in variants[::-1]:  # the target's lock first, then the build machine's
            stack.enter_context(filelock.FileLock(v.root / "lock"))
        stack.enter_context(RELAY.installed())  # backend warnings go to the logs
        stack.callback(engine.close)  # (once more: also when something fails before the run)
        keys = KeyMaker()
        builder = Scheduler(
            config,
            pkgs,
            order,
            variants,
            jobs=workers,
            reporter=reporter,
            isolation=isolation,
            isolate=isolate,
            executor=engine,
            cache=_build_cache(build_cache, cache_dir),
            toolchain=lambda pkg, variant: _toolchain(keys, pkg, variant),
        )
        index = len(variants) - 1
        requested = [(index, d) for d in selected]
        closure: set[str] = set()
        for d in selected:
            closure |= builder.static_needs(d)[0]
        native = closure if cross else closure | set(selected)
        # every build this run may start (build requirements of build requirements too)
        # runs its host tools on this machine, cross or not
        builds = set(selected)
        todo = list(selected)
        while todo:
            for d in builder.static_needs(todo.pop())[0] - builds:
                builds.add(d)
                todo.append(d)
        check_libraries(
            {pkgs[d].label: pkgs[d].system_libraries for d in sorted(native)},
            target_variant.sysroot,
            {pkgs[d].label: pkgs[d].system_libraries for d in selected},
            target=chosen.name,
            lock=lock_path,
            reporter=reporter,
            tools={pkgs[d].label: pkgs[d].host_tools for d in sorted(builds)},
        )
        builder.run(requested)
        write_records(builder, keys)
        if cross and chosen.runner:
            smoke_test(builder, index)
    for node in sorted(builder.results, key=builder.order):
        res = builder.results[node]
        status = builder.status[node]
        if status == "built":
            result.built.append(res)
        elif status == "skipped":
            result.skipped.append(res)
        elif status == "cached":
            result.cached.append(res)
        else:
            result.failed.append(res)
    result.warnings = builder.warnings
    return result
