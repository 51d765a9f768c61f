"""The generated cross environments: files, variables, shadow scripts, config settings.

These need no cross compiler (a sysroot is faked from a few files), except the CMake
test, which configures and builds a real project with the generated toolchain file
against ``MONOREPO_TEST_SYSROOT`` and skips without it.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import monorepo
from fixtures.builder import BACKEND_SOURCE, FixtureIndex, Release
from fixtures.server import IndexServer
from monorepo.building.builder import build
from monorepo.building.crossenv import (
    CrossEnv,
    compilers,
    cross_environment,
    merge_config_settings,
)
from monorepo.building.elfcheck import EM_AARCH64, EM_ARM, check_wheel, read_elf_header
from monorepo.project.targets import Target, host_target
from monorepo.sysroot.discover import read_sysroot
from monorepo.sysroot.info import SysrootInfo
from tests.helpers import write_overlay

HOST = host_target()
needs_pkg_config = pytest.mark.skipif(shutil.which("pkg-config") is None, reason="pkg-config")

LIBXML_PC = """\
prefix=/usr
exec_prefix=${prefix}
libdir=${prefix}/lib/TRIPLET
includedir=${prefix}/include
Name: libXML
Version: 2.9.14
Description: libXML library version2.
Libs: -L${libdir} -lxml2
Cflags: -I${includedir}/libxml2
"""


def fake_sysroot(
    root: Path, *, triplet: str = "aarch64-linux-gnu", machine: str = "aarch64"
) -> SysrootInfo:
    """The files a SysrootInfo names, and libxml2's .pc file (but no libpq)."""
    pc = root / "usr/lib" / triplet / "pkgconfig"
    pc.mkdir(parents=True, exist_ok=True)
    (pc / "libxml-2.0.pc").write_text(LIBXML_PC.replace("TRIPLET", triplet))
    (root / "usr/include/libxml2").mkdir(parents=True, exist_ok=True)
    return SysrootInfo(
        root=root.resolve(),
        arch="arm64" if machine == "aarch64" else "armhf",
        suite="bookworm",
        python="3.11",
        triplet=triplet,
        machine=machine,
        host_platform=f"linux-{machine}",
        interpreter="usr/bin/python3.11",
        include_dirs=("usr/include/python3.11", f"usr/include/{triplet}", "usr/include"),
        lib_dirs=(f"usr/lib/{triplet}",),
        sysconfigdata_name=f"_sysconfigdata__linux_{triplet}",
        sysconfigdata_dir="usr/lib/python3.11",
        pythonpath_dir="monorepo-pythonpath",
        ext_suffix=f".cpython-311-{triplet}.so",
        soabi=f"cpython-311-{triplet}",
        packages={},
    )


def target(name: str = "arm", machine: str = "aarch64", **kw: str) -> Target:
    return Target(name=name, python="3.11", platform="linux", machine=machine, **kw)


def make_env(
    tmp_path: Path,
    backend: str = "setuptools.build_meta",
    *,
    base_path: str | None = None,
    tgt: Target | None = None,
    info: SysrootInfo | None = None,
) -> CrossEnv:
    info = info or fake_sysroot(tmp_path / "sysroot")
    return cross_environment(
        label="demo 1.0",
        backend=backend,
        target=tgt or target(runner="qemu-aarch64 -L {sysroot}"),
        sysroot=info,
        directory=tmp_path / "cross" / "demo",
        base_path=base_path if base_path is not None else os.environ.get("PATH", os.defpath),
        host_machine="x86_64",
    )


def run(env: CrossEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        env={**os.environ, **env.environ},
        capture_output=True,
        text=True,
        check=False,
    )


# ------------------------------------------------------------------ compilers, vars


@pytest.mark.parametrize(
    ("cc", "cxx"),
    [
        (None, ["aarch64-linux-gnu-g++"]),
        ("aarch64-linux-gnu-gcc", ["aarch64-linux-gnu-g++"]),
        ("/opt/poky/bin/aarch64-poky-linux-gcc", ["/opt/poky/bin/aarch64-poky-linux-g++"]),
        ("clang --target=aarch64-linux-gnu", ["clang++", "--target=aarch64-linux-gnu"]),
        ("gcc-12", ["g++-12"]),
        ("aarch64-linux-gnu-cc", ["aarch64-linux-gnu-c++"]),
    ],
)
def test_the_cxx_compiler_is_the_c_compilers_sibling(
    tmp_path: Path, cc: str | None, cxx: list[str]
) -> None:
    info = fake_sysroot(tmp_path)
    kw = {"cc": cc} if cc else {}
    assert compilers(target(**kw), info)[1] == cxx


@needs_pkg_config
def test_environment_points_every_compiler_and_pkg_config_at_the_sysroot(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    root = str(tmp_path.joinpath("sysroot").resolve())
    e = env.environ
    assert e["CC"] == f"aarch64-linux-gnu-gcc --sysroot={root}"
    assert e["CXX"] == f"aarch64-linux-gnu-g++ --sysroot={root}"
    assert e["LDSHARED"] == f"{e['CC']} -shared"
    assert e["LDCXXSHARED"] == f"{e['CXX']} -shared"
    assert e["CXXFLAGS"].startswith(f"-I{root}/usr/include/python3.11 ")
    assert e["CFLAGS"] == e["CXXFLAGS"]
    assert e["PKG_CONFIG_SYSROOT_DIR"] == root
    assert e["PKG_CONFIG_LIBDIR"].split(":")[0] == f"{root}/usr/lib/aarch64-linux-gnu/pkgconfig"
    assert e["PATH"].split(os.pathsep)[0] == str(env.directory / "bin")
    assert env.config_settings == {}  # setuptools gets everything from the environment
    # pkg-config itself now answers for the sysroot
    out = run(env, "pkg-config", "--cflags", "libxml-2.0")
    assert out.stdout.split() == [f"-I{root}/usr/include/libxml2"]
    wrapper = run(
        env, str(env.directory / "bin" / "aarch64-linux-gnu-pkg-config"), "--libs", "libxml-2.0"
    )
    assert wrapper.returncode == 0 and "-lxml2" in wrapper.stdout


def test_generated_files_are_deterministic_and_outside_the_sources(tmp_path: Path) -> None:
    first = make_env(tmp_path, "mesonpy")
    before = {p: p.read_bytes() for p in sorted(first.directory.rglob("*")) if p.is_file()}
    second = make_env(tmp_path, "mesonpy")
    after = {p: p.read_bytes() for p in sorted(second.directory.rglob("*")) if p.is_file()}
    assert before == after
    assert all(p.is_relative_to(tmp_path / "cross" / "demo") for p in after)


# -------------------------------------------------------------------- *-config


@needs_pkg_config
def test_config_scripts_answer_for_the_sysroot(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    root = str(tmp_path.joinpath("sysroot").resolve())
    script = str(env.directory / "bin" / "xml2-config")
    assert shutil.which("xml2-config", path=env.environ["PATH"]) == script
    out = run(env, "xml2-config", "--cflags", "--libs")
    assert out.returncode == 0, out.stderr
    cflags, libs = out.stdout.splitlines()
    assert cflags.split() == [f"-I{root}/usr/include/libxml2"]
    assert "-lxml2" in libs.split()
    assert run(env, "xml2-config", "--version").stdout.strip() == "2.9.14"
    assert run(env, "xml2-config", "--prefix").stdout.strip() == f"{root}/usr"
    assert run(env, "xml2-config", "--libdir").stdout.strip() == (
        f"{root}/usr/lib/aarch64-linux-gnu"
    )
    unknown = run(env, "xml2-config", "--frobnicate")
    assert unknown.returncode == 1 and "demo 1.0" in unknown.stderr


@needs_pkg_config
def test_a_config_script_without_its_library_in_the_sysroot_names_the_package(
    tmp_path: Path,
) -> None:
    env = make_env(tmp_path)
    out = run(env, "pg_config", "--includedir")
    assert out.returncode == 1
    assert "building demo 1.0 for arm ran pg_config" in out.stderr
    assert "no libpq.pc" in out.stderr and "system-libraries" in out.stderr


def test_other_host_config_scripts_are_refused(tmp_path: Path) -> None:
    host_bin = tmp_path / "hostbin"
    host_bin.mkdir()
    for name in ("frob-config", "pkg-config", "aarch64-linux-gnu-thing-config"):
        (host_bin / name).write_text("#!/bin/sh\necho -I/usr/include/frob\n")
        (host_bin / name).chmod(0o755)
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv_bin / "numpy-config").write_text("#!/bin/sh\necho -I/venv/numpy\n")
    (venv_bin / "numpy-config").chmod(0o755)
    env = make_env(
        tmp_path, base_path=os.pathsep.join([str(venv_bin), str(host_bin), "/usr/bin", "/bin"])
    )
    shadow = env.directory / "bin"
    assert not (shadow / "numpy-config").exists()  # the build closure's own tools stay
    assert (shadow / "frob-config").is_file()
    assert not (shadow / "pkg-config").exists()
    assert not (shadow / "aarch64-linux-gnu-thing-config").exists()
    out = run(env, "frob-config", "--cflags")
    assert out.returncode == 1
    assert "building demo 1.0 for arm ran frob-config" in out.stderr
    assert "this machine (x86_64)" in out.stderr
    # a script that disappears from the host's PATH disappears from the shadows
    (host_bin / "frob-config").unlink()
    make_env(tmp_path, base_path=f"{host_bin}{os.pathsep}/usr/bin{os.pathsep}/bin")
    assert not (shadow / "frob-config").exists()


# ------------------------------------------------------------------ meson, CMake


def test_meson_python_gets_a_cross_file_and_a_native_file(tmp_path: Path) -> None:
    env = make_env(tmp_path, "mesonpy")
    root = str(tmp_path.joinpath("sysroot").resolve())
    cross, native = env.files["meson-cross"], env.files["meson-native"]
    assert env.config_settings == {
        "setup-args": [f"--cross-file={cross}", f"--native-file={native}"]
    }
    text = cross.read_text()
    assert f"c = ['aarch64-linux-gnu-gcc', '--sysroot={root}']" in text
    assert f"cpp = ['aarch64-linux-gnu-g++', '--sysroot={root}']" in text
    assert f"exe_wrapper = ['qemu-aarch64', '-L', '{root}']" in text
    assert "needs_exe_wrapper = true" in text
    assert f"sys_root = '{root}'" in text
    assert "cpu_family = 'aarch64'" in text and "endian = 'little'" in text
    assert "[properties]" in native.read_text()


def test_armhf_is_a_32_bit_arm_meson_and_cmake_target(tmp_path: Path) -> None:
    info = fake_sysroot(tmp_path / "sr", triplet="arm-linux-gnueabihf", machine="armv7l")
    tgt = target("armhf", "armv7l", runner="qemu-arm -L {sysroot}")
    env = make_env(tmp_path, "mesonpy", tgt=tgt, info=info)
    text = env.files["meson-cross"].read_text()
    assert "cpu_family = 'arm'" in text and "cpu = 'armv7l'" in text
    assert "'arm-linux-gnueabihf-gcc'" in text and "'qemu-arm'" in text
    assert env.environ["CXX"].startswith("arm-linux-gnueabihf-g++ ")
    cmake = env.files["cmake-toolchain"].read_text()
    assert 'set(CMAKE_SYSTEM_PROCESSOR "armv7-a")' in cmake


def test_scikit_build_core_gets_the_toolchain_file(tmp_path: Path) -> None:
    env = make_env(tmp_path, "scikit_build_core.build")
    toolchain = env.files["cmake-toolchain"]
    assert env.config_settings == {"cmake.define.CMAKE_TOOLCHAIN_FILE": str(toolchain)}
    assert env.environ["CMAKE_TOOLCHAIN_FILE"] == str(toolchain)
    text = toolchain.read_text()
    root = str(tmp_path.joinpath("sysroot").resolve())
    assert f'set(CMAKE_SYSROOT "{root}")' in text
    assert 'set(CMAKE_CROSSCOMPILING_EMULATOR "qemu-aarch64;-L;' in text
    assert "CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY" in text


SYSROOT = os.environ.get("MONOREPO_TEST_SYSROOT", "")


@pytest.mark.skipif(
    not (
        SYSROOT
        and Path(SYSROOT, "monorepo-sysroot.toml").is_file()
        and shutil.which("cmake")
        and shutil.which("aarch64-linux-gnu-g++")
        and shutil.which("qemu-aarch64")
    ),
    reason="needs cmake, aarch64-linux-gnu-g++, qemu-aarch64 and MONOREPO_TEST_SYSROOT",
)
def test_the_cmake_toolchain_builds_a_python_module_for_the_target(tmp_path: Path) -> None:
    """A real CMake project: FindPython and find_package(ZLIB) must come from the
    sysroot, the C++ compiler must be the target's, try_run goes through qemu."""
    info = read_sysroot(Path(SYSROOT))
    env = make_env(tmp_path, "scikit_build_core.build", info=info)
    src = tmp_path / "src"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(
        textwrap.dedent(
            """\
            cmake_minimum_required(VERSION 3.18)
            project(demo CXX)
            find_package(Python 3.11 REQUIRED COMPONENTS Development.Module)
            find_package(ZLIB REQUIRED)
            try_run(RUNS COMPILES ${CMAKE_BINARY_DIR}/probe ${CMAKE_SOURCE_DIR}/probe.cpp)
            message(STATUS "probe ran: ${RUNS}")
            message(STATUS "python headers: ${Python_INCLUDE_DIRS}")
            message(STATUS "zlib: ${ZLIB_LIBRARIES}")
            Python_add_library(_speed MODULE speed.cpp WITH_SOABI)
            target_link_libraries(_speed PRIVATE ZLIB::ZLIB)
            """
        )
    )
    (src / "probe.cpp").write_text("int main() { return sizeof(void *) == 8 ? 0 : 1; }\n")
    (src / "speed.cpp").write_text(
        "#include <Python.h>\n#include <zlib.h>\n#include <string>\n"
        "static PyObject *v(PyObject *, PyObject *) {"
        " return PyUnicode_FromString(std::string(zlibVersion()).c_str()); }\n"
        'static PyMethodDef m[] = {{"v", v, METH_NOARGS, nullptr}, {nullptr, nullptr, 0, nullptr}};\n'
        'static PyModuleDef d = {PyModuleDef_HEAD_INIT, "_speed", nullptr, -1, m};\n'
        "PyMODINIT_FUNC PyInit__speed(void) { return PyModule_Create(&d); }\n"
    )
    environ = {**os.environ, **env.environ}
    configure = subprocess.run(
        ["cmake", "-S", str(src), "-B", str(tmp_path / "b"),
         f"-DCMAKE_TOOLCHAIN_FILE={env.files['cmake-toolchain']}"],
        env=environ, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert configure.returncode == 0, configure.stdout + configure.stderr
    assert "probe ran: 0" in configure.stdout
    assert f"python headers: {SYSROOT}" in configure.stdout.replace(str(info.root), SYSROOT)
    assert f"zlib: {info.root}" in configure.stdout
    made = subprocess.run(
        ["cmake", "--build", str(tmp_path / "b")], env=environ, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stdout + made.stderr
    (module,) = (tmp_path / "b").glob(f"_speed{info.ext_suffix}")
    header = read_elf_header(module.read_bytes()[:64])
    assert header is not None and header.machine == EM_AARCH64
    out = subprocess.run(
        ["qemu-aarch64", "-L", SYSROOT, str(info.interpreter_path), "-I", "-c",
         f"import sys; sys.path.insert(0, {str(module.parent)!r}); import _speed; print(_speed.v())"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.startswith("1."), out.stderr


# ------------------------------------------------------------------ config settings


def test_merge_config_settings_adds_lists_and_replaces_strings() -> None:
    merged = merge_config_settings(
        {"setup-args": ["--cross-file=x"], "a": "1"},
        {"setup-args": ["-Dfoo=bar"], "a": "2", "b": ("x", "y")},
        {"setup-args": "-Dlast"},
    )
    assert merged == {
        "setup-args": ["--cross-file=x", "-Dfoo=bar", "-Dlast"],
        "a": "2",
        "b": ["x", "y"],
    }


# Writes the config settings each hook was given into the wheel (and the log).
SETTINGS_BACKEND = (
    BACKEND_SOURCE
    + r"""

_plain_build_wheel = build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    import json

    cfg = _read_config()
    with open(os.path.join(cfg["import-name"], "settings.json"), "w") as fh:
        json.dump(config_settings, fh, sort_keys=True)
    print("config settings:", json.dumps(config_settings, sort_keys=True), flush=True)
    return _plain_build_wheel(wheel_directory, config_settings, metadata_directory)
"""
)


def test_overlay_config_settings_reach_the_backend_per_target(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
    tmp_path: Path,
) -> None:
    import json

    release = Release(
        "settled", "1.0", files={"_fixture_backend/fixture_backend.py": SETTINGS_BACKEND}
    )
    server = serve(make_index([release]))
    rule = textwrap.dedent(
        """\
        [[rule]]
        versions = ""
        reason = "test: the backend's options"
        config-settings = { setup-args = ["-Done=1"], mode = "fast" }
        target-config-settings = { native = { setup-args = ["-Dtwo=2"] }, riscv64 = { mode = "x" } }
        """
    )
    write_overlay(tmp_path / "proj" / "fixes", "test", {"settled": rule})
    native = (
        f'{{ name = "native", python = "{HOST.python}", platform = "{HOST.platform}",'
        f' machine = "{HOST.machine}" }}'
    )
    proj = make_project(
        '[project]\nname = "p"\nversion = "0"\ndependencies = ["settled"]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{native}]\n'
        'overlays = ["fixes"]\n'
    )
    monorepo.lock(proj)
    lock_text = (proj / "pylock.toml").read_text()
    assert "config-settings" in lock_text and "-Dtwo=2" in lock_text
    monorepo.pull(proj)
    result = build(proj, isolate=False)
    assert result.ok, [(p.label, p.reason, p.tail) for p in result.failed]
    (pkg,) = result.built
    assert pkg.wheel is not None
    with zipfile.ZipFile(pkg.wheel) as zf:
        got = json.loads(zf.read("settled/settings.json"))
    assert got == {"setup-args": ["-Done=1", "-Dtwo=2"], "mode": "fast"}
    # the build record's input key names them
    record = (proj / "duni-build" / "native" / "build.toml").read_text()
    assert "-Dtwo=2" in record and "config-settings" in record
    # a change of the settings is a change of the build's inputs: it rebuilds
    (proj / "fixes" / "packages" / "settled" / "overlay.toml").write_text(
        rule.replace('mode = "fast"', 'mode = "slow"')
    )
    monorepo.lock(proj)
    monorepo.pull(proj)
    assert [p.name for p in build(proj, isolate=False).built] == ["settled"]


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux builds")


# ------------------------------------------------------------------ 32-bit ARM


def _elf(machine: int, bits: int) -> bytes:
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1, 1]) + bytes(9)
    return ident + struct.pack("<HH", 3, machine) + bytes(44)


def test_armhf_wheels_are_checked_for_32_bit_arm(tmp_path: Path) -> None:
    """linux_armv7l: an aarch64 object, or a 64-bit ARM-numbered one, is refused."""
    kw: dict[str, Any] = {"platform": "linux", "machine": "armv7l", "python": "3.11"}
    so = "a/_x.cpython-311-arm-linux-gnueabihf.so"

    def wheel(name: str, data: bytes, tag: str = "linux_armv7l") -> Path:
        path = tmp_path / f"{name}-1.0-cp311-cp311-{tag}.whl"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(so, data)
        return path

    assert check_wheel(wheel("good", _elf(EM_ARM, 32)), **kw).problems == []
    (wrong,) = check_wheel(wheel("wrong", _elf(EM_AARCH64, 64)), **kw).problems
    assert "ELF file for aarch64, not for the target armv7l" in wrong
    (bits,) = check_wheel(wheel("bits", _elf(EM_ARM, 64)), **kw).problems
    assert "64-bit ELF file, but the target armv7l is 32-bit" in bits
    tagged = check_wheel(wheel("tag", _elf(EM_ARM, 32), "linux_aarch64"), **kw).problems
    assert any("does not run on the target" in p for p in tagged)
