"""System libraries that overlays say a build needs, checked on the machine and in the sysroot.

Both checks run before any build starts and end in one error: every missing library,
the package that needs it, and the command that installs it -- ``apt-get install`` for
the build machine, ``python -m monorepo.sysroot DEST --lock pylock.toml --target NAME``
for a sysroot that command made, the tree's own tooling for one it did not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from monorepo._core.reporter import NullReporter, Reporter
from monorepo.errors import BuildError
from monorepo.sysroot.info import SysrootInfo
from monorepo.sysroot.libs import missing_libraries, probe_names

Wanted = Mapping[str, Mapping[str, Sequence[str]]]
"""Package label (``pyyaml 6.0.2``) -> its overlay ``system-libraries`` (distribution ->
package names)."""


def _listed(missing: Mapping[str, Sequence[str]]) -> str:
    return ", ".join(f"{n} (for {', '.join(missing[n])})" for n in sorted(missing))


def sysroot_problem(
    info: SysrootInfo,
    wanted: Wanted,
    *,
    target: str | None = None,
    lock: Path | None = None,
) -> str | None:
    """What the sysroot lacks of the Debian ``system-libraries`` of cross-built packages,
    with the command that adds them; ``None`` when nothing is missing."""
    missing = missing_libraries(info, {k: v.get("debian", ()) for k, v in wanted.items()})
    if not missing:
        return None
    names = sorted(missing)
    head = f"the sysroot {info.root} lacks system packages the build needs: {_listed(missing)}"
    if info.made:
        if lock is not None and target is not None:
            how = f"--lock {lock} --target {target}"
        else:
            how = " ".join(f"--package {n}" for n in names)
        return (
            f"{head}. Add them (the sysroot keeps what it has) with:\n"
            f"  python -m monorepo.sysroot {info.root} {how}"
        )
    looked = ""
    if info.origin == "files":
        looked = (
            " (the sysroot has no package database, so they were looked for as files: "
            + "; ".join(f"{n}: {' or '.join(probe_names(n)[:2])}" for n in names)
            + ")"
        )
    return (
        f"{head}{looked}. monorepo did not make this sysroot, so install them into it with"
        " the tooling that did: Debian packages unpacked by hand, `dpkg-deb -x"
        f" <package>_<version>_{info.arch}.deb {info.root}` for each (with the libraries"
        " they depend on); a Yocto SDK, the -dev packages in the image's"
        " TOOLCHAIN_TARGET_TASK; Buildroot, the matching BR2_PACKAGE_ options"
        " (docs/cross.md, 'Bringing your own sysroot')"
    )


def check_sysroot_libraries(
    info: SysrootInfo,
    wanted: Wanted,
    *,
    target: str | None = None,
    lock: Path | None = None,
) -> None:
    """Raise :class:`BuildError` when the sysroot lacks a cross-built package's library."""
    problem = sysroot_problem(info, wanted, target=target, lock=lock)
    if problem is not None:
        raise BuildError(problem)


# -------------------------------------------------------------- the build machine


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


def host_problem(
    wanted: Wanted,
    *,
    os_release: Path = Path("/etc/os-release"),
    installed: Callable[[str], bool] | None = None,
    reporter: Reporter | None = None,
) -> str | None:
    """What this machine lacks of *wanted*, with the ``apt-get`` command; ``None`` when
    nothing is missing.  Debian and its derivatives are checked with ``dpkg-query``;
    on other systems the libraries are only reported, as a warning."""
    reporter = reporter if reporter is not None else NullReporter()
    if not wanted:
        return None
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
        return None
    check = installed if installed is not None else _dpkg_installed
    missing: dict[str, list[str]] = {}
    for label, libs in sorted(wanted.items()):
        for lib in libs.get("debian", ()):
            if lib in missing or not check(lib):
                missing.setdefault(lib, []).append(label)
    if not missing:
        return None
    sudo = "" if hasattr(os, "geteuid") and os.geteuid() == 0 else "sudo "
    return (
        f"system packages the build needs are not installed: {_listed(missing)}. Install"
        f" them with:\n  {sudo}apt-get install -y {' '.join(sorted(missing))}"
    )


def check_system_libraries(
    wanted: Wanted,
    *,
    os_release: Path = Path("/etc/os-release"),
    installed: Callable[[str], bool] | None = None,
    reporter: Reporter | None = None,
) -> None:
    """Raise :class:`BuildError` listing every missing system package, with the install command.

    *wanted* maps a package label to its overlay ``system-libraries`` (distribution ->
    package names).
    """
    problem = host_problem(wanted, os_release=os_release, installed=installed, reporter=reporter)
    if problem is not None:
        raise BuildError(f"{problem}\nthen run `monorepo build` again")


def check_libraries(
    host: Wanted,
    sysroot: SysrootInfo | None = None,
    cross: Wanted | None = None,
    *,
    target: str | None = None,
    lock: Path | None = None,
    reporter: Reporter | None = None,
    os_release: Path = Path("/etc/os-release"),
    installed: Callable[[str], bool] | None = None,
    tools: Mapping[str, Mapping[str, str]] | None = None,
    which: Callable[[str], str | None] | None = None,
) -> None:
    """All checks, before any build starts: one :class:`BuildError` naming every missing
    library of the build machine (*host*) and of the *sysroot* (*cross*), and every
    missing program of the build machine (*tools*, overlay ``host-tools``), each with the
    packages needing it and the command that installs it."""
    problems = [
        host_problem(host, os_release=os_release, installed=installed, reporter=reporter),
        None
        if sysroot is None or not cross
        else sysroot_problem(sysroot, cross, target=target, lock=lock),
        tools_problem(tools or {}, which=which),
    ]
    found = [p for p in problems if p is not None]
    if found:
        raise BuildError("\n".join([*found, "then run `monorepo build` again"]))


# -------------------------------------------------------------------- host tools


def tools_problem(
    wanted: Mapping[str, Mapping[str, str]],
    *,
    which: Callable[[str], str | None] | None = None,
) -> str | None:
    """Every build-machine program of *wanted* not on ``PATH``, with the ``apt-get`` command.

    *wanted* maps a package label to its overlay ``host-tools`` (program -> the Debian
    package that provides it).  Programs are looked up on ``PATH`` (*which*, default
    :func:`shutil.which`): a build runs them from there, whatever the distribution.
    ``None`` when nothing is missing.
    """
    find = which if which is not None else shutil.which
    missing: dict[str, list[str]] = {}
    provider: dict[str, str] = {}
    for label, tools in sorted(wanted.items()):
        for program, debian in sorted(tools.items()):
            if program in missing or find(program) is None:
                missing.setdefault(program, []).append(label)
                provider.setdefault(program, debian)
    if not missing:
        return None
    listed = ", ".join(
        f"{p} (Debian package {provider[p]}; for {', '.join(missing[p])})" for p in sorted(missing)
    )
    sudo = "" if hasattr(os, "geteuid") and os.geteuid() == 0 else "sudo "
    names = " ".join(sorted(set(provider.values())))
    return (
        f"programs the build runs are not on PATH: {listed} (overlay rules declare them as"
        f" host-tools: they are not built from source). Install them with:\n"
        f"  {sudo}apt-get install -y {names}"
    )


def check_host_tools(
    wanted: Mapping[str, Mapping[str, str]],
    *,
    which: Callable[[str], str | None] | None = None,
) -> None:
    """Raise :class:`BuildError` naming every missing build-machine program (:func:`tools_problem`)."""
    problem = tools_problem(wanted, which=which)
    if problem is not None:
        raise BuildError(f"{problem}\nthen run `monorepo build` again")
