"""One package's build: its venv, the PEP 517 hooks, the checks on its wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyproject_hooks import (
    BackendUnavailable,
    BuildBackendHookCaller,
    HookMissing,
    UnsupportedOperation,
)

from monorepo._core import fstree
from monorepo._core.fstree import remove_tree
from monorepo._core.isolation import offline_environ
from monorepo._core.warnrelay import RELAY
from monorepo.building.buildenv import OFFLINE_ENV, BuildEnv
from monorepo.building.cargo import cargo_environ, explain_cargo_failure
from monorepo.building.crossenv import ConfigSettings, cross_environment, merge_config_settings
from monorepo.building.elfcheck import check_wheel
from monorepo.building.plan import Graph, Package
from monorepo.building.reproducible import (
    UMASK,
    add_prefix_maps,
    normalise_wheel,
    reproducible_environ,
    source_date_epoch,
)
from monorepo.building.targets import (
    Variant,
)
from monorepo.errors import MonorepoError
from monorepo.project.config import ProjectConfig
from monorepo.project.targets import host_target
from monorepo.vendoring.sbom import package_sbom

FIXED_ROOT = "/monorepo-build"
"""What the compilers write instead of the scratch paths of a build (``-ffile-prefix-map``)."""


@dataclass
class Built:
    """The wheel was built (with these build requirements its backend asked for)."""

    wheel: Path
    dynamic: set[str]
    seconds: float


@dataclass
class NeedMore:
    """The backend asked for locked packages not built yet: build those first."""

    dynamic: set[str]


@dataclass
class Failed:
    reason: str
    log: Path | None


Outcome = Built | NeedMore | Failed


def _copy_tree(source: Path, dest: Path) -> None:
    """A scratch copy of a vendored tree; iterative, so a tree of any depth copies."""
    remove_tree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fstree.copy_tree(source, dest)


def hook_environ(
    pkg: Package, variant: Variant, venv: BuildEnv, netlog: Path
) -> tuple[dict[str, str], ConfigSettings]:
    """The environment and config settings every hook of *pkg* gets: offline,
    reproducible, and for a cross build pointed at the target by
    :func:`~monorepo.building.crossenv.cross_environment` (its files under
    ``duni-build/<target>/cross/<dir>``).  The overlay's ``build-env`` and
    ``config-settings`` come last, so a rule can override what was generated.

    The scratch paths (source copy, build venv, sysroot) are mapped to fixed names for
    C compilers, so that a build elsewhere writes the same debug information.
    """
    env = offline_environ(venv.environ(os.environ))
    env[OFFLINE_ENV] = str(netlog)
    env["GIT_CEILING_DIRECTORIES"] = str(variant.src)
    env.update(reproducible_environ(source_date_epoch(pkg.upload_time)))
    maps = {
        str(variant.src / pkg.dir): f"{FIXED_ROOT}/src/{pkg.dir}",
        str(venv.root): f"{FIXED_ROOT}/env",
    }
    settings: ConfigSettings = {}
    if variant.sysroot is not None:
        env.pop("PKG_CONFIG_PATH", None)  # added to PKG_CONFIG_LIBDIR: host .pc files
        env.update(variant.sysroot.cross_env(variant.target.cc))
        cross = cross_environment(
            label=pkg.label,
            backend=pkg.backend,
            target=variant.target,
            sysroot=variant.sysroot,
            directory=variant.root / "cross" / pkg.dir,
            base_path=env.get("PATH", os.defpath),
            host_machine=host_target().machine,
        )
        env.update(cross.environ)
        settings = cross.config_settings
        maps[str(variant.sysroot.root)] = f"{FIXED_ROOT}/sysroot"
    env.update(pkg.build_env)
    add_prefix_maps(env, maps)
    return env, merge_config_settings(settings, pkg.config_settings_for(variant.target))


def _cargo(
    config: ProjectConfig, pkg: Package, variant: Variant, environ: Mapping[str, str]
) -> dict[str, str] | str:
    """cargo's environment for a Rust extension (see :mod:`monorepo.building.cargo`)."""
    sysroot = variant.sysroot
    cross = None
    if variant.cross and sysroot is not None:
        cc = variant.target.cc or f"{sysroot.triplet}-gcc"
        pythonpath = sysroot.root / sysroot.pythonpath_dir
        cross = (variant.target.machine, cc, sysroot.root, pythonpath, sysroot.arch)
    home = variant.root / "cargo" / pkg.dir
    return cargo_environ(
        pkg.crates,
        label=pkg.label,
        duni=config.duni,
        home=home,
        path=environ.get("PATH", os.defpath),
        cross=cross,
        remap={
            str(variant.src / pkg.dir): f"{FIXED_ROOT}/src/{pkg.dir}",
            str(config.duni / ".crates"): f"{FIXED_ROOT}/crates",
            str(home): f"{FIXED_ROOT}/cargo",
        },
        rustflags=environ.get("RUSTFLAGS", ""),
    )


def build_one(
    config: ProjectConfig,
    pkg: Package,
    variant: Variant,
    graph: Graph,
    needs: set[str],
    available: Mapping[str, Path],
    isolation: Sequence[str],
) -> Outcome:
    """Build *pkg* for *variant* in a venv holding the wheels of *needs* (from *available*).

    The hooks are asked in turn (``get_requires_for_build_wheel``, then ``build_wheel``);
    each is named in the log before it runs, and its output and relayed warnings follow.
    """
    d = pkg.dir
    for directory in (variant.logs, variant.src, variant.tmp, variant.wheels):
        directory.mkdir(parents=True, exist_ok=True)
    log = variant.logs / f"{d}.log"
    netlog = variant.logs / f"{d}.network"
    netlog.unlink(missing_ok=True)
    src = variant.src / d
    started = time.monotonic()
    venv = BuildEnv(variant.root / "envs" / d)
    environ, settings = hook_environ(pkg, variant, venv, netlog)
    with log.open("w", encoding="utf-8") as fh:
        fh.write(
            f"# monorepo build of {pkg.label} for {variant.target.name}\n"
            f"# source: {config.duni / d} (copied to {src})\n"
            f"# backend: {pkg.backend}"
            + (f" (backend-path {list(pkg.backend_path)})" if pkg.backend_path else "")
            + f"\n# build-requires: {list(pkg.requires)}\n"
            + (f"# build-env: {dict(pkg.build_env)}\n" if pkg.build_env else "")
            + (f"# config-settings: {settings}\n" if settings else "")
        )

    def runner(
        cmd: Sequence[str],
        cwd: str | None = None,
        extra_environ: Mapping[str, str] | None = None,
    ) -> None:
        full = {**environ, **(extra_environ or {})}
        with log.open("a", encoding="utf-8") as fh:
            subprocess.run(
                [*isolation, *cmd],
                cwd=cwd,
                env=full,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                check=True,
                umask=UMASK,
            )

    def section(name: str) -> None:
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"\n# ---- {name} ----\n")

    def network_attempt() -> str | None:
        try:
            lines = netlog.read_text(encoding="utf-8").splitlines()
        except OSError:
            return None
        return lines[0] if lines else None

    if variant.cross and pkg.cross_compile is False:
        return Failed(
            f"an overlay rule says {pkg.label} does not cross-compile"
            f" (cross-compile = false); build it on a {variant.target.machine} machine or"
            " fix it in the overlay",
            None,
        )
    if pkg.crates:
        prepared = _cargo(config, pkg, variant, environ)
        if isinstance(prepared, str):
            with log.open("a", encoding="utf-8") as fh:
                fh.write(f"\n# ---- cargo ----\n{prepared}\n")
            return Failed(prepared, log)
        environ.update(prepared)
    hook = "get_requires_for_build_wheel"
    try:
        with RELAY.to(log):
            _copy_tree(config.duni / d, src)
            venv.ensure()
            venv.sync([available[n] for n in sorted(needs)])
            caller = BuildBackendHookCaller(
                str(src),
                pkg.backend,
                backend_path=list(pkg.backend_path) or None,
                runner=runner,
                python_executable=str(venv.python),
            )
            section(hook)
            extra = caller.get_requires_for_build_wheel(settings)
            dynamic, problems = graph.needs(pkg, extra, strict=True)
            if problems:
                return Failed(
                    "; ".join(problems).replace(
                        " to build,", " to build (its backend asked for it),"
                    ),
                    log,
                )
            if not dynamic <= available.keys():
                return NeedMore(dynamic)
            if dynamic - needs:
                venv.sync([available[n] for n in sorted(needs | dynamic)])
            hook = "build_wheel"
            out = variant.tmp / d
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            section(hook)
            name = caller.build_wheel(str(out), settings)
        attempt = network_attempt()
        if attempt is not None:
            return Failed(f"the build tried to reach the network: {attempt}", log)
        wheel = out / name
        try:
            sboms = (
                {f"sboms/{pkg.name}.cdx.json": package_sbom(pkg.locked, config.duni).encode()}
                if pkg.locked is not None
                else {}
            )
            normal = normalise_wheel(
                wheel, source_date_epoch(pkg.upload_time), package=str(pkg.name), extra=sboms
            )
        except MonorepoError as error:
            return Failed(str(error), log)
        if normal.changed:
            with log.open("a", encoding="utf-8") as fh:
                fh.write(f"\n# ---- normalised {name}: {'; '.join(normal.notes)} ----\n")
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
            return Failed("; ".join(check.problems), log)
        final = variant.wheels / name
        os.replace(wheel, final)
        shutil.rmtree(out, ignore_errors=True)
        remove_tree(src, ignore_errors=True)
        return Built(final, dynamic, time.monotonic() - started)
    except subprocess.CalledProcessError as error:
        attempt = network_attempt()
        if attempt is not None:
            return Failed(f"the build tried to reach the network: {attempt}", log)
        failed = f"the backend's {hook} hook failed (exit status {error.returncode})"
        if pkg.crates:
            explained = explain_cargo_failure(
                log.read_text(encoding="utf-8", errors="replace"), pkg.label
            )
            if explained is not None:
                return Failed(f"{failed}: {explained}", log)
        return Failed(failed, log)
    except BackendUnavailable as error:
        with log.open("a", encoding="utf-8") as fh:
            fh.write(error.traceback)
        return Failed(
            f"cannot import the build backend {pkg.backend!r}"
            f" ({(error.args[0] if error.args else '').splitlines()[0]}); is a package that"
            " provides it in the build requirements?",
            log,
        )
    except (HookMissing, UnsupportedOperation) as error:
        return Failed(f"the backend {pkg.backend!r} cannot build a wheel ({error!r})", log)
    except OSError as error:
        return Failed(f"{error}", log)
