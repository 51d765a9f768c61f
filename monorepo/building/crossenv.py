"""Cross environments, one per build system, generated from the target and its sysroot.

A cross build only works when every build system a package might use is told about
the target: setuptools reads ``CC``/``CXX`` and their flags, meson wants a cross
file, CMake a toolchain file, ``pkg-config`` must search the sysroot and not this
machine, and the ``*-config`` scripts that many ``setup.py`` files run
(``xml2-config``, ``pg_config`` ...) must not hand out this machine's paths.

:func:`cross_environment` writes all of that into a directory of the package's
build (``duni-build/<target>/cross/<dir>/``, never into ``duni/``) and returns the
environment variables and PEP 517 config settings that point the backend at it.
Everything is derived from three facts: the target's C compiler (``cc``, default
``<triplet>-gcc``), its sysroot (:class:`~monorepo.sysroot.info.SysrootInfo`) and
its runner (``qemu-aarch64 -L {sysroot}``), so what is written is the same bytes
for the same inputs.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from monorepo._core.atomic import write_text_if_changed
from monorepo.project.targets import Target
from monorepo.sysroot.info import SysrootInfo

__all__ = [
    "CONFIG_SCRIPTS",
    "ConfigSettings",
    "CrossEnv",
    "compilers",
    "cross_environment",
    "merge_config_settings",
]

ConfigSettings = dict[str, str | list[str]]
"""PEP 517 ``config_settings``: each value a string or a list of strings."""

#: ``*-config`` script -> the pkg-config module that answers for it in the sysroot.
CONFIG_SCRIPTS: dict[str, str] = {
    "xml2-config": "libxml-2.0",
    "xslt-config": "libxslt",
    "exslt-config": "libexslt",
    "pg_config": "libpq",
    "freetype-config": "freetype2",
    "libpng-config": "libpng",
    "libpng16-config": "libpng16",
    "curl-config": "libcurl",
    "icu-config": "icu-uc",
    "pcre-config": "libpcre",
    "pcre2-config": "libpcre2-8",
    "gpgme-config": "gpgme",
    "gpg-error-config": "gpg-error",
    "libgcrypt-config": "libgcrypt",
    "krb5-config": "krb5",
    "mysql_config": "mysqlclient",
    "mariadb_config": "libmariadb",
    "sdl2-config": "sdl2",
    "gdal-config": "gdal",
    "geos-config": "geos",
    "nc-config": "netcdf",
    "xmlsec1-config": "xmlsec1",
    "ncursesw6-config": "ncursesw",
    "ncurses6-config": "ncurses",
    "net-snmp-config": "netsnmp",
}

#: meson ``cpu_family`` of a target ``machine`` (``platform.machine()`` spelling).
_MESON_CPU_FAMILY = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "x86",
    "i686": "x86",
    "ppc64le": "ppc64",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "riscv64": "riscv64",
}
#: CMake ``CMAKE_SYSTEM_PROCESSOR`` where it differs from the machine name.
_CMAKE_PROCESSOR = {"amd64": "x86_64", "arm64": "aarch64", "armv7l": "armv7-a"}
_BIG_ENDIAN = frozenset({"ppc64", "s390x"})
_MESON_BACKEND = "mesonpy"
_SKBUILD_BACKENDS = frozenset(
    {"scikit_build_core.build", "scikit_build_core.setuptools.build_meta"}
)


@dataclass(frozen=True)
class CrossEnv:
    """What a hook needs to cross-build: its environment and its config settings."""

    environ: dict[str, str]
    config_settings: ConfigSettings
    directory: Path
    files: dict[str, Path] = field(default_factory=dict)
    """Generated file by role: ``meson-cross``, ``meson-native``, ``cmake-toolchain``."""


def _sibling(compiler: str) -> str:
    """The C++ compiler beside a C compiler: ``x-gcc`` -> ``x-g++``, ``clang`` -> ``clang++``."""
    head, _, base = compiler.rpartition("/")
    prefix = head + "/" if head else ""
    for c_name, cxx_name in (("gcc", "g++"), ("clang", "clang++"), ("cc", "c++")):
        if base == c_name or base.endswith("-" + c_name):
            return prefix + base[: len(base) - len(c_name)] + cxx_name
        if base.startswith(c_name + "-") and c_name != "cc":  # gcc-12, clang-16
            return prefix + cxx_name + base[len(c_name) :]
    return compiler


def compilers(target: Target, sysroot: SysrootInfo) -> tuple[list[str], list[str]]:
    """The C and C++ compiler commands (without ``--sysroot``), from the target's ``cc``.

    ``cc`` may carry options (``"clang --target=aarch64-linux-gnu"``); the C++ one is the
    same command with its sibling program (``g++`` for ``gcc``, ``clang++`` for ``clang``).
    """
    cc = shlex.split(target.cc) if target.cc else [f"{sysroot.triplet}-gcc"]
    cxx = [_sibling(cc[0]), *cc[1:]]
    return cc, cxx


def _tool(sysroot: SysrootInfo, cc: Sequence[str], name: str) -> str:
    """``<triplet>-<name>`` (ar, strip ...) if installed, else the one beside the compiler."""
    prefixed = f"{sysroot.triplet}-{name}"
    if shutil.which(prefixed):
        return prefixed
    head = cc[0]
    for c_name in ("gcc", "clang", "cc"):
        if head.endswith(c_name):
            guess = head[: len(head) - len(c_name)] + name
            if shutil.which(guess):
                return guess
    return name if name != "ar" else prefixed


def _pkg_config_dirs(sysroot: SysrootInfo) -> list[str]:
    """The sysroot's pkg-config search path: each library directory's, then the shared ones."""
    dirs = [f"{p}/pkgconfig" for p in sysroot.lib_paths]
    dirs += [str(sysroot.root / "usr/lib/pkgconfig"), str(sysroot.root / "usr/share/pkgconfig")]
    return list(dict.fromkeys(dirs))


def _host_pkg_config_dirs() -> list[str]:
    """This machine's default pkg-config path (for tools meson builds for the build machine)."""
    try:
        proc = subprocess.run(
            ["pkg-config", "--variable", "pc_path", "pkg-config"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [d for d in proc.stdout.strip().split(":") if d] if proc.returncode == 0 else []


def _meson_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_meson_str(v) for v in values) + "]"


def _meson_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _cmake_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def meson_cross_file(
    target: Target,
    sysroot: SysrootInfo,
    *,
    cc: Sequence[str],
    cxx: Sequence[str],
    runner: Sequence[str],
) -> str:
    """A meson cross file for the target: compilers, sysroot, pkg-config, the runner."""
    root = str(sysroot.root)
    machine = target.machine
    family = _MESON_CPU_FAMILY.get(machine, machine)
    includes = [f"-I{p}" for p in sysroot.include_paths]
    libs = [f"-L{p}" for p in sysroot.lib_paths]
    lines = [
        f"# Written by monorepo build for target {target.name}; do not edit (it is rewritten).",
        "[binaries]",
        f"c = {_meson_list([*cc, f'--sysroot={root}'])}",
        f"cpp = {_meson_list([*cxx, f'--sysroot={root}'])}",
        f"ar = {_meson_str(_tool(sysroot, cc, 'ar'))}",
        f"strip = {_meson_str(_tool(sysroot, cc, 'strip'))}",
        "pkg-config = 'pkg-config'",
        "pkgconfig = 'pkg-config'",
    ]
    if runner:
        lines.append(f"exe_wrapper = {_meson_list(runner)}")
    lines += [
        "",
        "[built-in options]",
        f"c_args = {_meson_list(includes)}",
        f"cpp_args = {_meson_list(includes)}",
        f"c_link_args = {_meson_list(libs)}",
        f"cpp_link_args = {_meson_list(libs)}",
        "",
        "[properties]",
        f"sys_root = {_meson_str(root)}",
        f"pkg_config_libdir = {_meson_list(_pkg_config_dirs(sysroot))}",
        "needs_exe_wrapper = true",
        "",
        "[host_machine]",
        "system = 'linux'",
        f"cpu_family = {_meson_str(family)}",
        f"cpu = {_meson_str(machine)}",
        f"endian = {_meson_str('big' if family in _BIG_ENDIAN else 'little')}",
        "",
    ]
    return "\n".join(lines)


def meson_native_file() -> str:
    """The build machine's side: its own pkg-config path, so tools built and run during the
    build (code generators) do not link against the target's libraries."""
    dirs = _host_pkg_config_dirs()
    return "\n".join(
        [
            "# Written by monorepo build; the build machine's side of a cross build.",
            "[properties]",
            f"pkg_config_libdir = {_meson_list(dirs)}",
            "",
        ]
    )


def cmake_toolchain(
    target: Target,
    sysroot: SysrootInfo,
    *,
    cc: Sequence[str],
    cxx: Sequence[str],
    runner: Sequence[str],
) -> str:
    """A CMake toolchain file: compilers, ``CMAKE_SYSROOT``, find paths in the sysroot only,
    the runner as ``CMAKE_CROSSCOMPILING_EMULATOR`` and the target's Python headers."""
    root = str(sysroot.root)
    processor = _CMAKE_PROCESSOR.get(target.machine, target.machine)
    includes = " ".join(f"-I{p}" for p in sysroot.include_paths)
    python_include = sysroot.root / f"usr/include/python{sysroot.python}"
    ar = _tool(sysroot, cc, "ar")
    lines = [
        f"# Written by monorepo build for target {target.name}; do not edit (it is rewritten).",
        "set(CMAKE_SYSTEM_NAME Linux)",
        f"set(CMAKE_SYSTEM_PROCESSOR {_cmake_str(processor)})",
        f"set(CMAKE_SYSROOT {_cmake_str(root)})",
        f"set(CMAKE_C_COMPILER {_cmake_str(cc[0])})",
        f"set(CMAKE_CXX_COMPILER {_cmake_str(cxx[0])})",
    ]
    if len(cc) > 1:
        lines.append(f"set(CMAKE_C_COMPILER_ARG1 {_cmake_str(shlex.join(cc[1:]))})")
    if len(cxx) > 1:
        lines.append(f"set(CMAKE_CXX_COMPILER_ARG1 {_cmake_str(shlex.join(cxx[1:]))})")
    lines += [
        f"set(CMAKE_AR {_cmake_str(shutil.which(ar) or ar)})",
        f"set(CMAKE_C_FLAGS_INIT {_cmake_str(includes + ' -fPIC')})",
        f"set(CMAKE_CXX_FLAGS_INIT {_cmake_str(includes + ' -fPIC')})",
        f"set(CMAKE_FIND_ROOT_PATH {_cmake_str(root)})",
        "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)",
        "set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)",
        "set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)",
        "set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)",
        f"set(ENV{{PKG_CONFIG_LIBDIR}} {_cmake_str(':'.join(_pkg_config_dirs(sysroot)))})",
        f"set(ENV{{PKG_CONFIG_SYSROOT_DIR}} {_cmake_str(root)})",
        f'set(Python_INCLUDE_DIR {_cmake_str(str(python_include))} CACHE PATH "" FORCE)',
        f'set(Python3_INCLUDE_DIR {_cmake_str(str(python_include))} CACHE PATH "" FORCE)',
        f'set(Python_SOABI {_cmake_str(sysroot.soabi)} CACHE STRING "" FORCE)',
        f'set(Python3_SOABI {_cmake_str(sysroot.soabi)} CACHE STRING "" FORCE)',
        f'set(PYTHON_MODULE_EXTENSION {_cmake_str(sysroot.ext_suffix)} CACHE STRING "" FORCE)',
    ]
    if runner:
        lines.append(f"set(CMAKE_CROSSCOMPILING_EMULATOR {_cmake_str(';'.join(runner))})")
    return "\n".join(lines) + "\n"


_CONFIG_SCRIPT = r"""#!/bin/sh
# Written by monorepo build for @LABEL@ (target @TARGET@): this machine's @NAME@ would
# describe this machine's @MODNAME@, so this one answers for the sysroot, via pkg-config.
PKG_CONFIG_LIBDIR=@LIBDIR@
PKG_CONFIG_SYSROOT_DIR=@ROOT@
export PKG_CONFIG_LIBDIR PKG_CONFIG_SYSROOT_DIR
unset PKG_CONFIG_PATH
mod=@MODULE@
root=@ROOT@
if ! pkg-config --exists "$mod"; then
  echo "monorepo: building @LABEL@ for @TARGET@ ran @NAME@, but the sysroot $root has no $mod.pc; add the library's development package to the sysroot (an overlay rule's system-libraries, then python -m monorepo.sysroot; docs/cross.md)" >&2
  exit 1
fi
var() {
  v=$(pkg-config --variable="$1" "$mod")
  case "$v" in
    "$root"*|"") printf '%s\n' "$v" ;;
    /*) printf '%s%s\n' "$root" "$v" ;;
    *) printf '%s\n' "$v" ;;
  esac
}
if [ $# -eq 0 ]; then
  echo "usage: @NAME@ --cflags | --libs | --version | --prefix | --includedir | --libdir (monorepo's sysroot answer)" >&2
  exit 1
fi
for arg in "$@"; do
  case "$arg" in
    --cflags|--cppflags|--includes|--cflags-only-I) pkg-config --cflags "$mod" ;;
    --libs|--ldflags|--libs-only-l|--dynamic|--plugin-libs) pkg-config --libs "$mod" ;;
    --static|--libs-static|--static-libs) pkg-config --static --libs "$mod" ;;
    --libs-only-L) pkg-config --libs-only-L "$mod" ;;
    --version|--modversion|--release) @VERSION@ ;;
    --prefix|--exec-prefix|--exec_prefix) var prefix ;;
    --includedir|--include|--includedir-server) var includedir ;;
    --libdir|--pkglibdir) var libdir ;;
    *)
      echo "monorepo: building @LABEL@ for @TARGET@ ran @NAME@ $arg, which monorepo's sysroot answer does not know; pass the value in an overlay rule's build-env or config-settings (docs/cross.md)" >&2
      exit 1 ;;
  esac
done
"""

_REFUSING_SCRIPT = r"""#!/bin/sh
# Written by monorepo build for @LABEL@ (target @TARGET@): refuses to run this machine's @NAME@.
echo "monorepo: building @LABEL@ for @TARGET@ ran @NAME@, which describes this machine (@HOST@), not the target; monorepo has no sysroot answer for it. Give the build its settings in an overlay rule (build-env or config-settings; docs/cross.md)" >&2
exit 1
"""

_PKG_CONFIG_WRAPPER = r"""#!/bin/sh
# Written by monorepo build: pkg-config answering for the sysroot of target @TARGET@.
PKG_CONFIG_LIBDIR=@LIBDIR@
PKG_CONFIG_SYSROOT_DIR=@ROOT@
export PKG_CONFIG_LIBDIR PKG_CONFIG_SYSROOT_DIR
unset PKG_CONFIG_PATH
exec pkg-config "$@"
"""


def _fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    return template


def _host_config_scripts(path: str, triplet: str) -> list[str]:
    """``*-config`` and ``*_config`` programs on this machine's PATH (not pkg-config).

    A virtual environment's ``bin`` (the build venv) is left alone: what is there came
    from wheels of the build closure (``numpy-config``, ``pybind11-config``), tools the
    build asked for, not this machine's libraries."""
    found: set[str] = set()
    for directory in path.split(os.pathsep):
        if os.path.isfile(os.path.join(os.path.dirname(directory or "."), "pyvenv.cfg")):
            continue
        try:
            names = os.listdir(directory or ".")
        except OSError:
            continue
        for name in names:
            if not name.endswith(("-config", "_config")) or "pkg-config" in name:
                continue
            if name.startswith(triplet) or name.startswith("."):
                continue
            if os.access(os.path.join(directory, name), os.X_OK):
                found.add(name)
    return sorted(found)


def _write_script(path: Path, text: str) -> None:
    write_text_if_changed(path, text)
    path.chmod(0o755)


def cross_environment(
    *,
    label: str,
    backend: str,
    target: Target,
    sysroot: SysrootInfo,
    directory: Path,
    base_path: str,
    host_machine: str,
) -> CrossEnv:
    """Write the cross files for one package's build into *directory* and say how to use them.

    *label* names the package in the messages of the generated scripts; *backend* (the
    PEP 517 backend's import name) decides which config settings are passed: a cross
    file for meson-python, a toolchain for scikit-build-core.  *base_path* is the PATH the
    hook would otherwise see, searched for ``*-config`` programs to shadow.
    """
    directory.mkdir(parents=True, exist_ok=True)
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    root = str(sysroot.root)
    cc, cxx = compilers(target, sysroot)
    runner = shlex.split(target.runner.format(sysroot=root)) if target.runner else []
    includes = " ".join(f"-I{p}" for p in sysroot.include_paths)
    libs = " ".join(f"-L{p}" for p in sysroot.lib_paths)
    pc_dirs = ":".join(_pkg_config_dirs(sysroot))
    cc_cmd = shlex.join([*cc, f"--sysroot={root}"])
    cxx_cmd = shlex.join([*cxx, f"--sysroot={root}"])

    files = {
        "meson-cross": directory / "meson-cross.ini",
        "meson-native": directory / "meson-native.ini",
        "cmake-toolchain": directory / "toolchain.cmake",
    }
    write_text_if_changed(
        files["meson-cross"], meson_cross_file(target, sysroot, cc=cc, cxx=cxx, runner=runner)
    )
    write_text_if_changed(files["meson-native"], meson_native_file())
    write_text_if_changed(
        files["cmake-toolchain"], cmake_toolchain(target, sysroot, cc=cc, cxx=cxx, runner=runner)
    )

    common = {
        "LABEL": label,
        "TARGET": target.name,
        "ROOT": shlex.quote(root),
        "LIBDIR": shlex.quote(pc_dirs),
        "HOST": host_machine,
    }
    wrapper = _fill(_PKG_CONFIG_WRAPPER, **common)
    _write_script(bin_dir / f"{sysroot.triplet}-pkg-config", wrapper)
    shadowed = set(CONFIG_SCRIPTS)
    for name, module in CONFIG_SCRIPTS.items():
        version = (
            'printf "PostgreSQL %s\\n" "$(pkg-config --modversion "$mod")"'
            if name == "pg_config"
            else 'pkg-config --modversion "$mod"'
        )
        text = _fill(
            _CONFIG_SCRIPT,
            **common,
            NAME=name,
            MODNAME=module,
            MODULE=shlex.quote(module),
            VERSION=version,
        )
        _write_script(bin_dir / name, text)
    for name in _host_config_scripts(base_path, sysroot.triplet):
        if name in shadowed:
            continue
        _write_script(bin_dir / name, _fill(_REFUSING_SCRIPT, **common, NAME=name))
        shadowed.add(name)
    for stale in bin_dir.iterdir():
        if stale.name not in shadowed and stale.name != f"{sysroot.triplet}-pkg-config":
            stale.unlink()

    environ = {
        "PATH": os.pathsep.join([str(bin_dir), base_path]),
        "CC": cc_cmd,
        "CXX": cxx_cmd,
        "LDSHARED": f"{cc_cmd} -shared",
        "LDCXXSHARED": f"{cxx_cmd} -shared",
        "CFLAGS": f"{includes} -fPIC",
        "CXXFLAGS": f"{includes} -fPIC",
        "LDFLAGS": libs,
        "AR": _tool(sysroot, cc, "ar"),
        "PKG_CONFIG_LIBDIR": pc_dirs,
        "PKG_CONFIG_SYSROOT_DIR": root,
        "CMAKE_TOOLCHAIN_FILE": str(files["cmake-toolchain"]),
    }
    settings: ConfigSettings = {}
    if backend == _MESON_BACKEND:
        settings["setup-args"] = [
            f"--cross-file={files['meson-cross']}",
            f"--native-file={files['meson-native']}",
        ]
    elif backend in _SKBUILD_BACKENDS:
        settings["cmake.define.CMAKE_TOOLCHAIN_FILE"] = str(files["cmake-toolchain"])
    return CrossEnv(environ=environ, config_settings=settings, directory=directory, files=files)


def merge_config_settings(*layers: Mapping[str, str | Sequence[str]]) -> ConfigSettings:
    """Config settings of several sources, later ones last: lists (and a string meeting a
    list) are concatenated, so an overlay's ``setup-args`` add to the cross file's; two
    strings for the same key keep the later one."""
    out: ConfigSettings = {}
    for layer in layers:
        for key, value in layer.items():
            new: str | list[str] = value if isinstance(value, str) else list(value)
            old = out.get(key)
            if old is None or (isinstance(old, str) and isinstance(new, str)):
                out[key] = new
            else:
                before = [old] if isinstance(old, str) else old
                after = [new] if isinstance(new, str) else new
                out[key] = [*before, *after]
    return out
