"""``monorepo build`` against a sysroot it did not make: real Debian packages unpacked by hand.

For arm64 (``MONOREPO_TEST_SYSROOT``) and armhf (``MONOREPO_TEST_SYSROOT_ARMHF``), the
packages of the sysroot ``.ci/run`` made are unpacked again with ``dpkg-deb -x`` into a
tree with no marker, absolute links and no ``/usr`` merge; a project whose target points
at it cross-builds a C extension, checks it is an ELF for the target and imports it
under qemu with the tree's own interpreter.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

import monorepo
from fixtures.builder import FixtureIndex, Release
from fixtures.server import IndexServer
from monorepo._core.paths import CacheDir
from monorepo._core.reporter import RecordingReporter
from monorepo.building.elfcheck import read_elf_header
from monorepo.project.targets import host_target
from monorepo.sysroot.discover import read_sysroot
from monorepo.sysroot.make import download_debs
from tests.test_build import BACKEND_FILE, C_SOURCE, CEXT_BACKEND
from tests.test_sysroot_discover import unpack_by_hand

HOST = host_target()

# test_build's C-extension backend, but with the cross environment's CFLAGS (the target's
# headers) before the build machine's include directory, as setuptools orders them: the
# host's pyconfig.h is a 64-bit one, and armhf is not.
_HOST_FIRST = (
    'cmd += ["-I" + _sysconfig.get_path("include")] + os.environ.get("CFLAGS", "").split()'
)
_TARGET_FIRST = (
    'cmd += os.environ.get("CFLAGS", "").split() + ["-I" + _sysconfig.get_path("include")]'
)
assert _HOST_FIRST in CEXT_BACKEND
FASTTHING = Release(
    "fastthing",
    "1.0",
    files={
        BACKEND_FILE: CEXT_BACKEND.replace(_HOST_FIRST, _TARGET_FIRST),
        "fastthing/_speed.c": C_SOURCE.replace("HEADER", "<Python.h>"),
    },
)

#: (environment variable, Debian arch, target machine, compiler, qemu, ELF e_machine)
ARCHES = [
    ("MONOREPO_TEST_SYSROOT", "arm64", "aarch64", "aarch64-linux-gnu-gcc", "qemu-aarch64", 183),
    ("MONOREPO_TEST_SYSROOT_ARMHF", "armhf", "armv7l", "arm-linux-gnueabihf-gcc", "qemu-arm", 40),
]


@pytest.mark.parametrize(
    ("variable", "arch", "machine", "cc", "qemu", "e_machine"),
    [pytest.param(*a, id=a[1]) for a in ARCHES],
)
def test_cross_build_against_debian_packages_unpacked_by_hand(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
    tmp_path: Path,
    variable: str,
    arch: str,
    machine: str,
    cc: str,
    qemu: str,
    e_machine: int,
) -> None:
    if not (os.environ.get(variable) and shutil.which(cc) and shutil.which(qemu)):
        pytest.skip(f"needs {cc}, {qemu} and {variable} (see .ci/run)")
    if HOST.machine != "x86_64" or HOST.python_version != "3.11":
        pytest.skip("needs an x86_64 build machine running Python 3.11 (bookworm's)")
    made = read_sysroot(Path(os.environ[variable]))
    debs = download_debs(
        sorted(made.packages), arch=arch, suite=made.suite, cache_dir=CacheDir.from_env({}).root
    )
    root = tmp_path / "sysroot"
    for deb in debs.values():
        unpack_by_hand(deb, root)
    # The facts discovered from the tree are those the marker of the made one records.
    info = read_sysroot(root, python=made.python)
    assert info.origin == "files" and made.origin == "made"
    for key in ("arch", "triplet", "machine", "python", "ext_suffix", "soabi", "host_platform"):
        assert getattr(info, key) == getattr(made, key), key
    assert info.sysconfigdata_name == made.sysconfigdata_name
    # Debian's libz.so, libm.so, ... point at /lib/...: the linker would leave the tree.
    assert "absolute library links" in info.notes[0]
    server = serve(make_index([FASTTHING]))
    native = (
        f'{{ name = "native", python = "{HOST.python}", platform = "linux",'
        f' machine = "{HOST.machine}" }}'
    )
    board = (
        f'{{ name = "board", python = "3.11", platform = "linux", machine = "{machine}",'
        f' cc = "{cc}", sysroot = "{root}", runner = "{qemu} -L {{sysroot}}" }}'
    )
    proj = make_project(
        '[project]\nname = "p"\nversion = "0"\ndependencies = ["fastthing"]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{native}, {board}]\n'
    )
    monorepo.lock(proj)
    monorepo.pull(proj)
    server.stop()
    reporter = RecordingReporter()
    result = monorepo.build(proj, target="board", reporter=reporter)
    assert result.ok, [(p.label, p.reason, p.tail) for p in result.failed]
    assert not (root / "monorepo-sysroot.toml").exists()  # the tree was only read
    assert any("absolute library links" in text for _, text in reporter.messages)
    (built,) = [p for p in result.built if p.dir == "fastthing"]
    assert built.wheel is not None
    assert built.wheel.name == f"fastthing-1.0-cp311-cp311-linux_{machine}.whl"
    with zipfile.ZipFile(built.wheel) as zf:
        (so,) = [n for n in zf.namelist() if n.endswith(".so")]
        header = read_elf_header(zf.read(so)[:64])
    assert so == f"fastthing/_speed{made.ext_suffix}"
    assert header is not None and header.machine == e_machine
    assert built.log is not None and "# ---- import on the target" in built.log.read_text()
