"""A relock with the same inputs and byte-identical index pages reuses the last resolution."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import monorepo
from fixtures.builder import Release
from fixtures.gitrepo import make_git_package
from fixtures.server import IndexServer
from monorepo._core.reporter import RecordingReporter
from monorepo.locking.speed import reuse as lockmemo
from monorepo.project import lockfile
from tests.helpers import MakeIndex, Serve, current_cache

LINUX = '{ name = "linux", python = "3.11", platform = "linux", machine = "x86_64" }'

RELEASES = [Release("app", "1.0", requires_dist=("lib>=1",)), Release("lib", "1.0")]


def project(root: Path, server: IndexServer, *deps: str) -> Path:
    root.mkdir(exist_ok=True)
    listed = ", ".join(f'"{d}"' for d in deps)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "proj"\nversion = "0"\ndependencies = [{listed}]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{LINUX}]\n'
    )
    return root


def versions(root: Path) -> dict[str, str]:
    return {p.name: str(p.version) for p in lockfile.read(root / "pylock.toml").packages}


def reused(reporter: RecordingReporter) -> bool:
    return any("resolution is reused" in text for _, text in reporter.messages)


def test_unchanged_inputs_and_pages_reuse_the_resolution(
    make_index: MakeIndex, serve: Serve, tmp_path: Path
) -> None:
    server = serve(make_index(RELEASES))
    root = project(tmp_path / "proj", server, "app")
    monorepo.lock(root)
    first = (root / "pylock.toml").read_text()
    # Without its metadata cache and with every file refused, a resolution would fail:
    # the relock succeeds only because it does not resolve.
    shutil.rmtree(current_cache().metadata)
    server.add_fault("^/files/", "status", status=500, times=1000)
    server.clear_requests()
    (root / "pylock.toml").unlink()
    reporter = RecordingReporter()
    monorepo.lock(root, reporter=reporter)
    assert reused(reporter)
    assert (root / "pylock.toml").read_text() == first
    assert server.requests_for("^/files/") == []
    assert {r.path for r in server.requests_for("^/simple/")} == {"/simple/app/", "/simple/lib/"}


def test_a_changed_page_resolves_again(make_index: MakeIndex, serve: Serve, tmp_path: Path) -> None:
    index = make_index(RELEASES)
    server = serve(index)
    root = project(tmp_path / "proj", server, "app")
    monorepo.lock(root)
    assert versions(root) == {"app": "1.0", "lib": "1.0"}
    index.publish(Release("lib", "2.0"))
    (root / "pylock.toml").unlink()
    reporter = RecordingReporter()
    monorepo.lock(root, reporter=reporter)
    assert not reused(reporter)
    assert versions(root) == {"app": "1.0", "lib": "2.0"}


def test_changed_preferences_resolve_again(
    make_index: MakeIndex, serve: Serve, tmp_path: Path
) -> None:
    index = make_index(RELEASES)
    server = serve(index)
    root = project(tmp_path / "proj", server, "app")
    monorepo.lock(root)
    index.publish(Release("lib", "2.0"))
    monorepo.lock(root)  # the lock prefers lib 1.0: unchanged, remembered with that preference
    assert versions(root)["lib"] == "1.0"
    reporter = RecordingReporter()
    monorepo.lock(root, upgrade=True, reporter=reporter)
    assert not reused(reporter)
    assert versions(root)["lib"] == "2.0"


def test_a_git_source_is_never_remembered(
    make_index: MakeIndex, serve: Serve, tmp_path: Path
) -> None:
    # A branch or tag can move without any index page changing.
    server = serve(make_index(RELEASES))
    repo = tmp_path / "gitlib"
    make_git_package(repo, Release("gitlib", "1.0", requires_dist=("lib",)), tag="v1.0")
    root = project(tmp_path / "proj", server, "gitlib")
    with (root / "pyproject.toml").open("a") as f:
        f.write(f'[tool.monorepo.sources]\ngitlib = {{ git = "{repo}", rev = "v1.0" }}\n')
    monorepo.lock(root)
    assert versions(root) == {"gitlib": "1.0", "lib": "1.0"}
    reporter = RecordingReporter()
    monorepo.lock(root, reporter=reporter)
    assert not reused(reporter)
    locks = current_cache().locks
    assert not locks.exists() or not any(locks.iterdir())


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b'{"format": 1, "pages": [], "text": "x"}', b'{"format": 99}'],
)
def test_a_damaged_entry_is_a_miss(tmp_path: Path, content: bytes) -> None:
    key = lockmemo.memo_key({"inputs": 1})
    assert lockmemo.load(key, root=tmp_path) is None
    lockmemo.store(key, lockmemo.Memo(pages={"u a": "ab", "u b": None}, text="t"), root=tmp_path)
    assert lockmemo.load(key, root=tmp_path) == lockmemo.Memo(
        pages={"u a": "ab", "u b": None}, text="t"
    )
    (tmp_path / key).write_bytes(content)
    assert lockmemo.load(key, root=tmp_path) is None
