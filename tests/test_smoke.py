"""The import check of built wheels: each with its dependencies' wheels, failures named.

A cross build runs it on the target under qemu (tests/test_build.py, with a sysroot);
here the same check runs with this machine's interpreter on a native build's wheels,
so it is tested everywhere.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import monorepo
from fixtures.builder import BACKEND_SOURCE, FixtureIndex, Release
from fixtures.server import IndexServer
from monorepo.building import builder as builder_mod
from monorepo.building.builder import build
from monorepo.building.scheduler import Scheduler
from monorepo.building.smoke import check_imports
from monorepo.project.targets import host_target

HOST = host_target()
TARGET = (
    f'{{ name = "native", python = "{HOST.python}", platform = "{HOST.platform}",'
    f' machine = "{HOST.machine}" }}'
)
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="builds are tested on Linux"
)

BROKEN = (
    BACKEND_SOURCE
    + r"""

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("a C package that does not build here")
"""
)

RELEASES = [
    # a C package whose build fails, and a pure-Python package depending on it
    Release("cbroken", "1.0", files={"_fixture_backend/fixture_backend.py": BROKEN}),
    Release(
        "puredep",
        "1.0",
        requires_dist=("cbroken",),
        files={"puredep/__init__.py": "import cbroken\n"},
    ),
    # imports lib, which it does not depend on: the check names lib's package
    Release("sloppy", "1.0", files={"sloppy/__init__.py": "import lib\n"}),
    # imports lib, a dependency: fine, lib's wheel is on its path
    Release("good", "1.0", requires_dist=("lib",), files={"good/__init__.py": "import lib\n"}),
    Release("lib", "1.0"),
]


@pytest.fixture
def built(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> Scheduler:
    """A native build of RELEASES, and the scheduler that ran it."""
    server = serve(make_index(RELEASES))
    deps = ", ".join(f'"{r.name}"' for r in RELEASES)
    proj = make_project(
        f'[project]\nname = "p"\nversion = "0"\ndependencies = [{deps}]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}]\n'
    )
    monorepo.lock(proj)
    monorepo.pull(proj)
    captured: list[Scheduler] = []

    class Capturing(Scheduler):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            captured.append(self)

    monkeypatch.setattr(builder_mod, "Scheduler", Capturing)
    result = build(proj, jobs=1)
    assert [f.dir for f in result.failed] == ["cbroken"]
    return captured[0]


def test_import_check_uses_dependencies_and_names_the_missing_package(built: Scheduler) -> None:
    check_imports(built, 0, [sys.executable, "-I"], where="on this machine")
    assert built.status[(0, "good")] == "built"
    assert built.status[(0, "sloppy")] == "failed"
    reason = built.results[(0, "sloppy")].reason or ""
    assert "sloppy 1.0 does not import on this machine" in reason
    assert "'lib' of lib 1.0, which is not among its dependencies" in reason
    assert not built.wheels[(0, "sloppy")].exists()


def test_a_failed_c_package_does_not_fail_its_pure_dependents(built: Scheduler) -> None:
    check_imports(built, 0, [sys.executable, "-I"], where="on this machine")
    assert built.status[(0, "puredep")] == "built"
    assert built.wheels[(0, "puredep")].is_file()
    assert any(
        "puredep 1.0 was not import-checked" in w and "cbroken 1.0 failed" in w
        for w in built.warnings
    )
