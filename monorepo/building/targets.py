"""Which target a build is for, whether it is cross-compiled, and where its builds go."""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from monorepo.building.elfcheck import MACHINES
from monorepo.errors import BuildError
from monorepo.project.config import ProjectConfig
from monorepo.project.targets import Target, host_target
from monorepo.sysroot.discover import read_sysroot
from monorepo.sysroot.info import SysrootError, SysrootInfo
from monorepo.sysroot.libs import arch_for_machine

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
            f" (targets: {names})",
            exit_code=2,
        )
    if len(targets) == 1:
        return targets[0]
    native = [t for t in targets if is_native(t)]
    if native:
        return native[0]
    raise BuildError(
        f"{config.pyproject} has several targets ({names}); choose one with --target",
        exit_code=2,
    )


def host_variant_target(config: ProjectConfig) -> Target:
    """The target whose builds fill a cross build's venv: a native one of the project's
    (so its ``duni-build/<name>`` is shared with native builds), else this machine."""
    host = host_target()
    for t in config.targets:
        if is_native(t) and t.python_version == host.python_version:
            return t
    return host


def target_sysroot(target: Target) -> SysrootInfo:
    """The target's sysroot, as ``python -m monorepo.sysroot`` describes it."""
    if target.sysroot is None:
        try:
            arch = f" --arch {arch_for_machine(target.machine)}"
        except SysrootError:
            arch = " --arch <Debian architecture>"
        raise BuildError(
            f"target {target.name} ({target.platform} {target.machine}) is not this machine"
            f" ({host_target().platform} {host_target().machine}), so it is cross-compiled, and"
            " that needs a sysroot (any directory holding the target's CPython): make a Debian"
            f" one with `python -m monorepo.sysroot sysroots/{target.machine}{arch}"
            f" --lock pylock.toml --target {target.name}` and add sysroot ="
            f' "sysroots/{target.machine}", cc and runner to the target, or point sysroot at'
            " your own (docs/cross.md)"
        )
    try:
        info = read_sysroot(Path(target.sysroot), python=target.python_version)
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
    if target.runner and not info.interpreter_path.exists():
        raise BuildError(
            f"target {target.name}: its sysroot {info.root} has no {info.interpreter}, which"
            " runs the import check under the target's runner; add the target's Python"
            " interpreter to the sysroot, or remove runner from the target"
        )
    compiler = shlex.split(target.cc)[0] if target.cc else f"{info.triplet}-gcc"
    if shutil.which(compiler) is None:
        raise BuildError(
            f"target {target.name}: the cross compiler {compiler} is not installed (Debian:"
            f" apt-get install -y gcc-{info.triplet}); set cc in the target to use another"
        )
    return info


@dataclass(frozen=True)
class Variant:
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
