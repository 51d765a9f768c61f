"""System libraries that overlays say a build needs, checked on the machine or in the sysroot."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from monorepo._core.reporter import NullReporter, Reporter
from monorepo.errors import BuildError
from monorepo.sysroot.info import SysrootInfo


def check_sysroot_libraries(
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


# -------------------------------------------------------------------- host tools


def check_host_tools(
    wanted: Mapping[str, Mapping[str, str]],
    *,
    which: Callable[[str], str | None] | None = None,
) -> None:
    """Raise :class:`BuildError` naming every missing build-machine tool, before any build.

    *wanted* maps a package label to its overlay ``host-tools`` (program -> the Debian
    package that provides it).  Programs are looked up on ``PATH`` (*which*, default
    :func:`shutil.which`): a build runs them from there, whatever the distribution.  One
    error names every missing program, the packages whose builds need it and one
    ``apt-get install`` line for all of them.
    """
    find = which if which is not None else shutil.which
    missing: dict[str, list[str]] = {}
    provider: dict[str, str] = {}
    for label, tools in sorted(wanted.items()):
        for program, debian in sorted(tools.items()):
            if program in missing or find(program) is None:
                missing.setdefault(program, []).append(label)
                provider.setdefault(program, debian)
    if missing:
        listed = ", ".join(
            f"{p} (Debian package {provider[p]}; for {', '.join(missing[p])})"
            for p in sorted(missing)
        )
        sudo = "" if hasattr(os, "geteuid") and os.geteuid() == 0 else "sudo "
        names = " ".join(sorted(set(provider.values())))
        raise BuildError(
            f"programs the build runs are not on PATH: {listed}. Install them with:\n"
            f"  {sudo}apt-get install -y {names}\n"
            "then run `monorepo build` again (overlay rules declare them as host-tools: they"
            " are not built from source)"
        )
