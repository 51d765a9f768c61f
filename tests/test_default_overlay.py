"""The default overlay shipped in overlays/: every rule parses, has a reason, and takes effect."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.version import Version

import monorepo
from fixtures.builder import FixtureIndex, Release
from fixtures.server import IndexServer
from monorepo.overlays.loading import DEFAULT_SPEC, default_overlay_dir, load_project_overlays
from tests.helpers import current_cache

TARGET = '{ name = "linux", python = "3.11", platform = "linux", machine = "x86_64" }'


def test_every_default_rule_has_a_reason(tmp_path: Path) -> None:
    overlays = load_project_overlays([], base=tmp_path, cache=current_cache())
    (default,) = overlays.overlays
    assert default.spec == DEFAULT_SPEC
    assert default.root == default_overlay_dir()
    assert default.rules, "the default overlay ships rules"
    for rules in default.rules.values():
        for rule in rules:
            assert rule.reason.strip()


@pytest.mark.parametrize(
    ("name", "version", "env", "c_extension"),
    [
        ("pyyaml", "6.0.3", {"PYYAML_FORCE_LIBYAML": "1"}, True),
        ("markupsafe", "3.0.3", {"CIBUILDWHEEL": "1"}, True),
        ("cython", "3.1.2", {"NO_CYTHON_COMPILE": "true"}, False),
    ],
)
def test_default_rules_reach_the_lock(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
    name: str,
    version: str,
    env: dict[str, str],
    c_extension: bool,
) -> None:
    # without the rule, the build would not be told to fail when the C extension
    # cannot be compiled: these lock fields are what `monorepo build` enforces
    server = serve(make_index([Release(name, version)]))
    proj = make_project(
        f'[project]\nname = "p"\nversion = "0"\ndependencies = ["{name}"]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}]\nbuild-dependencies = false\n'
    )
    monorepo.lock(proj)
    data = tomllib.loads((proj / "pylock.toml").read_text())
    tool = data["packages"][0]["tool"]["monorepo"]
    assert tool["overlay"]["name"] == "monorepo-default"
    assert tool["c-extension"] is c_extension
    assert tool["build-env"] == env
    assert any(
        o["name"] == "monorepo-default" for o in data["tool"]["monorepo"]["inputs"]["overlays"]
    )


def test_pyyaml_rule_declares_libyaml(tmp_path: Path) -> None:
    match = load_project_overlays([], base=tmp_path, cache=current_cache()).rule_for(
        "PyYAML", Version("6.0.3")
    )
    assert match is not None
    assert match.rule.system_libraries == {"debian": ("libyaml-dev",)}
    assert (
        load_project_overlays([], base=tmp_path, cache=current_cache()).rule_for(
            "pyyaml", Version("5.0")
        )
        is None
    )


def test_project_overlay_can_switch_a_default_rule_off(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    (mine / "packages" / "pyyaml").mkdir(parents=True)
    (mine / "overlay.toml").write_text('[overlay]\nname = "mine"\nformat = 1\n')
    (mine / "packages" / "pyyaml" / "overlay.toml").write_text("# no fixes wanted\n")
    assert (
        load_project_overlays(["mine"], base=tmp_path, cache=current_cache()).rule_for(
            "pyyaml", Version("6.0.3")
        )
        is None
    )
