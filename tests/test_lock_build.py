"""The sources pass of `monorepo lock`: tree hashes and the locked build-dependency closure."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from packaging.pylock import Pylock
from packaging.tags import Tag

import monorepo
from fixtures.builder import FixtureIndex, Release
from fixtures.server import IndexServer
from monorepo.errors import OverlayError
from monorepo.targets import host_target
from tests.test_lock_overlays import write_overlay

TARGET = '{ name = "linux", python = "3.11", platform = "linux", machine = "x86_64" }'

RELEASES = [
    # app is built by backend-a, which is itself built by backend-b (a backend needing a backend)
    Release("app", "1.0", requires_dist=("lib",), build_requires=("backend-a>=1",)),
    Release("lib", "1.0"),
    Release("backend-a", "1.0", requires_dist=("support",), build_requires=("backend-b",)),
    Release("backend-b", "2.0"),
    Release("support", "1.0"),
]


@pytest.fixture
def setup(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
) -> Callable[..., Path]:
    def factory(releases: list[Release], deps: list[str], tool: str = "") -> Path:
        server = serve(make_index(releases))
        deps_toml = ", ".join(f'"{d}"' for d in deps)
        return make_project(
            f'[project]\nname = "p"\nversion = "0"\ndependencies = [{deps_toml}]\n'
            f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}]\n{tool}\n'
        )

    return factory


def load(proj: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    data = tomllib.loads((proj / "pylock.toml").read_text())
    Pylock.from_dict(data)
    return data, {p["name"]: p for p in data["packages"]}


def test_build_closure_is_locked_recursively(setup: Any) -> None:
    proj = setup(RELEASES, ["app"])
    monorepo.lock(proj)
    data, pkgs = load(proj)
    assert set(pkgs) == {"app", "lib", "backend-a", "backend-b", "support"}
    roles = {n: p["tool"]["monorepo"]["role"] for n, p in pkgs.items()}
    assert roles == {
        "app": "runtime",
        "lib": "runtime",
        "backend-a": "build",
        "backend-b": "build",
        "support": "build",
    }
    for name in ("backend-a", "backend-b", "support"):
        assert pkgs[name]["marker"] == "'build' in dependency_groups"
    assert "build" in data["dependency-groups"]
    assert data["default-groups"] == []
    for p in pkgs.values():
        assert p["tool"]["monorepo"]["tree-hash"].startswith("sha256:")
    assert pkgs["app"]["tool"]["monorepo"]["build-requires"] == ["backend-a>=1"]
    assert pkgs["backend-a"]["tool"]["monorepo"]["build-requires"] == ["backend-b"]
    assert pkgs["app"]["tool"]["monorepo"]["build-backend"] == "fixture_backend"
    # a PEP 751 installer skips the build-only packages unless asked for the group
    lock = Pylock.from_dict(data)
    env = host_target().marker_environment()
    tags = [Tag("py3", "none", "any")]
    assert {p.name for p, _ in lock.select(environment=env, tags=tags)} == {"app", "lib"}
    everything = {
        p.name for p, _ in lock.select(environment=env, tags=tags, dependency_groups=["build"])
    }
    assert everything == set(pkgs)


def test_build_dependencies_false_locks_runtime_only(setup: Any) -> None:
    proj = setup(RELEASES, ["app"], "build-dependencies = false")
    monorepo.lock(proj)
    _, pkgs = load(proj)
    assert set(pkgs) == {"app", "lib"}
    assert "tree-hash" not in pkgs["app"]["tool"]["monorepo"]


def test_overlay_build_requires_replaces_the_sdists(setup: Any) -> None:
    proj = setup(RELEASES, ["app"], 'overlays = ["fixes"]')
    write_overlay(
        proj / "fixes",
        "fixes",
        {
            "app": '[[rule]]\nversions = ""\nreason = "use b directly"\nbuild-requires = ["backend-b"]\n'
        },
    )
    monorepo.lock(proj)
    _, pkgs = load(proj)
    assert set(pkgs) == {"app", "lib", "backend-b"}
    assert pkgs["app"]["tool"]["monorepo"]["build-requires"] == ["backend-b"]


PATCH = b"""diff --git a/lib/__init__.py b/lib/__init__.py
--- a/lib/__init__.py
+++ b/lib/__init__.py
@@ -1,3 +1,4 @@
 \"\"\"Fixture package lib.\"\"\"
\x20
 __version__ = '1.0'
+PATCHED = True
"""


def test_patch_changes_the_tree_hash_and_broken_patch_fails(setup: Any) -> None:
    proj = setup(RELEASES, ["lib"])
    monorepo.lock(proj)
    plain = load(proj)[1]["lib"]["tool"]["monorepo"]["tree-hash"]
    proj2 = setup(RELEASES, ["lib"], 'overlays = ["fixes"]')
    rule = '[[rule]]\nversions = ""\nreason = "mark it"\npatches = ["patches/0001-mark.patch"]\n'
    write_overlay(
        proj2 / "fixes", "fixes", {"lib": rule}, {"packages/lib/patches/0001-mark.patch": PATCH}
    )
    monorepo.lock(proj2)
    patched = load(proj2)[1]["lib"]["tool"]["monorepo"]["tree-hash"]
    assert patched != plain
    before = (proj2 / "pylock.toml").read_bytes()
    (proj2 / "fixes/packages/lib/patches/0001-mark.patch").write_bytes(
        PATCH.replace(b" __version__ = '1.0'", b" __version__ = '9.9'")
    )
    with pytest.raises(OverlayError, match=r"(?s)lib.*0001-mark\.patch.*lib/__init__\.py"):
        monorepo.lock(proj2)
    assert (proj2 / "pylock.toml").read_bytes() == before


@pytest.mark.parametrize("build", [True, False])
def test_a_plain_html_index_locks_verifies_and_pulls(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
    build: bool,
) -> None:
    """PEP 503 HTML pages give no size: the sources pass records the download's, and a lock
    without one (build-dependencies = false, nothing downloaded) is still complete."""
    index = make_index(RELEASES)
    server = serve(index, formats=("html",))
    proj = make_project(
        f'[project]\nname = "p"\nversion = "0"\ndependencies = ["app"]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}]\n'
        f"build-dependencies = {'true' if build else 'false'}\n"
    )
    monorepo.lock(proj)
    _, pkgs = load(proj)
    for name, pkg in pkgs.items():
        size = pkg["sdist"].get("size")
        if build:
            assert size == index.entries[pkg["sdist"]["name"]].size, name
        else:
            assert size is None, name
    report = monorepo.verify(proj)
    checks = {c.name: c for c in report.checks}
    assert checks["lock"].passed, checks["lock"].items
    monorepo.pull(proj)
    report = monorepo.verify(proj, remote=True)
    assert report.passed, [str(i) for c in report.checks for i in c.items]
