"""Targets: marker environments must describe the target, never the host."""

from __future__ import annotations

import platform
import sys

import pytest
from packaging.markers import Marker, default_environment

from monorepo.errors import ConfigError
from monorepo.project.targets import Target, host_target, parse_target

WHERE = "pyproject.toml: [tool.monorepo] targets[0]"

LINUX = Target(name="linux-aarch64", python="3.11", platform="linux", machine="aarch64")
DARWIN = Target(name="mac", python="3.12.3", platform="darwin", machine="arm64")
WINDOWS = Target(name="win", python="3.10", platform="windows", machine="AMD64")


def test_marker_environment_has_every_pep508_variable() -> None:
    env = LINUX.marker_environment()
    assert set(env) == set(default_environment())


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (LINUX, ("posix", "linux", "Linux")),
        (DARWIN, ("posix", "darwin", "Darwin")),
        (WINDOWS, ("nt", "win32", "Windows")),
    ],
)
def test_marker_environment_platform_variables(
    target: Target, expected: tuple[str, str, str]
) -> None:
    env = target.marker_environment()
    assert (env["os_name"], env["sys_platform"], env["platform_system"]) == expected
    assert env["platform_machine"] == target.machine
    assert env["platform_release"] == ""
    assert env["platform_version"] == ""
    assert env["implementation_name"] == "cpython"
    assert env["platform_python_implementation"] == "CPython"


def test_python_versions_major_minor_gets_patch_zero() -> None:
    env = LINUX.marker_environment()
    assert env["python_version"] == "3.11"
    assert env["python_full_version"] == "3.11.0"
    assert env["implementation_version"] == "3.11.0"


def test_python_versions_full_version_kept() -> None:
    env = DARWIN.marker_environment()
    assert env["python_version"] == "3.12"
    assert env["python_full_version"] == "3.12.3"


@pytest.mark.parametrize(
    ("marker", "linux", "darwin", "windows"),
    [
        ('sys_platform == "win32"', False, False, True),
        ('sys_platform == "linux"', True, False, False),
        ('platform_system == "Darwin"', False, True, False),
        ('os_name == "nt"', False, False, True),
        ('platform_machine == "aarch64"', True, False, False),
        ('python_version >= "3.11"', True, True, False),
        ('python_full_version < "3.12.1"', True, False, True),
        ('implementation_name == "cpython"', True, True, True),
        ('platform_release == "6.1.0"', False, False, False),
    ],
)
def test_markers_evaluate_per_target(marker: str, linux: bool, darwin: bool, windows: bool) -> None:
    m = Marker(marker)
    assert m.evaluate(LINUX.marker_environment()) is linux
    assert m.evaluate(DARWIN.marker_environment()) is darwin
    assert m.evaluate(WINDOWS.marker_environment()) is windows


def test_marker_environment_ignores_host() -> None:
    # A Windows target on any host must not see the host's platform.
    other = "linux" if sys.platform == "win32" else "win32"
    target = WINDOWS if other == "win32" else LINUX
    assert Marker(f'sys_platform == "{other}"').evaluate(target.marker_environment())


def test_pypy_implementation() -> None:
    t = parse_target(
        {
            "name": "pp",
            "python": "3.10",
            "platform": "linux",
            "machine": "x86_64",
            "implementation": "pypy",
        },
        where=WHERE,
    )
    env = t.marker_environment()
    assert env["implementation_name"] == "pypy"
    assert env["platform_python_implementation"] == "PyPy"


def test_canonical_is_identity_fields_only() -> None:
    t = Target(
        name="a",
        python="3.11",
        platform="linux",
        machine="aarch64",
        cc="aarch64-linux-gnu-gcc",
        sysroot="/sys",
        runner="qemu-aarch64 -L {sysroot}",
    )
    assert t.canonical() == {
        "name": "a",
        "python": "3.11",
        "platform": "linux",
        "machine": "aarch64",
        "implementation": "cpython",
    }


def test_host_target_describes_running_interpreter() -> None:
    t = host_target()
    assert t.python == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert t.machine == platform.machine()
    assert t.name == f"{t.platform}-{t.machine}"
    # the host's own markers agree with the host target's
    env = t.marker_environment()
    host = default_environment()
    for key in ("sys_platform", "os_name", "platform_system", "platform_machine", "python_version"):
        assert env[key] == host[key], key


def test_parse_target_full() -> None:
    t = parse_target(
        {
            "name": "linux-aarch64",
            "python": "3.11.4",
            "platform": "linux",
            "machine": "aarch64",
            "cc": "aarch64-linux-gnu-gcc",
            "sysroot": "/opt/sysroot",
            "runner": "qemu-aarch64 -L {sysroot}",
        },
        where=WHERE,
    )
    assert t == Target(
        name="linux-aarch64",
        python="3.11.4",
        platform="linux",
        machine="aarch64",
        implementation="cpython",
        cc="aarch64-linux-gnu-gcc",
        sysroot="/opt/sysroot",
        runner="qemu-aarch64 -L {sysroot}",
    )


BASE = {"name": "t", "python": "3.11", "platform": "linux", "machine": "x86_64"}


@pytest.mark.parametrize(
    ("table", "fragments"),
    [
        ({**BASE, "platfrom": "linux"}, ["'platfrom'", "Did you mean 'platform'"]),
        ({"name": "t", "python": "3.11"}, ["'platform'", "'machine'", "missing"]),
        ({**BASE, "python": 3.11}, ["'python'", "string", "number"]),
        ({**BASE, "python": "three"}, ["'three'", "3.11"]),
        ({**BASE, "python": "2.7"}, ["'2.7'"]),
        ({**BASE, "platform": "Linux"}, ["'Linux'", "'linux'", "'darwin'", "'windows'"]),
        ({**BASE, "platform": "freebsd"}, ["'freebsd'", "'linux', 'darwin', 'windows'"]),
        ({**BASE, "implementation": "jython"}, ["'jython'", "'cpython'"]),
        ({**BASE, "name": "a b"}, ["'a b'", "letters"]),
        ({**BASE, "machine": ""}, ["'machine'", "non-empty"]),
        ({**BASE, "runner": "qemu {root}", "sysroot": "/s"}, ["{root}", "{sysroot}"]),
        ({**BASE, "runner": "qemu -L {sysroot}"}, ["'sysroot'", "{sysroot}"]),
        ({**BASE, "runner": "qemu {"}, ["runner", "braces"]),
    ],
)
def test_parse_target_errors(table: dict[str, object], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_target(table, where=WHERE)
    message = str(info.value)
    assert message.startswith(WHERE)
    for fragment in fragments:
        assert fragment in message


def test_parse_target_not_a_table() -> None:
    with pytest.raises(ConfigError, match=r"targets\[0\]: expected a table"):
        parse_target("linux-x86_64", where=WHERE)
