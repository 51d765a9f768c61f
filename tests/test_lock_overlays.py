"""Overlays change what `monorepo lock` locks, and the lock records which rule applied."""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pygit2
import pytest

import monorepo
from fixtures.builder import FixtureIndex, Release
from fixtures.server import IndexServer
from monorepo.errors import OverlayError
from tests.helpers import write_overlay

TARGET = '{ name = "linux", python = "3.11", platform = "linux", machine = "x86_64" }'


@pytest.fixture
def setup(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
) -> Callable[..., Path]:
    def factory(releases: list[Release], deps: list[str], overlays: list[str]) -> Path:
        server = serve(make_index(releases))
        deps_toml = ", ".join(f'"{d}"' for d in deps)
        ovl = ", ".join(f'"{o}"' for o in overlays)
        return make_project(
            f'[project]\nname = "p"\nversion = "0"\ndependencies = [{deps_toml}]\n'
            f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}]\noverlays = [{ovl}]\n'
            "build-dependencies = false\n"
        )

    return factory


def packages(proj: Path) -> dict[str, dict[str, Any]]:
    data = tomllib.loads((proj / "pylock.toml").read_text())
    return {p["name"]: p for p in data["packages"]}


RELEASES = [
    Release("app", "1.0", requires_dist=("oldlib", "lib")),
    Release("lib", "1.0"),
    Release("oldlib", "1.0"),
    Release("newlib", "1.0"),
]


def test_dependency_add_and_remove_change_what_is_locked(setup: Any) -> None:
    proj = setup(RELEASES, ["app"], ["fixes"])
    write_overlay(
        proj / "fixes",
        "fixes",
        {
            "app": '[[rule]]\nversions = ">=1"\nreason = "oldlib was renamed newlib"\n'
            'dependencies = { add = ["newlib>=1"], remove = ["oldlib"] }\n'
        },
    )
    monorepo.lock(proj)
    pkgs = packages(proj)
    assert set(pkgs) == {"app", "lib", "newlib"}
    assert pkgs["app"]["tool"]["monorepo"]["overlay"] == {
        "name": "fixes",
        "commit": pkgs["app"]["tool"]["monorepo"]["overlay"]["commit"],
        "rule": 0,
        "versions": ">=1",
        "reason": "oldlib was renamed newlib",
    }
    assert pkgs["app"]["tool"]["monorepo"]["overlay"]["commit"].startswith("sha256:")
    assert "overlay" not in pkgs["lib"]["tool"]["monorepo"]


def test_earlier_overlay_takes_precedence(setup: Any) -> None:
    proj = setup(RELEASES, ["app"], ["first", "second"])
    write_overlay(
        proj / "first",
        "first",
        {"app": '[[rule]]\nversions = ""\nreason = "first"\ndependencies = { remove = ["lib"] }\n'},
    )
    write_overlay(
        proj / "second",
        "second",
        {
            "app": '[[rule]]\nversions = ""\nreason = "second"\ndependencies = { remove = ["oldlib"] }\n'
        },
    )
    monorepo.lock(proj)
    pkgs = packages(proj)
    assert set(pkgs) == {"app", "oldlib"}
    assert pkgs["app"]["tool"]["monorepo"]["overlay"]["name"] == "first"


def test_patches_are_recorded_with_their_hash(setup: Any) -> None:
    proj = setup(RELEASES, ["lib"], ["fixes"])
    patch = b"--- a/x\n+++ b/x\n@@ -0,0 +1 @@\n+x\n"
    write_overlay(
        proj / "fixes",
        "fixes",
        {
            "lib": '[[rule]]\nversions = "==1.0"\nreason = "fix"\npatches = ["patches/0001-x.patch"]\nc-extension = true\n'
        },
        {"packages/lib/patches/0001-x.patch": patch},
    )
    monorepo.lock(proj)
    tool = packages(proj)["lib"]["tool"]["monorepo"]
    assert tool["patches"] == [
        {"path": "packages/lib/patches/0001-x.patch", "sha256": hashlib.sha256(patch).hexdigest()}
    ]
    assert tool["c-extension"] is True


def test_overlay_source_supplies_an_sdist_for_a_wheel_only_package(
    setup: Any, tmp_path: Path
) -> None:
    releases = [Release("binonly", "1.0", sdist=False)]
    proj = setup(releases, ["binonly"], ["fixes"])
    write_overlay(proj / "fixes", "fixes", {})
    with pytest.raises(monorepo.MonorepoError, match=r"binonly 1\.0"):
        monorepo.lock(proj)
    commit = "a" * 40
    write_overlay(
        proj / "fixes",
        "fixes",
        {
            "binonly": f'[[rule]]\nversions = "==1.0"\nreason = "no sdist upstream"\nsource = {{ git = "https://git.example/binonly.git", commit = "{commit}" }}\n'
        },
    )
    monorepo.lock(proj)
    pkg = packages(proj)["binonly"]
    assert pkg["vcs"] == {
        "type": "git",
        "url": "https://git.example/binonly.git",
        "commit-id": commit,
    }
    assert "sdist" not in pkg


def test_changed_overlay_makes_the_lock_stale(setup: Any) -> None:
    proj = setup(RELEASES, ["lib"], ["fixes"])
    write_overlay(proj / "fixes", "fixes", {"lib": '[[rule]]\nversions = ""\nreason = "a"\n'})
    monorepo.lock(proj)
    assert monorepo.check(proj).fresh
    (proj / "fixes/packages/lib/overlay.toml").write_text('[[rule]]\nversions = ""\nreason = "b"\n')
    result = monorepo.check(proj)
    assert not result.fresh
    assert any("overlay" in r for r in result.reasons)


def test_git_overlay_is_pinned_in_the_lock(setup: Any, tmp_path: Path) -> None:
    repo_dir = write_overlay(
        tmp_path / "ovrepo", "remote", {"lib": '[[rule]]\nversions = ""\nreason = "r1"\n'}
    )
    repo = pygit2.init_repository(str(repo_dir), initial_head="main")
    repo.index.add_all()
    repo.index.write()
    sig = pygit2.Signature("t", "t@example.com", 0, 0)
    first = repo.create_commit("HEAD", sig, sig, "one", repo.index.write_tree(), [])
    proj = setup(RELEASES, ["lib"], [f"git+{repo_dir}@main"])
    monorepo.lock(proj)
    data = tomllib.loads((proj / "pylock.toml").read_text())
    ov = data["tool"]["monorepo"]["inputs"]["overlays"]
    assert ov[0]["name"] == "remote" and ov[0]["fingerprint"] == str(first)
    assert packages(proj)["lib"]["tool"]["monorepo"]["overlay"]["commit"] == str(first)
    # a newer commit on the branch does not change the locked project
    (repo_dir / "packages/lib/overlay.toml").write_text('[[rule]]\nversions = ""\nreason = "r2"\n')
    repo.index.add_all()
    repo.index.write()
    repo.create_commit("HEAD", sig, sig, "two", repo.index.write_tree(), [first])
    monorepo.lock(proj)
    assert packages(proj)["lib"]["tool"]["monorepo"]["overlay"]["reason"] == "r1"
    monorepo.lock(proj, upgrade=True)
    assert packages(proj)["lib"]["tool"]["monorepo"]["overlay"]["reason"] == "r2"


def test_malformed_overlay_names_file_and_key(setup: Any) -> None:
    proj = setup(RELEASES, ["lib"], ["fixes"])
    write_overlay(proj / "fixes", "fixes", {"lib": '[[rule]]\nversions = ""\n'})
    with pytest.raises(OverlayError, match=r"(?s)packages/lib/overlay.toml.*reason"):
        monorepo.lock(proj)
