"""The sources pass of `monorepo lock`: tree hashes and the locked build-dependency closure."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from packaging.markers import Environment
from packaging.pylock import Pylock
from packaging.tags import Tag

import monorepo
from fixtures.builder import FixtureIndex, Release
from fixtures.server import IndexServer
from monorepo.errors import OverlayError, ResolutionError
from monorepo.project.targets import host_target
from tests.helpers import write_overlay

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
    env = cast("Environment", host_target().marker_environment())
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


# Several versions of one build tool, as on the real index (setuptools 82.0.1 and 84.2.1,
# flit-core 3.12.0 and 4.2.0): one package takes any `tool`, another caps it below the
# newest; the tools need building too, and there the same happens one level down (`boot`).
# Resolving each package's build requirements on its own took tool 2.0 for alpha and 1.0
# for beta; a relock, preferring the first locked version, then collapsed them to 1.0.
CAPPED = [
    Release("alpha", "1.0", build_requires=("tool",)),
    Release("beta", "1.0", build_requires=("tool<2",)),
    Release("gamma", "1.0", build_requires=("plugin", "tool>=1")),
    Release("plugin", "1.0", requires_dist=("tool",), build_requires=("boot",)),
    Release("tool", "1.0", build_requires=("boot<2",)),
    Release("tool", "2.0", build_requires=("boot>=2",)),
    Release("boot", "1.0"),
    Release("boot", "2.0"),
]


def _versions(text: str) -> dict[str, list[str]]:
    data = tomllib.loads(text)
    out: dict[str, list[str]] = {}
    for p in data["packages"]:
        out.setdefault(p["name"], []).append(p["version"])
    return out


def test_build_closure_is_the_same_bytes_whatever_the_state(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Empty or warm cache, with or without a lock, -U, answers reordered, 0 to 3 index
    workers: the same pylock.toml, with one version of each build tool."""
    from monorepo._core.speed import workerproc

    server = serve(make_index(CAPPED))
    proj = make_project(
        f'[project]\nname = "p"\nversion = "0"\ndependencies = ["alpha", "beta", "gamma"]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}]\n'
    )
    lock_path = proj / "pylock.toml"

    def run(cache: str, *, fresh: bool = False, **kwargs: Any) -> str:
        monkeypatch.setenv("MONOREPO_CACHE_DIR", str(tmp_path / cache))
        if fresh:
            lock_path.unlink()
        monorepo.lock(proj, **kwargs)
        return lock_path.read_text()

    first = run("c1")  # empty cache, no lock
    versions = _versions(first)
    assert versions["tool"] == ["1.0"]  # beta's cap holds for everyone: one tool, not two
    assert versions["boot"] == ["1.0"]  # the same for what builds the build tools
    states = {
        "warm cache, existing lock": run("c1"),
        "warm cache, -U": run("c1", upgrade=True),
        "-P tool": run("c1", upgrade_packages=["tool"]),
        "empty cache, existing lock": run("c2"),
        "empty cache, no lock, -U": run("c3", fresh=True, upgrade=True),
    }
    for seed, workers in ((1, 0), (2, 1), (3, 3)):
        server.reorder(0.05, seed)
        monkeypatch.setattr(workerproc, "index_workers", lambda n=workers: n)
        states[f"reordered answers (seed {seed}), {workers} workers, empty cache"] = run(
            f"r{seed}", fresh=True
        )
        states[f"reordered answers (seed {seed}), {workers} workers, warm, lock"] = run(f"r{seed}")
    server.reorder(0, 0)
    for state, text in states.items():
        assert text == first, f"{state}: the lock differs from the first one"
    assert monorepo.check(proj).fresh
    report = monorepo.verify(proj, resolve=True)
    checks = {c.name: c for c in report.checks}
    assert checks["lock"].passed, checks["lock"].items
    assert checks["resolve"].passed, checks["resolve"].items


# Build requirements that truly conflict: gamma's `scm<2` and delta's `scm>=2` cannot share
# an environment (setuptools_scm<8 beside setuptools-scm>=8 on the real index).
CONFLICT = [
    Release("gamma", "1.0", build_requires=("scm<2", "tool")),
    Release("delta", "1.0", build_requires=("scm>=2", "plugin")),
    Release("beta", "1.0", build_requires=("tool<2",)),
    Release("plugin", "1.0", requires_dist=("scm",)),
    Release("scm", "1.0", requires_dist=("tool",)),
    Release("scm", "2.0", requires_dist=("tool",)),
    Release("tool", "1.0"),
    Release("tool", "2.0"),
]


def test_conflicting_build_requirements_split_only_what_conflicts(setup: Any) -> None:
    proj = setup(CONFLICT, ["beta", "delta", "gamma"])
    monorepo.lock(proj)
    first = (proj / "pylock.toml").read_text()
    _, pkgs = load(proj)
    data = tomllib.loads(first)
    by_version = {(p["name"], p["version"]): p for p in data["packages"]}
    assert sorted(v for n, v in by_version if n == "scm") == ["1.0", "2.0"]
    # the tool both environments need is shared, at the version beta's cap allows
    assert [v for n, v in by_version if n == "tool"] == ["1.0"]
    closure = {n: p["tool"]["monorepo"]["build-closure"] for n, p in pkgs.items()}
    assert closure["gamma"] == ["scm==1.0", "tool==1.0"]
    assert closure["delta"] == ["plugin==1.0", "scm==2.0", "tool==1.0"]
    assert closure["beta"] == ["tool==1.0"]
    # with two versions of scm locked, a dependency on it says which one
    assert pkgs["plugin"]["dependencies"] == [{"name": "scm", "version": "2.0"}]
    assert {p["tool"]["monorepo"]["dir"] for (n, _), p in by_version.items() if n == "scm"} == {
        "scm-1.0",
        "scm-2.0",
    }
    monorepo.lock(proj)
    assert (proj / "pylock.toml").read_text() == first
    monorepo.lock(proj, upgrade=True)
    assert (proj / "pylock.toml").read_text() == first
    report = monorepo.verify(proj, resolve=True)
    assert {c.name: c.passed for c in report.checks}["resolve"]


def test_build_requirements_that_cannot_resolve_name_the_package(setup: Any) -> None:
    proj = setup(
        [Release("app", "1.0", build_requires=("tool>=9",)), Release("tool", "1.0")], ["app"]
    )
    with pytest.raises(ResolutionError, match=r"(?s)build requirements of app 1\.0.*tool>=9"):
        monorepo.lock(proj)
    assert not (proj / "pylock.toml").exists()


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


def test_check_finds_a_build_closure_lock_would_change(setup: Any) -> None:
    """`lock --check` (and verify's lock check) agree with what `lock` would write: a lock
    chosen by the earlier per-package rule, or whose closure does not hold, is stale."""
    proj = setup(CAPPED, ["alpha", "beta", "gamma"])
    monorepo.lock(proj)
    path = proj / "pylock.toml"
    good = path.read_text()
    assert monorepo.check(proj).fresh

    path.write_text(good.replace("\nbuild-closure = 2\n", "\n"))  # as written before the rule
    result = monorepo.check(proj)
    assert result.reasons == (
        "the rule monorepo chooses build dependencies by changed (none -> 2)",
    )
    verdict = {c.name: c for c in monorepo.verify(proj).checks}["lock"]
    assert not verdict.passed and "run `monorepo lock`" in verdict.items[0].message

    # a hand edit: beta said to build with a tool the lock does not hold, and its cap excludes
    head, _, tail = good.partition('name = "beta"')
    tail = tail.replace('build-closure = ["tool==1.0"]', 'build-closure = ["tool==2.0"]', 1)
    path.write_text(head + 'name = "beta"' + tail)
    assert monorepo.check(proj).reasons == (
        "beta 1.0 builds with tool==2.0, which the lock does not hold",
        "beta 1.0 needs tool<2 to build, but its build closure has tool 2.0",
    )
    monorepo.lock(proj)
    assert path.read_text() == good


def test_sources_ahead_fetches_each_sdist_once_into_the_store(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Pinned sdists are fetched while the lock resolves (sources-ahead); the sources pass
    finds them in the store: every sdist is downloaded exactly once, and the lock is the
    same bytes with the speed-up off."""
    server = serve(make_index(RELEASES))
    text = (
        '[project]\nname = "p"\nversion = "0"\ndependencies = ["app"]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}]\n'
    )
    proj = make_project(text)
    monkeypatch.setenv("MONOREPO_CACHE_DIR", str(tmp_path / "cache-on"))
    monorepo.lock(proj)
    sdists = [r for r in server.requests if r.method == "GET" and r.path.endswith(".tar.gz")]
    assert len(sdists) == len({r.path for r in sdists}) == 5, [r.path for r in sdists]
    with_ahead = (proj / "pylock.toml").read_bytes()
    (proj / "pylock.toml").unlink()
    monkeypatch.setenv("MONOREPO_CACHE_DIR", str(tmp_path / "cache-off"))
    monkeypatch.setenv("MONOREPO_NO_SPEEDUPS", "sources-ahead")
    monorepo.lock(proj)
    assert (proj / "pylock.toml").read_bytes() == with_ahead
