"""Sysroots monorepo did not make: facts discovered from the CPython a tree holds.

The offline tests unpack the .debs of the file:// mirror of ``tests/test_sysroot.py``
by hand (``dpkg-deb -x``, as a user would; the .deb's own data tar otherwise), so the
tree keeps Debian's layout: no ``/usr`` merge, absolute symlinks, no marker.  The
real-toolchain tests do the same with the real bookworm packages of the sysroot named
by ``MONOREPO_TEST_SYSROOT`` (arm64) or ``MONOREPO_TEST_SYSROOT_ARMHF`` (armhf), then
cross-compile an extension against the hand-made tree and import it under qemu.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from monorepo._core.paths import CacheDir
from monorepo.sysroot.deb import deb_data_member, decompress_member
from monorepo.sysroot.discover import discover, dpkg_status, read_sysroot
from monorepo.sysroot.info import TOML_NAME, SysrootError, read_marker
from monorepo.sysroot.libs import missing_libraries
from monorepo.sysroot.make import download_debs, make_sysroot
from tests.test_sysroot import FAKE_DEBS, SYSCONFIG, make_mirror


def unpack_by_hand(deb: Path, root: Path) -> None:
    """What a user does: ``dpkg-deb -x`` (else the data tar, extracted as it is)."""
    root.mkdir(parents=True, exist_ok=True)
    if shutil.which("dpkg-deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        return
    name, blob = deb_data_member(deb.read_bytes(), what=deb.name)
    data = decompress_member(name, blob, deb.name)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(root, filter="tar")


def fake_debs(mirror: Path) -> dict[str, Path]:
    """The mirror's .debs, but libffi-dev (what the library checks find missing)."""
    return {
        name: next(mirror.glob(f"pool/main/*/{name}/*.deb"))
        for name in FAKE_DEBS
        if name != "libffi-dev"
    }


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    make_mirror(tmp_path / "mirror")
    return tmp_path / "mirror"


def test_debian_packages_unpacked_by_hand_are_a_sysroot(tmp_path: Path, mirror: Path) -> None:
    root = tmp_path / "by-hand"
    for deb in fake_debs(mirror).values():
        unpack_by_hand(deb, root)
    assert not (root / TOML_NAME).exists()
    info = read_sysroot(root)
    assert info.origin == "files" and not info.made
    assert (info.arch, info.triplet, info.machine) == ("arm64", "aarch64-linux-gnu", "aarch64")
    assert info.python == "3.11"
    assert info.host_platform == "linux-aarch64"
    assert info.ext_suffix == ".cpython-311-aarch64-linux-gnu.so"
    assert info.soabi == "cpython-311-aarch64-linux-gnu"
    assert info.sysconfigdata_name == "_sysconfigdata__linux_aarch64-linux-gnu"
    assert info.sysconfigdata_dir == "usr/lib/python3.11"
    assert info.include_dirs == (
        "usr/include/python3.11",
        "usr/include/aarch64-linux-gnu",
        "usr/include",
    )
    # Not merged: libc's own directory is a real one beside usr/lib's.
    assert info.lib_dirs == ("usr/lib/aarch64-linux-gnu", "lib/aarch64-linux-gnu")
    assert info.interpreter == "usr/bin/python3.11"
    # libyaml.so -> /usr/lib/... leaves the tree: the linker would follow it on the host.
    (note,) = info.notes
    assert (
        "2 absolute library links (usr/lib/aarch64-linux-gnu/libpython3.11.so,"
        " usr/lib/aarch64-linux-gnu/libyaml.so)" in note
    )
    # The host interpreter's copy of the module is in the cache: the tree is untouched.
    copy = Path(info.pythonpath_dir) / f"{info.sysconfigdata_name}.py"
    assert copy.read_bytes() == SYSCONFIG
    assert copy.is_relative_to(CacheDir.at(None).root)
    assert not (root / "monorepo-pythonpath").exists()
    assert info.cross_env()["PYTHONPATH"] == info.pythonpath_dir
    # Without dpkg's database, libraries are looked for as files.
    wanted = {"pyyaml 6.0": ["libyaml-dev"], "cffi 1.17": ["libffi-dev"]}
    assert missing_libraries(info, wanted) == {"libffi-dev": ["cffi 1.17"]}
    # The same facts as python -m monorepo.sysroot records for the same packages.
    made = make_sysroot(tmp_path / "made", mirror=mirror.as_uri(), keyring=None)
    for key in ("arch", "triplet", "python", "ext_suffix", "soabi", "sysconfigdata_name"):
        assert getattr(info, key) == getattr(made, key), key
    assert made.include_dirs == info.include_dirs


def test_dpkg_status_is_the_package_list(tmp_path: Path, mirror: Path) -> None:
    root = tmp_path / "rootfs"
    for deb in fake_debs(mirror).values():
        unpack_by_hand(deb, root)
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(
        "Package: libyaml-dev\nStatus: install ok installed\nVersion: 0.2.5-1\n\n"
        "Package: libffi-dev\nStatus: deinstall ok config-files\nVersion: 3.4.4-1\n\n"
        "Package: libpq-dev\nStatus: install ok installed\nArchitecture: arm64\n"
        "Version: 15.8-0+deb12u1\nDescription: x\n continued: not a field\n"
    )
    assert dpkg_status(root) == {"libyaml-dev": "0.2.5-1", "libpq-dev": "15.8-0+deb12u1"}
    info = discover(root)
    assert info.origin == "dpkg"
    assert missing_libraries(info, {"psycopg2 2.9": ["libpq-dev"], "x 1": ["libffi-dev"]}) == {
        "libffi-dev": ["x 1"]
    }


def test_a_directory_without_cpython_is_refused_naming_what_is_missing(
    tmp_path: Path, mirror: Path
) -> None:
    debs = fake_debs(mirror)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SysrootError, match="not a sysroot") as error:
        read_sysroot(empty)
    message = str(error.value)
    for what in ("_sysconfigdata_*.py", "Python.h", "libpython", "docs/cross.md"):
        assert what in message, message
    # The interpreter and its stdlib, but not the -dev package: the headers are named.
    partial = tmp_path / "partial"
    for name in ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib"):
        unpack_by_hand(debs[name], partial)
    with pytest.raises(SysrootError, match="not a sysroot") as error:
        read_sysroot(partial, python="3.11")
    message = str(error.value)
    assert "Python.h" in message and "libpython3.11-dev" in message, message
    assert "_sysconfigdata" not in message.split("Missing:")[1], message
    # The right CPython for another version: the error says which one is there.
    for deb in debs.values():
        unpack_by_hand(deb, partial)
    with pytest.raises(SysrootError, match=r"holds CPython 3\.11, not 3\.12"):
        read_sysroot(partial, python="3.12")
    with pytest.raises(SysrootError, match="does not exist"):
        read_sysroot(tmp_path / "nowhere")
    # A module that is not a sysconfigdata module is not executed, only refused.
    module = partial / "usr/lib/python3.11/_sysconfigdata__aarch64-linux-gnu.py"
    module.unlink()
    module.write_text("import os; os.system('touch pwned')\n")
    with pytest.raises(SysrootError, match="no build_time_vars"):
        read_sysroot(partial)
    assert not Path("pwned").exists()


def test_make_sysroot_will_not_replace_a_sysroot_it_did_not_make(
    tmp_path: Path, mirror: Path
) -> None:
    root = tmp_path / "by-hand"
    for deb in fake_debs(mirror).values():
        unpack_by_hand(deb, root)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with pytest.raises(SysrootError, match="did not make"):
        make_sysroot(root, mirror=mirror.as_uri(), keyring=None)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_a_stale_marker_is_only_a_cache(tmp_path: Path, mirror: Path) -> None:
    dest = tmp_path / "made"
    made = make_sysroot(dest, mirror=mirror.as_uri(), keyring=None)
    assert read_marker(dest) == made == read_sysroot(dest)
    # The tree changed under the marker: the facts are read from the tree again.
    (dest / "usr/lib/python3.11").rename(dest / "usr/lib/python3.12")
    for path in (dest / "usr/lib/python3.12").iterdir():
        if path.is_symlink():
            continue
        path.write_bytes(path.read_bytes().replace(b"311", b"312"))
    (dest / "usr/include/python3.11").rename(dest / "usr/include/python3.12")
    (dest / "usr/lib/aarch64-linux-gnu/libpython3.12.so").symlink_to("libpython3.11.so.1.0")
    info = read_sysroot(dest)
    assert info.python == "3.12" and info.ext_suffix == ".cpython-312-aarch64-linux-gnu.so"
    assert info.origin == "files"


# --------------------------------------------------------------------------- real packages

EXTENSION = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static PyObject *width(PyObject *self, PyObject *args) {
    return PyLong_FromLong((long)(8 * sizeof(void *)));
}
static PyMethodDef methods[] = {{"width", width, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "bits", NULL, -1, methods};
PyMODINIT_FUNC PyInit_bits(void) { return PyModule_Create(&module); }
"""

#: (environment variable, Debian arch, compiler, qemu, ELF e_machine, pointer width)
REAL = [
    ("MONOREPO_TEST_SYSROOT", "arm64", "aarch64-linux-gnu-gcc", "qemu-aarch64", 183, 64),
    ("MONOREPO_TEST_SYSROOT_ARMHF", "armhf", "arm-linux-gnueabihf-gcc", "qemu-arm", 40, 32),
]


@pytest.mark.parametrize(
    ("variable", "arch", "cc", "qemu", "e_machine", "width"),
    [pytest.param(*r, id=r[1]) for r in REAL],
)
def test_real_debian_packages_unpacked_by_hand_build_an_extension_that_imports(
    tmp_path: Path, variable: str, arch: str, cc: str, qemu: str, e_machine: int, width: int
) -> None:
    if not (os.environ.get(variable) and shutil.which(cc) and shutil.which(qemu)):
        pytest.skip(f"needs {cc}, {qemu} and {variable} (see .ci/run)")
    made = read_sysroot(Path(os.environ[variable]))
    assert made.arch == arch
    # The same packages, fetched again (from the user's cache where .ci/run put them).
    debs = download_debs(
        sorted(made.packages),
        arch=arch,
        suite=made.suite,
        cache_dir=CacheDir.from_env({}).root,
    )
    root = tmp_path / "by-hand"
    for deb in debs.values():
        unpack_by_hand(deb, root)
    info = read_sysroot(root, python=made.python)
    assert info.origin == "files"
    # Debian's libz.so, libm.so, ... point at /lib/...: the linker would leave the tree.
    assert "absolute library links" in info.notes[0]
    for key in ("arch", "triplet", "machine", "python", "ext_suffix", "soabi", "host_platform"):
        assert getattr(info, key) == getattr(made, key), key
    (tmp_path / "bits.c").write_text(EXTENSION)
    out = tmp_path / f"bits{info.ext_suffix}"
    env = info.cross_env()
    compile_ = subprocess.run(
        [
            *env["CC"].split(),
            "-shared",
            *env["CFLAGS"].split(),
            "-o",
            str(out),
            str(tmp_path / "bits.c"),
            *env["LDFLAGS"].split(),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compile_.returncode == 0, compile_.stderr
    assert int.from_bytes(out.read_bytes()[18:20], "little") == e_machine
    run = subprocess.run(
        [
            qemu,
            "-L",
            str(root),
            str(info.interpreter_path),
            "-c",
            f"import sys, sysconfig; sys.path.insert(0, {str(tmp_path)!r}); import bits;"
            " print(bits.width(), sysconfig.get_platform())",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(width), info.host_platform]
