"""`monorepo list` and `monorepo why`: the locked graph read back from a real lock."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

import monorepo
from fixtures.builder import FixtureIndex, Release
from fixtures.server import IndexServer
from monorepo.errors import LockFileError
from monorepo.locking.graph import DependencyPath, list_packages, why
from tests.helpers import write_overlay

LINUX = '{ name = "linux", python = "3.11", platform = "linux", machine = "x86_64" }'

RELEASES = [
    Release("app", "1.0", requires_dist=("lib",), build_requires=("backend-a>=1",)),
    Release("lib", "1.0"),
    Release("other", "1.0"),
    Release("backend-a", "1.0", requires_dist=("support",), build_requires=("backend-b",)),
    Release("backend-b", "2.0"),
    Release("support", "1.0"),
]


@pytest.fixture
def locked(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
) -> Path:
    server = serve(make_index(RELEASES))
    proj = make_project(
        '[project]\nname = "p"\nversion = "0"\ndependencies = ["app"]\n'
        '[project.optional-dependencies]\ncli = ["other"]\n'
        '[dependency-groups]\ndev = ["lib"]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{LINUX}]\n'
        'overlays = ["fixes"]\n'
    )
    write_overlay(
        proj / "fixes",
        "fixes",
        {
            "other": '[[rule]]\nversions = ""\nreason = "why not"\npatches = ["patches/0001.patch"]\n'
        },
        {"packages/other/patches/0001.patch": PATCH},
    )
    monorepo.lock(proj)
    return proj


PATCH = (
    b"diff --git a/other/__init__.py b/other/__init__.py\n"
    b"--- a/other/__init__.py\n"
    b"+++ b/other/__init__.py\n"
    b"@@ -1,3 +1,4 @@\n"
    b' """Fixture package other."""\n'
    b" \n"
    b" __version__ = '1.0'\n"
    b"+PATCHED = True\n"
)


def lines(paths: list[DependencyPath]) -> list[str]:
    return [str(p) for p in paths]


def test_why_runtime_paths_from_every_scope(locked: Path) -> None:
    assert lines(why(locked, "lib")) == [
        "project (group dev) -> lib 1.0",
        "project -> app 1.0 -> lib 1.0",
    ]
    assert lines(why(locked, "Other")) == ["project[cli] -> other 1.0"]
    assert lines(why(locked, "app")) == ["project -> app 1.0"]


def test_why_follows_build_requirement_edges(locked: Path) -> None:
    assert lines(why(locked, "backend-b")) == [
        "project -> app 1.0 (build) -> backend-a 1.0 (build) -> backend-b 2.0"
    ]
    (path,) = why(locked, "support")
    assert str(path) == "project -> app 1.0 (build) -> backend-a 1.0 -> support 1.0"
    assert [s.via for s in path.steps] == ["runtime", "build", "runtime"]
    assert path.to_dict()["steps"][1] == {"name": "backend-a", "version": "1.0", "via": "build"}


def test_why_an_unlocked_package_is_an_error(locked: Path) -> None:
    with pytest.raises(LockFileError, match=r"nope is not in pylock\.toml"):
        why(locked, "nope")


def test_list_shows_version_role_source_overlay_and_dir(locked: Path) -> None:
    rows = {p.name: p for p in list_packages(locked)}
    assert sorted(rows) == ["app", "backend-a", "backend-b", "lib", "other", "support"]
    assert (rows["app"].version, rows["app"].role, rows["app"].dir) == ("1.0", "runtime", "app")
    assert rows["backend-b"].role == "build" and rows["backend-b"].version == "2.0"
    assert rows["lib"].source.endswith("/files/lib-1.0.tar.gz")
    assert rows["other"].overlay == "fixes (1 patch)"
    assert rows["app"].overlay is None
    assert rows["backend-a"].marker == "'build' in dependency_groups"
    assert json.loads(json.dumps(rows["app"].to_dict()))["source"] == rows["app"].source


def test_cli_list_and_why(locked: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from monorepo.cli.commands import main

    assert main(["--project", str(locked), "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 6
    assert any(line.startswith("other 1.0  runtime  duni/other  overlay fixes") for line in out)
    assert main(["--project", str(locked), "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in data] == [
        "app",
        "backend-a",
        "backend-b",
        "lib",
        "other",
        "support",
    ]
    assert main(["--project", str(locked), "why", "support"]) == 0
    assert capsys.readouterr().out == (
        "project -> app 1.0 (build) -> backend-a 1.0 -> support 1.0\n"
    )
    assert main(["--project", str(locked), "why", "--json", "lib"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [p["text"] for p in data] == [
        "project (group dev) -> lib 1.0",
        "project -> app 1.0 -> lib 1.0",
    ]
    assert main(["--project", str(locked), "why", "nope"]) == 2
    assert "nope is not in pylock.toml" in capsys.readouterr().err
    assert monorepo.why is why and monorepo.list_packages is list_packages
