"""Shared pytest fixtures: an isolated environment and builders for indexes, servers, projects.

Every test runs with its own cache directory and without any index configuration
inherited from the developer's shell or pip config, so a test can only reach the
fixture indexes it builds itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.builder import FixtureIndex, Release, build_index
from fixtures.server import IndexServer

_INDEX_ENV = ("MONOREPO_INDEX_URL", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``network`` tests unless a real index is named (even when selected with -m)."""
    if os.environ.get("MONOREPO_TEST_INDEX_URL"):
        return
    skip = pytest.mark.skip(reason="set MONOREPO_TEST_INDEX_URL to run network tests")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("MONOREPO_CACHE_DIR", str(tmp_path_factory.mktemp("monorepo-cache")))
    for name in _INDEX_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


@pytest.fixture
def make_index(tmp_path: Path) -> Callable[..., FixtureIndex]:
    """``make_index(releases, name="index")`` builds a FixtureIndex under tmp_path."""
    counter = iter(range(1_000_000))

    def factory(releases: Iterable[Release], name: str | None = None) -> FixtureIndex:
        root = tmp_path / (name if name is not None else f"index{next(counter) or ''}")
        return build_index(releases, root)

    return factory


@pytest.fixture
def serve() -> Iterator[Callable[..., IndexServer]]:
    """``serve(index, **kw)`` starts an IndexServer over the index, stopped at teardown."""
    servers: list[IndexServer] = []

    def factory(index: FixtureIndex | Path, **kw: Any) -> IndexServer:
        root = index.root if isinstance(index, FixtureIndex) else Path(index)
        server = IndexServer(root, **kw).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """``make_project(pyproject_text, name="proj")`` writes tmp_path/name/pyproject.toml."""

    def factory(pyproject_text: str, name: str = "proj") -> Path:
        project = tmp_path / name
        project.mkdir(parents=True, exist_ok=True)
        (project / "pyproject.toml").write_text(pyproject_text, encoding="utf-8")
        return project

    return factory


@pytest.fixture
def deep_tree() -> Iterator[Callable[..., Path]]:
    """``deep_tree(root, depth=1200)``: :func:`fixtures.hostile.deep_tree`, removed again
    at teardown, since pytest's own cleanup of old temporary directories uses
    ``shutil.rmtree``, which recurses once per level on Python 3.11."""
    from fixtures import hostile
    from monorepo._core.fstree import remove_tree

    made: list[Path] = []

    def factory(root: Path, depth: int = 1200) -> Path:
        made.append(root / "d")
        return hostile.deep_tree(root, depth)

    yield factory
    for top in made:
        remove_tree(top, ignore_errors=True)
