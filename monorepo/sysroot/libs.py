"""System libraries and sysroots: what a lock asks for, and whether a sysroot holds it.

Overlay rules name the distribution packages a build needs (``system-libraries =
{ debian = ["libyaml-dev"] }``) and the lock records them per package.
:func:`locked_system_libraries` reads them back for one target, so that
``python -m monorepo.sysroot DEST --lock pylock.toml --target NAME`` installs them; and
:func:`missing_libraries` tells which a sysroot lacks, from its package list when it
has one (ours, or ``var/lib/dpkg/status``) and from its files otherwise (a Yocto or
Buildroot tree, Debian packages unpacked by hand).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from monorepo.sysroot.info import ARCHES, SysrootError, SysrootInfo

__all__ = [
    "arch_for_machine",
    "lock_target",
    "locked_system_libraries",
    "missing_libraries",
    "probe_names",
]

#: Debian packages whose files are not named after them.
_FILES: dict[str, tuple[str, ...]] = {
    "zlib1g-dev": ("libz.so", "zlib.pc"),
    "libjpeg-dev": ("libjpeg.so", "libjpeg.pc"),
    "libjpeg62-turbo-dev": ("libjpeg.so", "libjpeg.pc"),
    "libssl-dev": ("libssl.so", "openssl.pc"),
    "libpq-dev": ("libpq.so", "libpq.pc"),
    "libxslt1-dev": ("libxslt.so", "libxslt.pc"),
    "libxml2-dev": ("libxml2.so", "libxml-2.0.pc"),
    "libyaml-dev": ("libyaml.so", "yaml-0.1.pc"),
    "libffi-dev": ("libffi.so", "libffi.pc"),
    "libfreetype-dev": ("libfreetype.so", "freetype2.pc"),
    "libfreetype6-dev": ("libfreetype.so", "freetype2.pc"),
}


def _stems(package: str) -> list[str]:
    """Library stems a ``-dev`` package name suggests: libxslt1-dev -> xslt1, xslt."""
    base = package.split(":", 1)[0].removesuffix("-dev").removeprefix("lib")
    stems = [base, base.split("-", 1)[0]]
    stems += [re.sub(r"[0-9][0-9.]*[a-z]?$", "", s) for s in list(stems)]
    return [s for s in dict.fromkeys(stems) if s]


def probe_names(package: str) -> tuple[str, ...]:
    """The files (``libX.so``, ``X.pc``) whose presence stands for *package* in a sysroot."""
    name = package.split(":", 1)[0]
    if name in _FILES:
        return _FILES[name]
    names: list[str] = []
    for stem in _stems(name):
        names += [f"lib{stem}.so", f"lib{stem}.a", f"{stem}.pc", f"lib{stem}.pc"]
    return tuple(dict.fromkeys(names))


def _search_dirs(info: SysrootInfo) -> list[Path]:
    dirs = [*info.lib_paths]
    for rel in (f"usr/lib/{info.triplet}", f"lib/{info.triplet}", "usr/lib", "usr/lib64", "lib"):
        dirs.append(info.root / rel)
    out: list[Path] = []
    for d in dirs:
        for candidate in (d, d / "pkgconfig"):
            if candidate.is_dir() and candidate not in out:
                out.append(candidate)
    share = info.root / "usr/share/pkgconfig"
    if share.is_dir():
        out.append(share)
    return out


def _has_files(info: SysrootInfo, package: str, dirs: Sequence[Path]) -> bool:
    # lexists: a -dev package's libX.so is often an absolute link, dangling on the host
    return any(os.path.lexists(d / n) for d in dirs for n in probe_names(package))


def missing_libraries(
    info: SysrootInfo, wanted: Mapping[str, Iterable[str]]
) -> dict[str, list[str]]:
    """Distribution package -> the labels needing it, for each one *info*'s tree lacks.

    *wanted* maps a package label (``pyyaml 6.0.2``) to Debian package names.  A package
    counts as present when the sysroot's package list names it or, for a tree without a
    complete list (one not made by ``python -m monorepo.sysroot`` nor by dpkg, or to which
    files were added by hand), when the files it stands for (:func:`probe_names`) are there.
    """
    dirs = _search_dirs(info)
    missing: dict[str, list[str]] = {}
    for label, names in sorted(wanted.items()):
        for lib in names:
            name = lib.split(":", 1)[0]
            if name in info.packages or (name not in missing and _has_files(info, name, dirs)):
                continue
            labels = missing.setdefault(name, [])
            if label not in labels:
                labels.append(label)
    return missing


def locked_system_libraries(
    lock: Path, target: str | None, *, distribution: str = "debian"
) -> dict[str, list[str]]:
    """Distribution package -> the locked packages needing it, for the runtime packages of
    *target* (every target when ``None``) in the lock at *lock*."""
    from monorepo.errors import LockFileError
    from monorepo.project import lockfile

    try:
        document = lockfile.read(lock)
    except LockFileError as e:
        raise SysrootError(str(e)) from e
    runtime = [p for p in document.packages if p.role == "runtime"]
    names = sorted({t for p in runtime for t in p.targets})
    if target is not None and names and target not in names:
        raise SysrootError(f"{lock} locks no target named {target!r} (targets: {', '.join(names)})")
    wanted: dict[str, list[str]] = {}
    for package in runtime:
        if target is not None and package.targets and target not in package.targets:
            continue
        libs = package.tool.get("system-libraries", {})
        if not isinstance(libs, Mapping):
            continue
        for lib in libs.get(distribution, ()):
            wanted.setdefault(str(lib), []).append(f"{package.name} {package.version}")
    return dict(sorted(wanted.items()))


def arch_for_machine(machine: str) -> str:
    """The Debian architecture of a target's ``machine`` (``platform.machine()``)."""
    for arch in ARCHES.values():
        if machine in (arch.machine, arch.debian):
            return arch.debian
    if re.fullmatch(r"armv[78].*l|armhf|arm", machine):
        return "armhf"
    if re.fullmatch(r"i[3-6]86|x86", machine):
        return "i386"
    raise SysrootError(
        f"no Debian architecture is known for machine {machine!r}; pass --arch"
        f" ({', '.join(ARCHES)})"
    )


def lock_target(lock: Path, target: str | None) -> tuple[str | None, str | None]:
    """(machine, python) of *target* as the ``pyproject.toml`` beside *lock* defines it;
    ``(None, None)`` without a target or a ``pyproject.toml`` there."""
    pyproject = lock.absolute().parent / "pyproject.toml"
    if target is None or not pyproject.is_file():
        return None, None
    from monorepo.errors import ConfigError
    from monorepo.project.config import load_config

    try:
        config = load_config(pyproject)
    except ConfigError as e:
        raise SysrootError(str(e)) from e
    for t in config.targets:
        if t.name == target:
            return t.machine, t.python_version
    names = ", ".join(t.name for t in config.targets)
    raise SysrootError(f"{pyproject} defines no target named {target!r} (targets: {names})")
