"""A relock fetches the pages it will read up front: from the lock, or the cache's memory."""

from __future__ import annotations

from pathlib import Path

import monorepo
from fixtures.builder import Release
from fixtures.server import IndexServer
from monorepo.locking.speed import warmstart
from monorepo.project import lockfile
from tests.helpers import MakeIndex, Serve

LINUX = '{ name = "linux", python = "3.11", platform = "linux", machine = "x86_64" }'

RELEASES = [
    Release("app", "1.0", requires_dist=("lib>=1",)),
    Release("lib", "1.0"),
    Release("other", "1.0"),
]


def project(root: Path, server: IndexServer, dependency: str) -> Path:
    root.mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "proj"\nversion = "0"\ndependencies = ["{dependency}"]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{LINUX}]\n'
    )
    return root


def pages_requested(server: IndexServer) -> set[str]:
    return {r.path.strip("/").split("/")[-1] for r in server.requests_for("^/simple/")}


def locked_names(root: Path) -> list[str]:
    return [p.name for p in lockfile.read(root / "pylock.toml").packages]


def test_remembered_names_round_trip_and_damage_is_no_hint(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    root = tmp_path / "proj"
    root.mkdir()
    assert warmstart.remembered(root, cache=cache) == []
    warmstart.remember(root, ["lib", "app", "lib"], cache=cache)
    assert warmstart.remembered(root, cache=cache) == ["app", "lib"]
    assert warmstart.remembered(tmp_path, cache=cache) == []  # another project: no hint
    (entry,) = cache.iterdir()
    entry.write_bytes(b"app\n../../etc\nNot A Name\n\xff\n")
    assert warmstart.remembered(root, cache=cache) == []  # not UTF-8: no hint at all
    entry.write_text("app\n../../etc\nNot A Name\nlib\n")
    assert warmstart.remembered(root, cache=cache) == ["app", "lib"]


def test_a_relock_without_pylock_fetches_what_the_last_lock_needed(
    make_index: MakeIndex, serve: Serve, tmp_path: Path
) -> None:
    server = serve(make_index(RELEASES))
    root = project(tmp_path / "proj", server, "app")
    monorepo.lock(root)
    assert locked_names(root) == ["app", "lib"]
    # The project now needs only "other", and its lock is gone: the pages of the last
    # lock are still fetched (a hint), and the result does not depend on them.
    (root / "pylock.toml").unlink()
    project(root, server, "other")
    server.clear_requests()
    monorepo.lock(root)
    assert locked_names(root) == ["other"]
    assert pages_requested(server) == {"app", "lib", "other"}
    # That lock is remembered in turn: the next one no longer asks for app and lib.
    (root / "pylock.toml").unlink()
    server.clear_requests()
    monorepo.lock(root)
    assert pages_requested(server) == {"other"}


def test_the_existing_lock_names_the_pages_to_fetch_first(
    make_index: MakeIndex, serve: Serve, tmp_path: Path
) -> None:
    server = serve(make_index(RELEASES))
    root = project(tmp_path / "proj", server, "app")
    monorepo.lock(root)
    # Another checkout with the lock committed: the cache remembers nothing for it,
    # but the lock's packages are known.
    root2 = tmp_path / "clone"
    root2.mkdir()
    (root2 / "pyproject.toml").write_text((root / "pyproject.toml").read_text())
    (root2 / "pylock.toml").write_text((root / "pylock.toml").read_text())
    project(root2, server, "other")
    server.clear_requests()
    monorepo.lock(root2)
    assert locked_names(root2) == ["other"]
    assert pages_requested(server) == {"app", "lib", "other"}
