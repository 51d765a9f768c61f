"""``python -m monorepo.sysroot DEST --lock pylock.toml --target NAME``.

A real lock (``monorepo.lock`` against a loopback index, overlay rules naming
``system-libraries``) feeds the Debian sysroot made from the file:// mirror of
``tests/test_sysroot.py``; re-running with or without ``--package`` keeps what earlier
runs installed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

import monorepo
from fixtures.builder import FixtureIndex, Release
from fixtures.server import IndexServer
from monorepo.sysroot.__main__ import main
from monorepo.sysroot.discover import read_sysroot
from monorepo.sysroot.info import TOML_NAME
from monorepo.sysroot.libs import arch_for_machine, locked_system_libraries
from tests.helpers import write_overlay
from tests.test_sysroot import make_mirror

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
        'targets = [{ name = "board", python = "3.11", platform = "linux", machine = "aarch64" },'
        ' { name = "pc", python = "3.11", platform = "linux", machine = "x86_64" }]\n'
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
