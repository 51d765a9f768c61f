"""Discovering a sysroot's facts from the CPython it holds: any sysroot, not only ours.

A sysroot is any directory holding the target's CPython: its ``_sysconfigdata_*.py``
module (``usr/lib/python3.X/``), its headers (``Python.h``) and ``libpython``.  That is
what Debian multiarch packages unpacked by hand, a Yocto SDK's target sysroot and a
Buildroot staging directory all have in common, and everything a cross build needs is
read from there: the version (``VERSION``), the multiarch triplet (``MULTIARCH``, else
``HOST_GNU_TYPE``), ``EXT_SUFFIX`` and ``SOABI``, the include directory
(``INCLUDEPY``), the library directory (``LIBDIR``) and the interpreter (``BINDIR``).
The sysconfigdata module is parsed, never executed (it is the target's code).

``monorepo-sysroot.toml``, written by ``python -m monorepo.sysroot``, is only a cache of
these facts plus what that command installed; :func:`read_sysroot` uses it when it is
there and still describes the tree, and discovers the facts otherwise.  A discovered
sysroot is left untouched: the copy of its sysconfigdata module that a host interpreter
puts on ``PYTHONPATH`` goes to the cache directory.
"""

from __future__ import annotations

import ast
import hashlib
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from monorepo._core.atomic import write_bytes
from monorepo._core.paths import CacheDir
from monorepo.sysroot.info import (
    ARCHES,
    PYTHONPATH_DIR,
    Arch,
    SysrootError,
    SysrootInfo,
    read_marker,
    render,
)

__all__ = [
    "arch_for_triplet",
    "build_time_vars",
    "describe",
    "discover",
    "dpkg_status",
    "exists_in",
    "facts_text",
    "read_sysroot",
    "resolve_in",
]

MAX_SYSCONFIGDATA = 4 * 1024 * 1024
"""The largest sysconfigdata module read (bytes)."""

_CPU_ARCH = {
    "aarch64": "arm64",
    "x86_64": "amd64",
    "powerpc64le": "ppc64el",
    "riscv64": "riscv64",
    "s390x": "s390x",
}


def build_time_vars(path: Path) -> dict[str, Any]:
    """``build_time_vars`` of a sysconfigdata module, read without executing it.

    A real one is 30-50 KB; anything over :data:`MAX_SYSCONFIGDATA` bytes, or too deeply
    nested to parse, is refused rather than read.
    """
    try:
        size = path.stat().st_size
        if size > MAX_SYSCONFIGDATA:
            raise SysrootError(
                f"{path} is {size} bytes, over the {MAX_SYSCONFIGDATA} a sysconfigdata module"
                " can be; it is not one"
            )
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError, RecursionError, MemoryError) as e:
        raise SysrootError(f"{path} cannot be read ({type(e).__name__}: {e})") from e
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "build_time_vars" for t in node.targets
        ):
            try:
                value = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
                raise SysrootError(f"{path}: build_time_vars is not a literal ({e})") from e
            if isinstance(value, dict):
                return value
    raise SysrootError(f"{path} has no build_time_vars: it is not a CPython sysconfigdata module")


def arch_for_triplet(triplet: str) -> Arch:
    """The architecture a GNU triplet names: Debian's name where it has one."""
    for arch in ARCHES.values():
        if arch.triplet == triplet:
            return arch
    cpu = triplet.split("-", 1)[0]
    debian = _CPU_ARCH.get(cpu)
    if debian is None and cpu.startswith("arm") and triplet.endswith("hf"):
        debian = "armhf"
    if debian is None and re.fullmatch(r"i[3-6]86", cpu):
        debian = "i386"
    if debian is not None:
        known = ARCHES[debian]
        return Arch(known.debian, triplet, known.machine, known.qemu)
    return Arch(cpu, triplet, cpu, f"qemu-{cpu}")


def _rel(value: object, fallback: str) -> str:
    """An absolute path of the target (``/usr/lib``) as a path inside the sysroot."""
    text = value if isinstance(value, str) and value.startswith("/") else fallback
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:  # a relative path walking out of the sysroot
        return fallback.strip("/")
    return "/".join(parts)


def resolve_in(root: Path, rel: str) -> Path | None:
    """*rel* inside the tree at *root* with its symlinks followed as the target sees them
    (``libpython3.11.so -> /usr/lib/...`` in Debian packages unpacked by hand is a path
    of the tree, not of the build machine); ``None`` when it does not exist there."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    current = root
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent if current != root else root
            continue
        candidate = current / part
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                return None
            link = str(candidate.readlink())
            if link.startswith("/"):
                current = root
            parts = [p for p in link.split("/") if p not in ("", ".")] + parts
            continue
        if not candidate.exists():
            return None
        current = candidate
    return current


def exists_in(root: Path, rel: str) -> bool:
    """Whether *rel* exists in the tree at *root* (:func:`resolve_in`)."""
    return resolve_in(root, rel) is not None


def _modules(root: Path) -> list[Path]:
    """Every ``_sysconfigdata_*.py`` in a ``python3.X`` directory of the usual lib dirs."""
    found: list[Path] = []
    for lib in ("usr/lib", "usr/lib64", "usr/local/lib", "lib", "lib64"):
        found.extend(sorted((root / lib).glob("python3.*/_sysconfigdata_*.py")))
    seen: set[tuple[Path, str]] = set()
    unique = []
    for path in found:  # usr/lib64 may be a link to usr/lib: one module, not two
        key = (path.parent.resolve(), path.name)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def _what_is_missing(root: Path, python: str | None) -> list[str]:
    """What of a CPython the tree lacks, each with the package that usually brings it."""
    version = python or "3.X"
    glob = f"python{python}" if python else "python3.*"
    headers = f"python{python}*" if python else "python3.*"
    missing = []
    if not _modules(root):
        missing.append(
            f"the sysconfigdata module (usr/lib/{glob}/_sysconfigdata_*.py; Debian:"
            f" libpython{version}-minimal and libpython{version}-stdlib)"
        )
    if not list(root.glob(f"usr/include/{headers}/Python.h")):
        missing.append(f"the headers (usr/include/{glob}/Python.h; Debian: libpython{version}-dev)")
    libs = [
        p
        for lib in ("usr/lib", "usr/lib64", "lib", "lib64")
        for p in [
            *(root / lib).glob(f"lib{headers}.so*"),
            *(root / lib).glob(f"*/lib{headers}.so*"),
        ]
    ]
    if not libs:
        missing.append(
            f"libpython (usr/lib/<triplet>/lib{glob}.so; Debian: libpython{version} and"
            f" libpython{version}-dev)"
        )
    return missing


def _not_a_sysroot(root: Path, python: str | None, detail: str = "") -> SysrootError:
    missing = _what_is_missing(root, python)
    what = f"CPython {python}" if python else "a CPython"
    lacks = "; ".join(missing) if missing else detail
    return SysrootError(
        f"{root} is not a sysroot: it holds no {what} for the target. Missing: {lacks}."
        " Unpack the target's Python packages into it (docs/cross.md, 'Bringing your own"
        f" sysroot'), or make a Debian one with 'python -m monorepo.sysroot {root}'"
    )


@dataclass(frozen=True)
class _Facts:
    arch: Arch
    python: str
    module: Path
    name: str
    stdlib: str
    include_dirs: tuple[str, ...]
    lib_dirs: tuple[str, ...]
    interpreter: str
    ext_suffix: str
    soabi: str


def _choose_module(root: Path, python: str | None) -> Path:
    modules = _modules(root)
    if python is not None:
        others = sorted({m.parent.name.removeprefix("python") for m in modules})
        modules = [m for m in modules if m.parent.name == f"python{python}"]
        if not modules and others:
            raise SysrootError(
                f"{root} holds CPython {', '.join(others)}, not {python}: make or choose a"
                f" sysroot for Python {python} (a Debian suite that carries it)"
            )
    versions = sorted({m.parent.name.removeprefix("python") for m in modules})
    if not modules:
        raise _not_a_sysroot(root, python)
    if len(versions) > 1:
        raise SysrootError(
            f"{root} holds CPython {', '.join(versions)}: say which one the target is"
            " (the target's python in [tool.monorepo] targets, or --python)"
        )
    # The plain build before a debug one (_sysconfigdata_d_...), the platform-named one first.
    return sorted(
        modules,
        key=lambda m: (
            not m.name.startswith("_sysconfigdata__"),
            "_linux_" not in m.name,
            m.name,
        ),
    )[0]


def _facts(root: Path, python: str | None) -> _Facts:
    module = _choose_module(root, python)
    inside = resolve_in(root, module.relative_to(root).as_posix())
    if inside is None:
        raise SysrootError(
            f"{module} is a link that does not resolve inside {root}; the sysroot is incomplete"
        )
    variables = build_time_vars(inside)
    version = str(variables.get("VERSION") or module.parent.name.removeprefix("python"))
    if module.parent.name != f"python{version}":
        raise SysrootError(
            f"{module} says it is CPython {version} but lies in {module.parent.name}/;"
            " the sysroot is inconsistent"
        )
    multiarch = str(variables.get("MULTIARCH") or "")
    host = str(variables.get("HOST_GNU_TYPE") or "")
    triplet = multiarch or host
    if not triplet:
        raise SysrootError(
            f"{module} names no MULTIARCH or HOST_GNU_TYPE: cannot tell which machine the"
            " sysroot is for"
        )
    expected = (
        f"_sysconfigdata_{variables.get('ABIFLAGS', '')}_{variables.get('MACHDEP', 'linux')}"
        f"_{multiarch}"
    )
    name = expected if (module.parent / f"{expected}.py").is_file() else module.stem
    include = _rel(variables.get("INCLUDEPY"), f"usr/include/python{version}")
    if not (root / include / "Python.h").is_file():
        raise _not_a_sysroot(root, version, f"{include}/Python.h")
    include_dirs = [include]
    if multiarch and (root / "usr/include" / multiarch).is_dir():
        include_dirs.append(f"usr/include/{multiarch}")
    include_dirs.append("usr/include")
    lib_dirs: list[str] = []
    resolved: set[Path] = set()
    for rel in (
        _rel(variables.get("LIBDIR"), f"usr/lib/{multiarch}" if multiarch else "usr/lib"),
        *((f"usr/lib/{multiarch}", f"lib/{multiarch}") if multiarch else ()),
    ):
        path = root / rel
        if path.is_dir() and path.resolve() not in resolved:
            resolved.add(path.resolve())
            lib_dirs.append(rel)
    libnames = {
        str(variables.get(k)) for k in ("LDLIBRARY", "INSTSONAME", "LIBRARY") if variables.get(k)
    } or {f"libpython{version}.so"}
    if not any(exists_in(root, f"{d}/{n}") for d in lib_dirs for n in libnames):
        raise _not_a_sysroot(
            root,
            version,
            f"libpython ({' or '.join(sorted(libnames))} in {', '.join(lib_dirs) or 'usr/lib'})",
        )
    bindir = _rel(variables.get("BINDIR"), "usr/bin")
    return _Facts(
        arch=arch_for_triplet(triplet),
        python=version,
        module=inside,
        name=name,
        stdlib=module.parent.relative_to(root).as_posix(),
        include_dirs=tuple(include_dirs),
        lib_dirs=tuple(lib_dirs),
        interpreter=f"{bindir}/python{version}",
        ext_suffix=str(variables.get("EXT_SUFFIX", "")),
        soabi=str(variables.get("SOABI", "")),
    )


def _absolute_links(root: Path, lib_dirs: Sequence[str]) -> list[str]:
    """Development links (``libz.so -> /lib/...``) that leave the tree: the linker follows
    them on the build machine, finds nothing, and silently links ``libz.a`` instead."""
    found = []
    for rel in lib_dirs:
        try:
            entries = sorted((root / rel).glob("*.so"))
        except OSError:
            continue
        for path in entries:
            if path.is_symlink() and str(path.readlink()).startswith("/") and not path.exists():
                found.append(path.relative_to(root).as_posix())
    return found


def _notes(root: Path, lib_dirs: Sequence[str]) -> tuple[str, ...]:
    links = _absolute_links(root, lib_dirs)
    if not links:
        return ()
    shown = ", ".join(links[:3]) + (f" and {len(links) - 3} more" if len(links) > 3 else "")
    return (
        f"the sysroot {root} has {len(links)} absolute library links ({shown}) that the"
        " linker follows out of the tree, so it links the static library or fails; make them"
        " relative (docs/cross.md, 'Bringing your own sysroot')",
    )


def dpkg_status(root: Path) -> dict[str, str] | None:
    """Installed packages of ``var/lib/dpkg/status`` (name -> version), ``None`` if absent."""
    try:
        text = (root / "var/lib/dpkg/status").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    installed: dict[str, str] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line[:1].isspace():
                fields[key.strip().lower()] = value.strip()
        status = fields.get("status", "").split()  # want, flag, state: "install ok installed"
        if status[2:3] == ["installed"] and "package" in fields:
            installed[fields["package"]] = fields.get("version", "")
    return installed


def _os_codename(root: Path) -> str:
    for rel in ("etc/os-release", "usr/lib/os-release"):
        try:
            text = (root / rel).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "VERSION_CODENAME":
                return value.strip().strip("\"'")
    return ""


def _pythonpath(module: Path, name: str, cache_dir: Path | str | None) -> Path:
    """A directory in the cache holding only a copy of *module* named *name*."""
    data = module.read_bytes()
    digest = hashlib.sha256(name.encode() + b"\0" + data).hexdigest()[:24]
    directory = CacheDir.at(cache_dir).root / "sysroots" / digest
    target = directory / f"{name}.py"
    if not target.is_file() or target.read_bytes() != data:
        write_bytes(target, data)
    return directory


def discover(
    root: Path, *, python: str | None = None, cache_dir: Path | str | None = None
) -> SysrootInfo:
    """The facts of the sysroot at *root*, read from the CPython it holds.

    *python* (``"3.11"``) picks the version when the tree holds several.  Raises
    :class:`SysrootError` naming what is missing when the tree holds no usable CPython.
    Nothing is written into *root*.
    """
    root = root.absolute()
    if not root.is_dir():
        raise SysrootError(
            f"the sysroot {root} does not exist or is not a directory; make one with"
            f" 'python -m monorepo.sysroot {root}' or point the target at an existing one"
        )
    facts = _facts(root, python)
    packages = dpkg_status(root)
    try:
        pythonpath = _pythonpath(facts.module, facts.name, cache_dir)
    except OSError as e:
        raise SysrootError(f"cannot copy {facts.module} into the cache: {e}") from e
    return SysrootInfo(
        root=root.resolve(),
        arch=facts.arch.debian,
        suite=_os_codename(root),
        python=facts.python,
        triplet=facts.arch.triplet,
        machine=facts.arch.machine,
        host_platform=f"linux-{facts.arch.machine}",
        interpreter=facts.interpreter,
        include_dirs=facts.include_dirs,
        lib_dirs=facts.lib_dirs,
        sysconfigdata_name=facts.name,
        sysconfigdata_dir=facts.stdlib,
        pythonpath_dir=str(pythonpath),
        ext_suffix=facts.ext_suffix,
        soabi=facts.soabi,
        packages=packages or {},
        origin="files" if packages is None else "dpkg",
        notes=_notes(root, facts.lib_dirs),
    )


def describe(
    root: Path,
    *,
    arch: Arch,
    suite: str,
    python: str,
    packages: Mapping[str, str],
    skipped: Sequence[str],
    mirror_id: str,
    extra: Sequence[str],
) -> SysrootInfo:
    """The facts of a tree ``python -m monorepo.sysroot`` has just unpacked (and a copy of
    its sysconfigdata module in ``monorepo-pythonpath``), for its marker."""
    facts = _facts(root, python)
    if facts.arch.triplet != arch.triplet:
        raise SysrootError(
            f"the {arch.debian} packages hold a CPython for {facts.arch.triplet}, not"
            f" {arch.triplet}; is the mirror's {arch.debian} index damaged?"
        )
    if not (root / facts.interpreter).exists():
        raise SysrootError(
            f"the sysroot has no {facts.interpreter}; python{python}-minimal is damaged"
        )
    pythonpath = root / PYTHONPATH_DIR
    pythonpath.mkdir(exist_ok=True)
    shutil.copyfile(facts.module, pythonpath / f"{facts.name}.py")
    return SysrootInfo(
        root=root,
        arch=arch.debian,
        suite=suite,
        python=python,
        triplet=arch.triplet,
        machine=arch.machine,
        host_platform=f"linux-{arch.machine}",
        interpreter=facts.interpreter,
        include_dirs=facts.include_dirs,
        lib_dirs=facts.lib_dirs,
        sysconfigdata_name=facts.name,
        sysconfigdata_dir=facts.stdlib,
        pythonpath_dir=PYTHONPATH_DIR,
        ext_suffix=facts.ext_suffix,
        soabi=facts.soabi,
        packages=dict(packages),
        skipped=tuple(skipped),
        mirror_id=mirror_id,
        extra_packages=tuple(extra),
    )


def read_sysroot(
    dest: Path, *, python: str | None = None, cache_dir: Path | str | None = None
) -> SysrootInfo:
    """The sysroot at *dest*: its ``monorepo-sysroot.toml`` when that still describes the
    tree, else the facts :func:`discover` reads from the CPython it holds."""
    marker = read_marker(dest)
    if marker is not None and marker.sysconfigdata_path.is_file():
        return marker
    return discover(dest, python=python, cache_dir=cache_dir)


def facts_text(info: SysrootInfo) -> str:
    """What identifies a sysroot in a build's input key, as text.

    For a sysroot ``python -m monorepo.sysroot`` made, its marker (every package and
    version).  For a discovered one, the same facts (the cache path of the
    sysconfigdata copy left out), the sysconfigdata module's digest and the names of
    the libraries and ``.pc`` files in its library directories, so that adding a library
    by hand changes the identity.
    """
    if info.made:
        return render(info)
    text = render(replace(info, pythonpath_dir=PYTHONPATH_DIR))
    try:
        module = hashlib.sha256(info.sysconfigdata_path.read_bytes()).hexdigest()
    except OSError:
        module = ""
    names: set[str] = set()
    for rel in info.lib_dirs:
        for directory in (info.root / rel, info.root / rel / "pkgconfig"):
            try:
                entries = list(directory.iterdir())
            except OSError:
                continue
            names.update(
                f"{directory.relative_to(info.root).as_posix()}/{e.name}"
                for e in entries
                if e.name.endswith((".so", ".a", ".pc"))
            )
    listing = hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()
    return f"{text}# origin = {info.origin}\n# sysconfigdata = {module}\n# libraries = {listing}\n"
