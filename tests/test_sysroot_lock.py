"""``python -m monorepo.sysroot DEST --lock pylock.toml --target NAME``, and the check
that a build's system libraries are there before anything is built.

A real lock (``monorepo.lock`` against a loopback index, overlay rules naming
``system-libraries``) feeds the Debian sysroot made from the file:// mirror of
``tests/test_sysroot.py``; re-running with or without ``--package`` keeps what earlier
runs installed.  ``monorepo build`` for the aarch64 target refuses to start while the
sysroot -- ours, or Debian packages unpacked by hand -- lacks a library, naming it, its
package and the command that adds it.
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

import monorepo
from fixtures.builder import FixtureIndex, Release
from fixtures.server import IndexServer
from monorepo.building.syslibs import check_libraries
from monorepo.building.targets import target_sysroot
from monorepo.errors import BuildError
from monorepo.project.targets import Target, host_target
from monorepo.sysroot.__main__ import main
from monorepo.sysroot.discover import read_sysroot
from monorepo.sysroot.info import TOML_NAME
from monorepo.sysroot.libs import arch_for_machine, locked_system_libraries
from monorepo.sysroot.make import make_sysroot
from tests.helpers import write_overlay
from tests.test_sysroot import make_mirror
from tests.test_sysroot_discover import fake_debs, unpack_by_hand

RULES = {
    "yamlish": """
        [[rule]]
        versions = ">=1"
        reason = "its extension links libyaml"
        system-libraries = { debian = ["libyaml-dev"], fedora = ["libyaml-devel"] }
    """,
    "ffish": """
        [[rule]]
        versions = ">=1"
        reason = "its extension links libffi"
        system-libraries = { debian = ["libffi-dev"] }
    """,
    "pgish": """
        [[rule]]
        versions = ">=1"
        reason = "its extension links libpq"
        system-libraries = { debian = ["libpq-dev"] }
    """,
}


@pytest.fixture
def locked(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
    tmp_path: Path,
) -> Path:
    """A project locked for an aarch64 and an x86_64 target; pgish is x86_64's only."""
    server = serve(
        make_index(
            [
                Release("yamlish", "1.0"),
                Release("ffish", "1.0"),
                Release("pgish", "2.0"),
                Release("plain", "1.0"),
            ]
        )
    )
    write_overlay(tmp_path / "proj" / "fixes", "fixes", RULES)
    proj = make_project(
        '[project]\nname = "p"\nversion = "0"\n'
        'dependencies = ["yamlish", "ffish", "plain",'
        " \"pgish; platform_machine == 'x86_64'\"]\n"
        f'[tool.monorepo]\nindex-url = "{server.url}"\noverlays = ["fixes"]\n'
        '[[tool.monorepo.targets]]\nname = "board"\npython = "3.11"\nplatform = "linux"\n'
        f'machine = "aarch64"\ncc = "aarch64-linux-gnu-gcc"\nsysroot = "{tmp_path / "sysroot"}"\n'
        "[[tool.monorepo.targets]]\n"
        'name = "pc"\npython = "3.11"\nplatform = "linux"\nmachine = "x86_64"\n'
    )
    monorepo.lock(proj)
    return proj / "pylock.toml"


def test_the_lock_names_each_targets_system_libraries(locked: Path) -> None:
    assert locked_system_libraries(locked, "board") == {
        "libffi-dev": ["ffish 1.0"],
        "libyaml-dev": ["yamlish 1.0"],
    }
    assert locked_system_libraries(locked, "pc")["libpq-dev"] == ["pgish 2.0"]
    assert locked_system_libraries(locked, "board", distribution="fedora") == {
        "libyaml-devel": ["yamlish 1.0"]
    }
    with pytest.raises(Exception, match=r"no target named 'nope' \(targets: board, pc\)"):
        locked_system_libraries(locked, "nope")


def test_lock_and_package_choices_accumulate(
    locked: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror = make_mirror(tmp_path / "mirror")
    dest = tmp_path / "sysroot"
    common = [str(dest), "--mirror", mirror, "-q"]
    assert main([*common, "--package", "media-types"]) == 0
    assert read_sysroot(dest).extra_packages == ("media-types",)
    # The lock's libraries for the board are added; the earlier --package stays.
    assert main([*common, "--lock", str(locked), "--target", "board"]) == 0
    info = read_sysroot(dest)
    assert info.extra_packages == ("libffi-dev", "libyaml-dev", "media-types")
    assert {"libffi-dev", "libffi8", "libyaml-dev", "media-types"} <= set(info.packages)
    assert "libpq-dev" not in info.packages  # the pc target's, not the board's
    marker = tomllib.loads((dest / TOML_NAME).read_text())
    assert marker["extra_packages"] == ["libffi-dev", "libyaml-dev", "media-types"]
    assert marker["arch"] == "arm64"  # from the board's machine, and DEST's
    # Again, with neither: nothing is dropped, nothing is downloaded.
    stamp = (dest / TOML_NAME).stat().st_mtime_ns
    assert main(common) == 0
    assert read_sysroot(dest).extra_packages == info.extra_packages
    assert (dest / TOML_NAME).stat().st_mtime_ns == stamp
    # The pc target's machine is not this mirror's arm64: the request says amd64.
    capsys.readouterr()
    assert main([*common, "--lock", str(locked), "--target", "pc"]) == 2
    assert "binary-amd64" in capsys.readouterr().err
    assert read_sysroot(dest).arch == "arm64"  # the failed run changed nothing


def test_target_without_lock_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["somewhere", "--target", "board"])
    assert "--target needs --lock" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("machine", "arch"),
    [("aarch64", "arm64"), ("armv7l", "armhf"), ("x86_64", "amd64"), ("i686", "i386")],
)
def test_machines_map_to_debian_architectures(machine: str, arch: str) -> None:
    assert arch_for_machine(machine) == arch


def test_one_error_names_every_missing_library_its_package_and_the_fix(
    locked: Path, tmp_path: Path
) -> None:
    if shutil.which("dpkg-query") is None:
        pytest.skip("needs dpkg-query (a Debian-like build machine)")
    debian = tmp_path / "os-release"
    debian.write_text("ID=debian\n")
    made = make_sysroot(tmp_path / "sysroot", mirror=make_mirror(tmp_path / "mirror"), keyring=None)
    host = {"a 1": {"debian": ["libc6", "libmonorepo-test-absent-dev"]}}
    cross = {"yamlish 1.0": {"debian": ["libyaml-dev"]}, "ffish 1.0": {"debian": ["libffi-dev"]}}
    with pytest.raises(BuildError) as error:
        check_libraries(host, made, cross, target="board", lock=locked, os_release=debian)
    message = str(error.value)
    assert "libmonorepo-test-absent-dev (for a 1)" in message
    assert "apt-get install -y libmonorepo-test-absent-dev\n" in message
    assert "libc6 " not in message  # installed on any Debian
    assert "lacks system packages the build needs: libffi-dev (for ffish 1.0)." in message
    assert f"python -m monorepo.sysroot {made.root} --lock {locked} --target board" in message
    # What the message says to run adds it, and then nothing is missing.
    assert (
        main(
            [
                str(made.root),
                "--lock",
                str(locked),
                "--target",
                "board",
                "-q",
                "--mirror",
                (tmp_path / "mirror").as_uri(),
            ]
        )
        == 0
    )
    check_libraries({}, read_sysroot(made.root), cross, target="board", lock=locked)


@pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-gcc") is None or host_target().python_version != "3.11",
    reason="needs aarch64-linux-gnu-gcc and a Python 3.11 build machine (the sysroot's)",
)
def test_build_refuses_to_start_without_the_sysroots_libraries(
    locked: Path, tmp_path: Path
) -> None:
    proj = locked.parent
    monorepo.pull(proj)
    root = tmp_path / "sysroot"  # the board's: Debian packages unpacked by hand
    make_mirror(tmp_path / "mirror")
    for deb in fake_debs(tmp_path / "mirror").values():
        unpack_by_hand(deb, root)
    with pytest.raises(BuildError) as error:
        monorepo.build(proj, target="board", isolate=False)
    message = str(error.value)
    assert "libffi-dev (for ffish 1.0)" in message, message
    assert "libyaml-dev" not in message  # its libyaml.so is in the tree
    assert "monorepo did not make this sysroot" in message and "dpkg-deb -x" in message
    assert "libffi-dev: libffi.so or libffi.pc" in message
    assert not (proj / "duni-build" / "board" / "wheels").exists()


def test_a_cross_target_without_sysroot_gets_the_command_for_its_architecture(
    tmp_path: Path,
) -> None:
    pi = Target(name="pi", python="3.11", platform="linux", machine="armv7l")
    with pytest.raises(BuildError) as error:
        target_sysroot(pi)
    assert "python -m monorepo.sysroot sysroots/armv7l --arch armhf --lock pylock.toml" in str(
        error.value
    )
    assert "--target pi" in str(error.value) and "your own" in str(error.value)
    # A sysroot that is not one: the error names what is missing.
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match=r"target pi: .* is not a sysroot: .*Python\.h"):
        target_sysroot(replace(pi, sysroot=str(tmp_path / "empty")))
