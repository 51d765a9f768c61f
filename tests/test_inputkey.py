"""The input key of a build: deterministic, order-free, sensitive to every input."""

from __future__ import annotations

import dataclasses
import tomllib
from typing import Any

import pytest
import tomlkit

from monorepo.building.inputkey import (
    SCHEMA,
    InputKey,
    TargetIdentity,
    ToolchainIdentity,
    sysroot_identity,
)
from monorepo.errors import BuildError

TARGET = TargetIdentity(name="linux", python="3.12", platform="linux", machine="x86_64")
WHEEL_A = "a" * 64
WHEEL_B = "b" * 64


def make(**overrides: Any) -> InputKey:
    values: dict[str, Any] = {
        "package": "pyyaml",
        "version": "6.0.2",
        "source_tree": "sha256:" + "1" * 64,
        "target": TARGET,
        "toolchain": ToolchainIdentity.from_version_output("/usr/bin/cc", "gcc 13.2\n"),
        "sysroot": None,
        "build_wheels": {"setuptools-75.0-py3-none-any.whl": WHEEL_A, "cython-3.0.whl": WHEEL_B},
        "config_settings": {"--build-option": ["--with-libyaml", "-j1"], "editable": "no"},
        "build_env": {"B": "2", "A": "1"},
    }
    values.update(overrides)
    return InputKey.create(**values)


def test_digest_is_stable_and_order_free() -> None:
    one = make()
    two = make(
        build_wheels=[("cython-3.0.whl", WHEEL_B), ("setuptools-75.0-py3-none-any.whl", WHEEL_A)],
        config_settings={"editable": "no", "--build-option": ["--with-libyaml", "-j1"]},
        build_env={"A": "1", "B": "2"},
    )
    assert one == two
    assert one.digest() == two.digest()
    assert len(one.digest()) == 64
    assert one.build_wheels[0][0] == "cython-3.0.whl"


@pytest.mark.parametrize(
    "change",
    [
        {"package": "markupsafe"},
        {"version": "6.0.1"},
        {"source_tree": "sha256:" + "2" * 64},
        {"target": dataclasses.replace(TARGET, machine="aarch64")},
        {"target": dataclasses.replace(TARGET, python="3.13")},
        {"toolchain": None},
        {"toolchain": ToolchainIdentity.from_version_output("/usr/bin/cc", "gcc 14.1\n")},
        {"toolchain": ToolchainIdentity.from_version_output("/opt/cc", "gcc 13.2\n")},
        {"sysroot": sysroot_identity("[sysroot]\narch = 'arm64'\n")},
        {"build_wheels": {"setuptools-75.0-py3-none-any.whl": WHEEL_B}},
        {"config_settings": {"--build-option": ["-j1", "--with-libyaml"], "editable": "no"}},
        {"config_settings": {}},
        {"build_env": {"A": "1", "B": "3"}},
    ],
)
def test_every_input_changes_the_digest(change: dict[str, Any]) -> None:
    base, other = make(), make(**change)
    assert base.digest() != other.digest()
    assert base.differences(other)
    assert set(base.differences(other)) <= set(base.as_dict())


def test_differences_name_the_changed_inputs() -> None:
    other = make(build_env={"A": "1"}, sysroot="f" * 64)
    assert make().differences(other) == ["build-env", "sysroot"]
    assert make().differences(make()) == []


def test_toolchain_identity_ignores_line_endings() -> None:
    unix = ToolchainIdentity.from_version_output("cc", "gcc 13.2\nCopyright\n")
    dos = ToolchainIdentity.from_version_output("cc", b"gcc 13.2\r\nCopyright  \r\n\r\n")
    assert unix == dos
    assert unix != ToolchainIdentity.from_version_output("cc", "gcc 13.3\nCopyright\n")


def test_sysroot_identity_of_facts_ignores_key_order() -> None:
    assert sysroot_identity({"a": 1, "b": [1, 2]}) == sysroot_identity({"b": [1, 2], "a": 1})
    assert sysroot_identity({"a": 1}) != sysroot_identity({"a": 2})
    assert sysroot_identity("x") == sysroot_identity(b"x")


def test_toml_table_round_trips_and_renders_the_same() -> None:
    key = make(sysroot="e" * 64)
    doc = tomlkit.document()
    doc.add("key", key.to_toml_table())
    text = tomlkit.dumps(doc)
    again = tomlkit.document()
    again.add("key", make(sysroot="e" * 64).to_toml_table())
    assert tomlkit.dumps(again) == text
    parsed = tomllib.loads(text)["key"]
    assert parsed["digest"] == key.digest()
    assert parsed["schema"] == SCHEMA
    assert InputKey.from_toml_table(parsed) == key
    assert InputKey.from_toml_table(tomlkit.parse(text)["key"]) == key


def test_toml_table_without_toolchain_or_sysroot() -> None:
    key = make(toolchain=None, sysroot=None, config_settings=None, build_env=None)
    doc = tomlkit.document()
    doc.add("key", key.to_toml_table())
    parsed = tomllib.loads(tomlkit.dumps(doc))["key"]
    assert "toolchain" not in parsed and "sysroot" not in parsed
    assert InputKey.from_toml_table(parsed) == key


def test_edited_record_is_caught() -> None:
    doc = tomlkit.document()
    doc.add("key", make().to_toml_table())
    parsed = tomllib.loads(tomlkit.dumps(doc))["key"]
    parsed["build-env"]["A"] = "changed"
    with pytest.raises(BuildError, match="edited or damaged"):
        InputKey.from_toml_table(parsed, where="duni-build/linux/build.toml")
    del parsed["target"]
    with pytest.raises(BuildError, match="malformed"):
        InputKey.from_toml_table(parsed)


def test_bad_wheel_digests_are_refused() -> None:
    with pytest.raises(BuildError, match="no sha256"):
        make(build_wheels={"x.whl": "md5:abc"})
    with pytest.raises(BuildError, match="two digests"):
        make(build_wheels=[("x.whl", WHEEL_A), ("x.whl", WHEEL_B)])
    assert make(build_wheels={"x.whl": "sha256:" + WHEEL_A.upper()}).build_wheels == (
        ("x.whl", WHEEL_A),
    )
    with pytest.raises(BuildError, match="no source tree"):
        make(source_tree="")
