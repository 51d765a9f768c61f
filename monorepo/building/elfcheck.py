"""Which machine a compiled file is for, read from its ELF header, and wheel checks built on it.

A cross build that silently used the host compiler, or a backend that dropped a
prebuilt host binary into its wheel, produces a wheel that installs fine and
crashes on the target.  The only reliable check is the file itself: the ELF
header says its class, byte order and machine (``e_machine``).  We read those few
bytes with :mod:`struct` rather than depend on ``pyelftools`` or ``file``.

Only ELF (Linux and most Unix targets) is understood; a wheel for another
platform is checked by its tags alone.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

__all__ = [
    "BITS",
    "EM_AARCH64",
    "EM_ARM",
    "EM_X86_64",
    "MACHINES",
    "ElfHeader",
    "WheelCheck",
    "check_wheel",
    "extension_modules",
    "machine_name",
    "platform_tag_matches",
    "read_elf_header",
]

EM_386 = 3
EM_PPC64 = 21
EM_S390 = 22
EM_ARM = 40
EM_X86_64 = 62
EM_AARCH64 = 183
EM_RISCV = 243

#: target ``machine`` (as ``platform.machine()`` spells it) -> ELF ``e_machine``.
MACHINES: dict[str, int] = {
    "x86_64": EM_X86_64,
    "amd64": EM_X86_64,
    "aarch64": EM_AARCH64,
    "arm64": EM_AARCH64,
    "i386": EM_386,
    "i686": EM_386,
    "armv7l": EM_ARM,
    "armv6l": EM_ARM,
    "ppc64le": EM_PPC64,
    "ppc64": EM_PPC64,
    "s390x": EM_S390,
    "riscv64": EM_RISCV,
}
_NAMES = {
    EM_386: "i386",
    EM_PPC64: "ppc64",
    EM_S390: "s390",
    EM_ARM: "arm",
    EM_X86_64: "x86_64",
    EM_AARCH64: "aarch64",
    EM_RISCV: "riscv",
}
#: ELF class (32 or 64 bits) a target ``machine`` runs; a 64-bit object on a 32-bit
#: target (or the reverse) cannot load even where ``e_machine`` would be accepted.
BITS: dict[str, int] = {
    "x86_64": 64,
    "amd64": 64,
    "aarch64": 64,
    "arm64": 64,
    "i386": 32,
    "i686": 32,
    "armv7l": 32,
    "armv6l": 32,
    "ppc64le": 64,
    "ppc64": 64,
    "s390x": 64,
    "riscv64": 64,
}
#: wheel platform-tag spelling of a machine, where it differs from ``platform.machine()``.
_TAG_MACHINE = {"amd64": "x86_64", "arm64": "aarch64", "i386": "i686"}

_ELF_MAGIC = b"\x7fELF"
_HEADER_SIZE = 20  # e_ident (16) + e_type (2) + e_machine (2)


@dataclass(frozen=True)
class ElfHeader:
    """The parts of an ELF header that say where a file can run."""

    bits: int  # 32 or 64
    little_endian: bool
    machine: int  # e_machine

    @property
    def machine_name(self) -> str:
        return machine_name(self.machine)


def machine_name(machine: int) -> str:
    """A readable name for an ``e_machine`` value (``EM_<n>`` when unknown)."""
    return _NAMES.get(machine, f"EM_{machine}")


def read_elf_header(data: bytes) -> ElfHeader | None:
    """The header of the ELF file starting with *data*, or None when it is not ELF."""
    if len(data) < _HEADER_SIZE or not data.startswith(_ELF_MAGIC):
        return None
    ei_class, ei_data = data[4], data[5]
    if ei_class not in (1, 2) or ei_data not in (1, 2):
        return None
    little = ei_data == 1
    (machine,) = struct.unpack_from("<H" if little else ">H", data, 18)
    return ElfHeader(bits=32 if ei_class == 1 else 64, little_endian=little, machine=machine)


def _is_extension(name: str) -> bool:
    base = PurePosixPath(name).name
    return base.endswith((".so", ".pyd")) or ".so." in base


def extension_modules(wheel: zipfile.ZipFile) -> list[str]:
    """Members of *wheel* that are compiled code (``.so``, ``.so.N``, ``.pyd``), sorted."""
    return sorted(n for n in wheel.namelist() if not n.endswith("/") and _is_extension(n))


def platform_tag_matches(platform_tag: str, target_platform: str, machine: str) -> bool:
    """Whether a wheel platform tag can run on the target (``any`` always can)."""
    if platform_tag == "any":
        return True
    arch = _TAG_MACHINE.get(machine, machine)
    if target_platform == "linux":
        return platform_tag == f"linux_{arch}" or (
            platform_tag.startswith(("manylinux", "musllinux"))
            and platform_tag.endswith(f"_{arch}")
        )
    if target_platform == "darwin":
        return platform_tag.startswith("macosx_") and (
            platform_tag.endswith((f"_{arch}", "_universal2"))
            or (arch == "x86_64" and platform_tag.endswith("_intel"))
        )
    if target_platform == "windows":
        return platform_tag == {"x86_64": "win_amd64", "aarch64": "win_arm64"}.get(arch, "win32")
    return False


@dataclass
class WheelCheck:
    """What :func:`check_wheel` found: the extension modules and every problem, readable."""

    extensions: list[str]
    problems: list[str]


def _python_tag_ok(tag_interpreter: str, python: str) -> bool:
    """A ``cpXY`` tag must be the target's Python (``py3``/``py3X`` tags are not checked)."""
    if not tag_interpreter.startswith("cp"):
        return True
    return tag_interpreter == "cp" + python.replace(".", "")


def check_wheel(
    path: Path,
    *,
    platform: str,
    machine: str,
    python: str,
    require_extension: bool = False,
) -> WheelCheck:
    """Check a built wheel against its target; an empty ``problems`` list means it passed.

    * every tag's platform must run on the target, and a wheel with compiled code
      must not claim ``any``;
    * a ``cpXY`` tag must name the target Python (abi3 wheels built for it too);
    * every extension module must be an ELF file for the target machine (for
      Linux targets);
    * with *require_extension*, the wheel must contain an extension module.
    """
    problems: list[str] = []
    try:
        _name, _version, _build, tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename as error:
        return WheelCheck([], [f"{path.name} is not a valid wheel file name ({error})"])
    try:
        with zipfile.ZipFile(path) as zf:
            extensions = extension_modules(zf)
            headers = {name: zf.open(name).read(_HEADER_SIZE) for name in extensions}
    except (OSError, zipfile.BadZipFile) as error:
        return WheelCheck([], [f"{path.name} cannot be read as a zip file ({error})"])
    platforms = sorted({t.platform for t in tags})
    bad = [p for p in platforms if not platform_tag_matches(p, platform, machine)]
    if bad:
        problems.append(
            f"{path.name}: platform tag {', '.join(bad)} does not run on the target"
            f" ({platform} {machine})"
        )
    if extensions and "any" in platforms:
        problems.append(
            f"{path.name} contains compiled code ({extensions[0]}) but is tagged for any platform"
        )
    pythons = sorted({t.interpreter for t in tags if not _python_tag_ok(t.interpreter, python)})
    if pythons and not all(t.abi == "abi3" for t in tags):
        problems.append(
            f"{path.name}: interpreter tag {', '.join(pythons)} is not the target's Python {python}"
        )
    if platform == "linux":
        problems += _elf_problems(headers.items(), machine)
    if require_extension and not extensions:
        problems.append(
            f"{path.name} has no extension module, but the package is marked c-extension = true:"
            " the backend most likely fell back to pure Python because its C library or compiler"
            " was missing (see the log)"
        )
    return WheelCheck(extensions, problems)


def _elf_problems(headers: Iterable[tuple[str, bytes]], machine: str) -> list[str]:
    expected = MACHINES.get(machine)
    bits = BITS.get(machine)
    problems: list[str] = []
    for name, head in headers:
        header = read_elf_header(head)
        if header is None:
            problems.append(f"{name} is not an ELF file, so it cannot load on Linux")
        elif expected is None:
            continue
        elif header.machine != expected:
            problems.append(
                f"{name} is an ELF file for {header.machine_name}, not for the target {machine}"
            )
        elif bits is not None and header.bits != bits:
            problems.append(
                f"{name} is a {header.bits}-bit ELF file, but the target {machine} is {bits}-bit"
            )
    return problems
