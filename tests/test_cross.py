"""Cross builds of real build systems: meson-python, setuptools C++, pkg-config.

The end-to-end tests lock, pull and build :mod:`fixtures.crosspkgs` (with the real
meson, meson-python and setuptools of :mod:`fixtures.realdists` on the loopback index)
for aarch64 and armhf, then import every extension under qemu with the sysroot's
Python.  They skip when the cross compiler, qemu, the sysroot
(``MONOREPO_TEST_SYSROOT``, ``MONOREPO_TEST_SYSROOT_ARMHF``) or the real files
(``python -m fixtures.realdists``) are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import monorepo
from fixtures import realdists
from fixtures.builder import build_index
from fixtures.crosspkgs import CROSS_PACKAGES
from fixtures.server import IndexServer
from monorepo.building.builder import build
from monorepo.building.elfcheck import EM_AARCH64, EM_ARM, read_elf_header
from monorepo.project.targets import host_target

HOST = host_target()
NATIVE = (
    f'{{ name = "native", python = "{HOST.python}", platform = "{HOST.platform}",'
    f' machine = "{HOST.machine}" }}'
)
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="cross builds are tested on Linux"
)


def _sysroot(env: str) -> str:
    value = os.environ.get(env, "")
    return value if value and Path(value, "monorepo-sysroot.toml").is_file() else ""


ARM64_SYSROOT = _sysroot("MONOREPO_TEST_SYSROOT")
ARMHF_SYSROOT = _sysroot("MONOREPO_TEST_SYSROOT_ARMHF")
REAL = realdists.default_dir()
CROSS_TARGETS = {
    "arm": (
        ARM64_SYSROOT,
        "aarch64",
        "aarch64-linux-gnu",
        "qemu-aarch64",
        EM_AARCH64,
        64,
        "MONOREPO_TEST_SYSROOT",
    ),
    "armhf": (
        ARMHF_SYSROOT,
        "armv7l",
        "arm-linux-gnueabihf",
        "qemu-arm",
        EM_ARM,
        32,
        "MONOREPO_TEST_SYSROOT_ARMHF",
    ),
}


def _target_toml(name: str) -> str:
    sysroot, machine, triplet, qemu, *_ = CROSS_TARGETS[name]
    return (
        f'{{ name = "{name}", python = "3.11", platform = "linux", machine = "{machine}",'
        f' cc = "{triplet}-gcc", sysroot = "{sysroot or "/nonexistent"}",'
        f' runner = "{qemu} -L {{sysroot}}" }}'
    )


def _skip_reason(name: str) -> str | None:
    sysroot, _machine, triplet, qemu, _em, _bits, env = CROSS_TARGETS[name]
    if HOST.machine != "x86_64":
        return "cross tests run on x86_64"
    for tool in (f"{triplet}-gcc", f"{triplet}-g++", qemu, "pkg-config", "ninja", "patchelf"):
        if shutil.which(tool) is None:
            return f"needs {tool} (see .ci/run)"
    if not sysroot:
        return f"needs {env} (a sysroot from python -m monorepo.sysroot; see .ci/run)"
    pc = Path(sysroot, "usr/lib", triplet, "pkgconfig")
    if not ((pc / "yaml-0.1.pc").is_file() and (pc / "zlib.pc").is_file()):
        return (
            f"needs libyaml-dev and zlib1g-dev in {sysroot} (python -m monorepo.sysroot --package)"
        )
    if realdists.missing(REAL):
        return f"needs the real sdists in {REAL} (python -m fixtures.realdists)"
    return None


@pytest.fixture(scope="module")
def cross_workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One project locking the three packages for native, arm and armhf (pulled once,
    so the build machine's closure -- setuptools, meson ... -- is built once)."""
    if _skip_reason("arm") and _skip_reason("armhf"):
        pytest.skip(_skip_reason("arm") or "")
    root = tmp_path_factory.mktemp("cross")
    index = build_index(CROSS_PACKAGES, root / "index")
    realdists.publish(index, REAL)
    server = IndexServer(index.root).start()
    try:
        proj = root / "proj"
        proj.mkdir()
        deps = ", ".join(f'"{r.name}"' for r in CROSS_PACKAGES)
        (proj / "pyproject.toml").write_text(
            f'[project]\nname = "p"\nversion = "0"\ndependencies = [{deps}]\n'
            f'[tool.monorepo]\nindex-url = "{server.url}"\n'
            f"targets = [{NATIVE}, {_target_toml('arm')}, {_target_toml('armhf')}]\n"
        )
        monorepo.lock(proj)
        monorepo.pull(proj)
    finally:
        server.stop()
    yield proj


def _run_on_target(name: str, wheels: list[Path], code: str, tmp: Path) -> str:
    sysroot, _m, _t, qemu, *_ = CROSS_TARGETS[name]
    site = tmp / f"site-{name}"
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)
    proc = subprocess.run(
        [qemu, "-L", sysroot, f"{sysroot}/usr/bin/python3.11", "-I", "-c",
         f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("name", ["arm", "armhf"])
def test_meson_cxx_and_pkgconfig_packages_cross_build_and_import_on_the_target(
    cross_workspace: Path, name: str, tmp_path: Path
) -> None:
    reason = _skip_reason(name)
    if reason:
        pytest.skip(reason)
    _sysroot_dir, machine, triplet, _qemu, em, bits, _env = CROSS_TARGETS[name]
    result = build(cross_workspace, target=name)
    assert result.ok, [(p.label, p.reason, p.tail) for p in result.failed]
    built = {p.name: p for p in result.built if not p.host}
    assert sorted(built) == sorted(r.name for r in CROSS_PACKAGES)
    tag = f"cp311-cp311-linux_{machine}.whl"
    wheels = []
    for pkg in built.values():
        assert pkg.wheel is not None and pkg.wheel.name.endswith(tag), pkg.wheel
        wheels.append(pkg.wheel)
        with zipfile.ZipFile(pkg.wheel) as zf:
            (so,) = [n for n in zf.namelist() if n.endswith(".so")]
            assert so.endswith(f"_speed.cpython-311-{triplet}.so"), so
            header = read_elf_header(zf.read(so)[:64])
        assert header is not None and (header.machine, header.bits) == (em, bits), so
        log = pkg.log
        assert log is not None and "# ---- import on the target" in log.read_text()
    # the build machine's closure was built natively (meson, meson-python, setuptools ...)
    host_built = {p.name for p in result.built if p.host}
    assert {"meson", "meson-python", "setuptools"} <= host_built | _already_built(cross_workspace)
    out = _run_on_target(
        name,
        wheels,
        "import monorepo_fixture_meson._speed as m, monorepo_fixture_cxx._speed as c,"
        " monorepo_fixture_pkgconfig._speed as p;"
        " print(m.bits(), c.bits(), p.bits()); print(c.answer()); print(m.answer(), p.answer())",
        tmp_path,
    )
    lines = out.splitlines()
    assert lines[0] == f"{bits} {bits} {bits}"
    assert lines[1] == "42"
    zlib, yaml = lines[2].split()
    assert zlib.startswith("1.") and yaml.startswith("0.")
    # the generated cross files sit in the package's build directory, not in duni/
    cross = cross_workspace / "duni-build" / name / "cross"
    meson_dir = [d for d in cross.iterdir() if d.name.startswith("monorepo-fixture-meson")]
    assert meson_dir and (meson_dir[0] / "meson-cross.ini").is_file()
    assert not list((cross_workspace / "duni").rglob("meson-cross.ini"))
    assert build(cross_workspace, target=name).built == []


def _already_built(proj: Path) -> set[str]:
    """Build-machine packages a previous parametrization built (skipped this time)."""
    wheels = (proj / "duni-build" / "native" / "wheels").glob("*.whl")
    return {w.name.split("-")[0].replace("_", "-") for w in wheels}


def test_skip_reason_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        CROSS_TARGETS, "arm", ("", "aarch64", "no-such-triplet", "qemu-aarch64", 0, 64, "X")
    )
    reason = _skip_reason("arm")
    assert reason is not None
    assert "no-such-triplet-gcc" in reason or "x86_64" in reason
