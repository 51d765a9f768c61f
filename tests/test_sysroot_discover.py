"""Sysroots monorepo did not make: facts discovered from the CPython a tree holds.

These tests unpack the .debs of the file:// mirror of ``tests/test_sysroot.py`` by hand
(``dpkg-deb -x``, as a user would; the .deb's own data tar otherwise), so the tree keeps
Debian's layout: no ``/usr`` merge, absolute symlinks, no marker; and lay out CPython as
Yocto and Buildroot do.  ``tests/test_sysroot_build.py`` does the same with the real
bookworm packages and builds against them under qemu.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from monorepo._core.paths import CacheDir
from monorepo.sysroot.deb import deb_data_member, decompress_member
from monorepo.sysroot.discover import discover, dpkg_status, facts_text, read_sysroot
from monorepo.sysroot.info import TOML_NAME, SysrootError, read_marker
from monorepo.sysroot.libs import missing_libraries
from monorepo.sysroot.make import make_sysroot
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
    # An absolute link to the module is the tree's path, never the build machine's.
    link = root / "usr/lib/python3.11/_sysconfigdata__linux_aarch64-linux-gnu.py"
    link.unlink()
    link.symlink_to("/usr/lib/python3.11/_sysconfigdata__aarch64-linux-gnu.py")
    assert read_sysroot(root) == info
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
    # Hostile modules: nested past the parser's limits, or huge.
    module.write_text("build_time_vars = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(SysrootError, match="cannot be read"):
        read_sysroot(partial)
    module.write_text("build_time_vars = {}\n#" + "x" * (5 * 1024 * 1024) + "\n")
    with pytest.raises(SysrootError, match="it is not one"):
        read_sysroot(partial)


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


def test_a_sysroots_identity_follows_its_facts(tmp_path: Path, mirror: Path) -> None:
    made = make_sysroot(tmp_path / "made", mirror=mirror.as_uri(), keyring=None)
    assert facts_text(made) == (made.root / TOML_NAME).read_text()
    root = tmp_path / "by-hand"
    debs = fake_debs(mirror)
    for deb in debs.values():
        unpack_by_hand(deb, root)
    first = facts_text(read_sysroot(root))
    assert str(CacheDir.at(None).root) not in first  # no machine-specific path
    assert facts_text(read_sysroot(root)) == first
    # A library added by hand is a new sysroot for the build's input key.
    unpack_by_hand(next(mirror.glob("pool/main/*/libffi-dev/*.deb")), root)
    assert facts_text(read_sysroot(root)) != first


# ------------------------------------------------------- other layouts: Yocto, Buildroot


def cpython_tree(root: Path, python: str, variables: dict[str, str], libdir: str) -> None:
    """The files of a CPython as an SDK installs them: sysconfigdata, headers, libpython."""
    stdlib = root / "usr/lib" / f"python{python}"
    stdlib.mkdir(parents=True, exist_ok=True)
    name = f"_sysconfigdata__linux_{variables['MULTIARCH']}.py"
    (stdlib / name).write_text(f"build_time_vars = {variables!r}\n")
    (root / f"usr/include/python{python}").mkdir(parents=True, exist_ok=True)
    (root / f"usr/include/python{python}/Python.h").write_text("/* */\n")
    (root / libdir).mkdir(parents=True, exist_ok=True)
    (root / libdir / f"libpython{python}.so.1.0").write_bytes(b"\x7fELF")
    (root / libdir / f"libpython{python}.so").symlink_to(f"libpython{python}.so.1.0")


def _vars(python: str, multiarch: str, host: str, libdir: str) -> dict[str, str]:
    tag = python.replace(".", "")
    return {
        "VERSION": python,
        "MULTIARCH": multiarch,
        "HOST_GNU_TYPE": host,
        "MACHDEP": "linux",
        "ABIFLAGS": "",
        "EXT_SUFFIX": f".cpython-{tag}-{multiarch}.so",
        "SOABI": f"cpython-{tag}-{multiarch}",
        "INCLUDEPY": f"/usr/include/python{python}",
        "LIBDIR": f"/{libdir}",
        "LDLIBRARY": f"libpython{python}.so",
        "BINDIR": "/usr/bin",
    }


def test_a_yocto_like_sysroot(tmp_path: Path) -> None:
    root = tmp_path / "cortexa72-poky-linux"
    cpython_tree(
        root, "3.12", _vars("3.12", "aarch64-linux-gnu", "aarch64-poky-linux", "usr/lib"), "usr/lib"
    )
    (root / "usr/lib/pkgconfig").mkdir()
    (root / "usr/lib/pkgconfig/libffi.pc").write_text("Name: libffi\n")
    info = read_sysroot(root, python="3.12")
    assert (info.arch, info.machine, info.triplet) == ("arm64", "aarch64", "aarch64-linux-gnu")
    assert info.lib_dirs == ("usr/lib",)
    assert info.include_dirs == ("usr/include/python3.12", "usr/include")
    assert info.ext_suffix == ".cpython-312-aarch64-linux-gnu.so"
    assert info.notes == ()
    wanted = {"cffi 1.17": ["libffi-dev"], "pyyaml 6.0": ["libyaml-dev"]}
    assert missing_libraries(info, wanted) == {"libyaml-dev": ["pyyaml 6.0"]}


def test_a_buildroot_like_armhf_sysroot_and_one_with_two_pythons(tmp_path: Path) -> None:
    root = tmp_path / "staging"
    host = "arm-buildroot-linux-gnueabihf"
    cpython_tree(root, "3.11", _vars("3.11", "arm-linux-gnueabihf", host, "usr/lib"), "usr/lib")
    info = read_sysroot(root)
    assert (info.arch, info.machine, info.host_platform) == ("armhf", "armv7l", "linux-armv7l")
    assert info.qemu == "qemu-arm"
    cpython_tree(root, "3.12", _vars("3.12", "arm-linux-gnueabihf", host, "usr/lib"), "usr/lib")
    with pytest.raises(SysrootError, match=r"holds CPython 3\.11, 3\.12: say which"):
        read_sysroot(root)
    assert read_sysroot(root, python="3.12").soabi == "cpython-312-arm-linux-gnueabihf"
    # Without MULTIARCH, the GNU type names the machine.
    other = tmp_path / "riscv"
    variables = _vars("3.11", "riscv64-linux-gnu", "riscv64-buildroot-linux-gnu", "usr/lib")
    cpython_tree(other, "3.11", variables, "usr/lib")
    module = other / "usr/lib/python3.11/_sysconfigdata__linux_riscv64-linux-gnu.py"
    module.write_text(f"build_time_vars = {dict(variables, MULTIARCH='')!r}\n")
    assert read_sysroot(other).triplet == "riscv64-buildroot-linux-gnu"
    assert read_sysroot(other).arch == "riscv64"
