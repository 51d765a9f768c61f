"""``monorepo-sysroot.toml``: what a sysroot holds and where a build finds it."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from monorepo.errors import MonorepoError

TOML_NAME = "monorepo-sysroot.toml"
FORMAT = 1
PYTHONPATH_DIR = "monorepo-pythonpath"


class SysrootError(MonorepoError):
    """A sysroot could not be made or read; the message names the package or file."""

    code = "sysroot"


@dataclass(frozen=True)
class Arch:
    """What a Debian architecture name means to a cross build."""

    debian: str
    triplet: str
    """The multiarch tuple: ``usr/lib/<triplet>``, ``<triplet>-gcc``."""
    machine: str
    """``platform.machine()`` on the target."""
    qemu: str
    """The qemu-user binary that runs the target's programs."""


ARCHES: dict[str, Arch] = {
    a.debian: a
    for a in (
        Arch("arm64", "aarch64-linux-gnu", "aarch64", "qemu-aarch64"),
        Arch("amd64", "x86_64-linux-gnu", "x86_64", "qemu-x86_64"),
        Arch("armhf", "arm-linux-gnueabihf", "armv7l", "qemu-arm"),
        Arch("i386", "i386-linux-gnu", "i686", "qemu-i386"),
        Arch("ppc64el", "powerpc64le-linux-gnu", "ppc64le", "qemu-ppc64le"),
        Arch("riscv64", "riscv64-linux-gnu", "riscv64", "qemu-riscv64"),
        Arch("s390x", "s390x-linux-gnu", "s390x", "qemu-s390x"),
    )
}

#: Roots besides the Python packages; skipped with a warning when a suite lacks one


# --------------------------------------------------------------------------- info


@dataclass(frozen=True)
class SysrootInfo:
    """``monorepo-sysroot.toml``: what a sysroot holds and where a builder finds it.

    Paths are relative to :attr:`root`; the ``*_path(s)`` properties make them absolute.
    """

    root: Path
    arch: str
    suite: str
    python: str
    triplet: str
    machine: str
    host_platform: str
    """What ``sysconfig.get_platform()`` says on the target: ``_PYTHON_HOST_PLATFORM``."""
    interpreter: str
    include_dirs: tuple[str, ...]
    lib_dirs: tuple[str, ...]
    sysconfigdata_name: str
    """The module name: ``_PYTHON_SYSCONFIGDATA_NAME``."""
    sysconfigdata_dir: str
    """The directory holding it in the target's stdlib (``usr/lib/python3.11``)."""
    pythonpath_dir: str
    """A directory holding only a copy of the sysconfigdata module: what to put on a host
    interpreter's ``PYTHONPATH`` without also shadowing its stdlib with the target's."""
    ext_suffix: str
    soabi: str
    packages: dict[str, str]
    """Installed package -> Debian version."""
    skipped: tuple[str, ...] = ()
    mirror_id: str = ""
    extra_packages: tuple[str, ...] = ()
    origin: str = "made"
    """Where the facts come from: ``made`` (``python -m monorepo.sysroot`` made the tree and
    its marker), ``dpkg`` (discovered; packages from ``var/lib/dpkg/status``) or ``files``
    (discovered; no package database, so system libraries are looked for as files)."""

    notes: tuple[str, ...] = ()
    """What a build should warn about (absolute library links that the linker would follow
    out of the tree); found by discovery, never written to the marker."""

    @property
    def made(self) -> bool:
        """Whether ``python -m monorepo.sysroot`` made this tree (and may add packages to it)."""
        return self.origin == "made"

    def path(self, rel: str) -> Path:
        return self.root / rel

    @property
    def interpreter_path(self) -> Path:
        return self.root / self.interpreter

    @property
    def include_paths(self) -> list[Path]:
        return [self.root / d for d in self.include_dirs]

    @property
    def lib_paths(self) -> list[Path]:
        return [self.root / d for d in self.lib_dirs]

    @property
    def sysconfigdata_path(self) -> Path:
        return self.root / self.sysconfigdata_dir / f"{self.sysconfigdata_name}.py"

    @property
    def qemu(self) -> str:
        return ARCHES[self.arch].qemu if self.arch in ARCHES else f"qemu-{self.machine}"

    def cross_env(self, cc: str | None = None) -> dict[str, str]:
        """The environment a PEP 517 hook needs to build for this sysroot on the host.

        *cc* defaults to ``<triplet>-gcc``.  ``CFLAGS`` put the target's headers before
        the ``-I/usr/include/python3.x`` that setuptools adds from the sysconfigdata.
        """
        compiler = cc or f"{self.triplet}-gcc"
        includes = " ".join(f"-I{p}" for p in self.include_paths)
        libs = " ".join(f"-L{p}" for p in self.lib_paths)
        root = str(self.root)
        return {
            "_PYTHON_HOST_PLATFORM": self.host_platform,
            "_PYTHON_SYSCONFIGDATA_NAME": self.sysconfigdata_name,
            "PYTHONPATH": str(self.root / self.pythonpath_dir),
            "CC": f"{compiler} --sysroot={root}",
            "LDSHARED": f"{compiler} --sysroot={root} -shared",
            "CFLAGS": f"{includes} -fPIC",
            "LDFLAGS": libs,
        }


def read_marker(dest: Path) -> SysrootInfo | None:
    """Read ``DEST/monorepo-sysroot.toml`` (the cache of a sysroot's facts), ``None`` if absent.

    :func:`monorepo.sysroot.discover.read_sysroot` is what callers want: it falls back
    to discovering the facts from the tree itself.  A marker that is unreadable or of
    another format raises :class:`SysrootError`.
    """
    toml_path = dest / TOML_NAME
    try:
        data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise SysrootError(f"{toml_path} cannot be read ({e}); make the sysroot again") from e
    try:
        if data.get("format") != FORMAT:
            raise SysrootError(
                f"{toml_path} has format {data.get('format')!r}, this monorepo reads"
                f" {FORMAT}; make the sysroot again"
            )
        packages = data["packages"]
        if not isinstance(packages, dict):
            raise TypeError("packages")
        return SysrootInfo(
            root=dest.resolve(),
            arch=str(data["arch"]),
            suite=str(data["suite"]),
            python=str(data["python"]),
            triplet=str(data["triplet"]),
            machine=str(data["machine"]),
            host_platform=str(data["host_platform"]),
            interpreter=str(data["interpreter"]),
            include_dirs=tuple(str(d) for d in data["include_dirs"]),
            lib_dirs=tuple(str(d) for d in data["lib_dirs"]),
            sysconfigdata_name=str(data["sysconfigdata_name"]),
            sysconfigdata_dir=str(data["sysconfigdata_dir"]),
            pythonpath_dir=str(data["pythonpath_dir"]),
            ext_suffix=str(data["ext_suffix"]),
            soabi=str(data["soabi"]),
            packages={str(k): str(v) for k, v in packages.items()},
            skipped=tuple(str(s) for s in data.get("skipped", [])),
            mirror_id=str(data.get("mirror_id", "")),
            extra_packages=tuple(str(s) for s in data.get("extra_packages", [])),
        )
    except (KeyError, TypeError) as e:
        raise SysrootError(f"{toml_path} lacks or mistypes key {e}; make the sysroot again") from e


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_toml_str(v) for v in values) + "]"


def render(info: SysrootInfo) -> str:
    lines = [
        "# Written by 'python -m monorepo.sysroot'; read by monorepo build.",
        "# Paths are relative to this directory.",
        f"format = {FORMAT}",
        f"arch = {_toml_str(info.arch)}",
        f"suite = {_toml_str(info.suite)}",
        f"python = {_toml_str(info.python)}",
        f"triplet = {_toml_str(info.triplet)}",
        f"machine = {_toml_str(info.machine)}",
        f"host_platform = {_toml_str(info.host_platform)}",
        f"interpreter = {_toml_str(info.interpreter)}",
        f"include_dirs = {_toml_list(info.include_dirs)}",
        f"lib_dirs = {_toml_list(info.lib_dirs)}",
        f"sysconfigdata_name = {_toml_str(info.sysconfigdata_name)}",
        f"sysconfigdata_dir = {_toml_str(info.sysconfigdata_dir)}",
        f"pythonpath_dir = {_toml_str(info.pythonpath_dir)}",
        f"ext_suffix = {_toml_str(info.ext_suffix)}",
        f"soabi = {_toml_str(info.soabi)}",
        f"mirror_id = {_toml_str(info.mirror_id)}",
        f"extra_packages = {_toml_list(info.extra_packages)}",
        f"skipped = {_toml_list(info.skipped)}",
        "",
        "[packages]",
        *(f"{_toml_str(name)} = {_toml_str(v)}" for name, v in sorted(info.packages.items())),
        "",
    ]
    return "\n".join(lines)
