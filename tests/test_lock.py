"""End-to-end tests of `monorepo lock` against fixture indexes served over loopback."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import pytest
from packaging.markers import Environment, Marker
from packaging.pylock import Pylock

import monorepo
from fixtures.builder import FixtureIndex, Release
from fixtures.gitrepo import make_git_package
from fixtures.server import IndexServer
from monorepo.cli.commands import main
from monorepo.errors import ConfigError, OfflineError, ResolutionError
from monorepo.project.targets import Target

LINUX = '{ name = "linux", python = "3.11", platform = "linux", machine = "x86_64" }'
WINDOWS = '{ name = "windows", python = "3.11", platform = "windows", machine = "AMD64" }'
PY312 = '{ name = "py312", python = "3.12", platform = "linux", machine = "x86_64" }'


@pytest.fixture
def project(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
) -> Callable[..., tuple[Path, IndexServer]]:
    """``project(releases, deps, extra_toml="", targets=[LINUX])`` -> (project dir, server)."""
    counter = iter(range(1000))

    def factory(
        releases: Iterable[Release],
        deps: Iterable[str],
        *,
        extra_toml: str = "",
        tool_toml: str = "",
        targets: Iterable[str] = (LINUX,),
        **serve_kw: Any,
    ) -> tuple[Path, IndexServer]:
        server = serve(make_index(list(releases)), **serve_kw)
        deps_toml = ", ".join(json.dumps(d) for d in deps)
        text = (
            f'[project]\nname = "proj"\nversion = "0"\ndependencies = [{deps_toml}]\n{extra_toml}\n'
            f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{", ".join(targets)}]\n{tool_toml}\n'
        )
        return make_project(text, name=f"proj{next(counter)}"), server

    return factory


def locked(project_dir: Path) -> dict[str, Any]:
    data = tomllib.loads((project_dir / "pylock.toml").read_text())
    Pylock.from_dict(data)  # always valid PEP 751
    return data


def versions(project_dir: Path) -> dict[str, str]:
    return {p["name"]: p["version"] for p in locked(project_dir)["packages"]}


def test_lock_resolves_closure_with_sdist_hashes(project: Any) -> None:
    releases = [
        Release("app", "1.0", requires_dist=("lib>=1",)),
        Release("lib", "1.0"),
        Release("lib", "1.2"),
    ]
    proj, server = project(releases, ["app"])
    result = monorepo.lock(proj)
    assert result.changed
    data = locked(proj)
    assert versions(proj) == {"app": "1.0", "lib": "1.2"}
    app = next(p for p in data["packages"] if p["name"] == "app")
    assert app["dependencies"] == [{"name": "lib"}]
    assert app["sdist"]["url"] == f"{server.base_url}/files/app-1.0.tar.gz"
    assert len(app["sdist"]["hashes"]["sha256"]) == 64
    assert app["sdist"]["size"] > 0
    assert app["sdist"]["upload-time"].year == 2024
    assert app["index"] == server.url
    assert app["tool"]["monorepo"]["role"] == "runtime"
    assert data["tool"]["monorepo"]["inputs"]["dependencies"] == ["app"]


def test_backtracking_finds_compatible_versions(project: Any) -> None:
    # newest app needs lib>=2, but tool pins lib<2: the resolver must go back to app 1.0
    releases = [
        Release("app", "1.0", requires_dist=("lib<2",)),
        Release("app", "2.0", requires_dist=("lib>=2",)),
        Release("tool", "1.0", requires_dist=("lib<2",)),
        Release("lib", "1.5"),
        Release("lib", "2.0"),
    ]
    proj, _ = project(releases, ["app", "tool"])
    monorepo.lock(proj)
    assert versions(proj) == {"app": "1.0", "lib": "1.5", "tool": "1.0"}


def test_extras_and_groups_with_includes_get_markers(project: Any) -> None:
    releases = [
        Release("core", "1.0", requires_dist=('fast; extra == "speed"',)),
        Release("fast", "1.0"),
        Release("docs", "1.0"),
        Release("testing", "1.0"),
        Release("lint", "1.0"),
    ]
    extra = (
        '[project.optional-dependencies]\nspeed = ["core[speed]"]\n'
        '[dependency-groups]\nlint = ["lint"]\ndev = ["testing", { include-group = "lint" }]\n'
    )
    proj, _ = project(releases, ["core"], extra_toml=extra)
    monorepo.lock(proj)
    data = locked(proj)
    assert data["extras"] == ["speed"]
    assert data["dependency-groups"] == ["dev", "lint"]
    markers = {p["name"]: p.get("marker") for p in data["packages"]}
    assert markers["core"] is None
    assert markers["fast"] == "'speed' in extras"
    assert markers["testing"] == "'dev' in dependency_groups"
    assert markers["lint"] == "'dev' in dependency_groups or 'lint' in dependency_groups"
    lock = Pylock.from_dict(data)
    env = cast("Environment", Target("linux", "3.11", "linux", "x86_64").marker_environment())
    plain = {p.name for p, _ in lock.select(environment=env, tags=_any_tags())}
    assert plain == {"core"}
    with_dev = {
        p.name for p, _ in lock.select(environment=env, tags=_any_tags(), dependency_groups=["dev"])
    }
    assert with_dev == {"core", "testing", "lint"}


def _any_tags() -> list[Any]:
    from packaging.tags import Tag

    return [Tag("py3", "none", "any")]


def test_markers_are_evaluated_for_the_target_not_the_host(project: Any) -> None:
    releases = [
        Release(
            "app",
            "1.0",
            requires_dist=('winonly; sys_platform == "win32"', 'nixonly; sys_platform == "linux"'),
        ),
        Release("winonly", "1.0"),
        Release("nixonly", "1.0"),
    ]
    proj, _ = project(releases, ["app"], targets=[WINDOWS])
    monorepo.lock(proj)
    assert versions(proj) == {"app": "1.0", "winonly": "1.0"}


def test_two_targets_share_entries_and_mark_target_only_packages(project: Any) -> None:
    releases = [
        Release("app", "1.0", requires_dist=('winonly; sys_platform == "win32"',)),
        Release("winonly", "1.0"),
    ]
    proj, _ = project(releases, ["app"], targets=[LINUX, WINDOWS])
    monorepo.lock(proj)
    data = locked(proj)
    markers = {p["name"]: p.get("marker") for p in data["packages"]}
    assert markers["app"] is None
    assert "sys_platform == 'win32'" in markers["winonly"]
    win = Marker(markers["winonly"])
    assert win.evaluate(
        {
            "python_version": "3.11",
            "sys_platform": "win32",
            "platform_machine": "AMD64",
            "implementation_name": "cpython",
        }
    )
    assert not win.evaluate(
        {
            "python_version": "3.11",
            "sys_platform": "linux",
            "platform_machine": "x86_64",
            "implementation_name": "cpython",
        }
    )
    assert len(data["environments"]) == 2


def test_two_targets_with_diverging_versions_get_disjoint_markers(project: Any) -> None:
    releases = [
        Release("app", "1.0", requires_dist=("lib",)),
        Release("lib", "1.0", requires_python="<3.12"),
        Release("lib", "2.0", requires_python=">=3.12"),
    ]
    proj, _ = project(releases, ["app"], targets=[LINUX, PY312])
    monorepo.lock(proj)
    data = locked(proj)
    libs = [p for p in data["packages"] if p["name"] == "lib"]
    assert sorted(p["version"] for p in libs) == ["1.0", "2.0"]
    env311 = {
        "python_version": "3.11",
        "sys_platform": "linux",
        "platform_machine": "x86_64",
        "implementation_name": "cpython",
    }
    env312 = dict(env311, python_version="3.12")
    for env, want in ((env311, "1.0"), (env312, "2.0")):
        chosen = [p["version"] for p in libs if Marker(p["marker"]).evaluate(env)]
        assert chosen == [want]
    assert {p["tool"]["monorepo"]["dir"] for p in libs} == {"lib-1.0", "lib-2.0"}
    app = next(p for p in data["packages"] if p["name"] == "app")
    assert app["dependencies"] == [
        {"name": "lib", "version": "1.0"},
        {"name": "lib", "version": "2.0"},
    ]


def test_yanked_release_is_skipped_unless_pinned(project: Any) -> None:
    releases = [Release("lib", "1.0"), Release("lib", "1.1", yanked="broken")]
    proj, _ = project(releases, ["lib"])
    monorepo.lock(proj)
    assert versions(proj) == {"lib": "1.0"}
    proj2, _ = project(releases, ["lib==1.1"])
    monorepo.lock(proj2)
    assert versions(proj2) == {"lib": "1.1"}


def test_prerelease_policies(project: Any) -> None:
    releases = [Release("lib", "1.0"), Release("lib", "2.0b1"), Release("only", "0.1a1")]
    proj, _ = project(releases, ["lib", "only"])
    monorepo.lock(proj)
    # if-necessary: a final release wins where one exists, a prerelease where none does
    assert versions(proj) == {"lib": "1.0", "only": "0.1a1"}
    proj2, _ = project(releases, ["lib", "only"], tool_toml='prereleases = "allow"')
    monorepo.lock(proj2)
    assert versions(proj2)["lib"] == "2.0b1"
    proj3, _ = project(releases, ["only"], tool_toml='prereleases = "disallow"')
    with pytest.raises(ResolutionError, match="only"):
        monorepo.lock(proj3)


def test_exclude_newer_ignores_later_uploads(project: Any) -> None:
    releases = [
        Release("lib", "1.0", upload_time="2024-01-01T00:00:00Z"),
        Release("lib", "2.0", upload_time="2024-06-01T00:00:00Z"),
    ]
    proj, _ = project(releases, ["lib"], tool_toml='exclude-newer = "2024-03-01T00:00:00Z"')
    monorepo.lock(proj)
    assert versions(proj) == {"lib": "1.0"}
    assert locked(proj)["tool"]["monorepo"]["inputs"]["exclude-newer"] == "2024-03-01T00:00:00Z"


def test_requires_python_filters_for_the_target(project: Any) -> None:
    releases = [Release("lib", "1.0"), Release("lib", "2.0", requires_python=">=3.13")]
    proj, _ = project(releases, ["lib"])
    monorepo.lock(proj)
    assert versions(proj) == {"lib": "1.0"}


def test_constraints_limit_and_overrides_replace(project: Any) -> None:
    releases = [
        Release("app", "1.0", requires_dist=("lib<2",)),
        Release("lib", "1.0"),
        Release("lib", "1.5"),
        Release("lib", "2.0"),
        Release("unrelated", "1.0"),
    ]
    proj, _ = project(releases, ["app"], tool_toml='constraints = ["lib<1.5", "unrelated<2"]')
    monorepo.lock(proj)
    assert versions(proj) == {"app": "1.0", "lib": "1.0"}  # a constraint adds no package
    proj2, _ = project(releases, ["app"], tool_toml='overrides = ["lib>=2"]')
    monorepo.lock(proj2)
    assert versions(proj2) == {"app": "1.0", "lib": "2.0"}


def test_wheel_only_package_is_an_error_naming_it(project: Any) -> None:
    releases = [
        Release("app", "1.0", requires_dist=("binonly",)),
        Release("binonly", "1.0", sdist=False),
    ]
    proj, _ = project(releases, ["app"])
    with pytest.raises(
        ResolutionError, match=r"binonly 1\.0 is on the index only as wheels"
    ) as info:
        monorepo.lock(proj)
    assert "overlay rule with a `source`" in str(info.value)
    assert not (proj / "pylock.toml").exists()


def test_wheel_only_release_is_passed_over_for_an_older_sdist(project: Any) -> None:
    # A project that uploads its newest release only as wheels must not break every
    # lock that needs it: like --no-binary, the newest release with a source is taken.
    releases = [
        Release("app", "1.0", requires_dist=("lib",)),
        Release("lib", "1.0"),
        Release("lib", "1.1", sdist=False),
    ]
    proj, _ = project(releases, ["app"])
    monorepo.lock(proj)
    assert versions(proj) == {"app": "1.0", "lib": "1.0"}
    proj2, _ = project(releases, ["lib>=1.1"])
    with pytest.raises(
        ResolutionError, match=r"available: 1\.0\); passed over as wheels only.*: 1\.1"
    ):
        monorepo.lock(proj2)


def test_wheel_only_for_another_platform_is_not_a_candidate(project: Any) -> None:
    releases = [
        Release("lib", "1.0"),
        Release("lib", "2.0", sdist=False, wheels=("cp311-cp311-win_amd64",)),
    ]
    proj, _ = project(releases, ["lib"])
    monorepo.lock(proj)
    assert versions(proj) == {"lib": "1.0"}


def test_conflict_is_explained_in_words(project: Any) -> None:
    releases = [
        Release("a", "1.0", requires_dist=("shared>=2",)),
        Release("b", "1.0", requires_dist=("shared<2",)),
        Release("shared", "1.0"),
        Release("shared", "2.0"),
    ]
    proj, _ = project(releases, ["a", "b"])
    with pytest.raises(ResolutionError) as info:
        monorepo.lock(proj)
    text = str(info.value)
    assert "a 1.0 requires shared>=2" in text
    assert "b 1.0 requires shared<2" in text
    assert "shared" in text and "override" in text


def test_scopes_that_conflict_directly_are_explained(project: Any) -> None:
    """The project and one of its groups ask for disjoint versions of one package.

    Each scope is a single virtual candidate; the resolver used to offer it again after
    ruling it out, pinning and rejecting it until it gave up with "took too long"
    (70 seconds per failed build-closure trial on the real index).
    """
    releases = [Release("shared", "1.0"), Release("shared", "2.0")]
    extra = '[dependency-groups]\ntest = ["shared>=2"]\n'
    proj, _ = project(releases, ["shared<2"], extra_toml=extra)
    with pytest.raises(ResolutionError) as info:
        monorepo.lock(proj)
    text = str(info.value)
    assert "took too long" not in text
    assert "the project requires shared<2" in text
    assert "the project's group 'test' requires shared>=2" in text


def test_missing_package_is_explained(project: Any) -> None:
    proj, _ = project([Release("a", "1.0")], ["nosuch"])
    with pytest.raises(ResolutionError, match="no usable release of nosuch"):
        monorepo.lock(proj)


def test_git_source_is_pinned_to_a_commit(project: Any, tmp_path: Path) -> None:
    repo = tmp_path / "gitlib"
    first = make_git_package(repo, Release("gitlib", "1.0", requires_dist=("lib",)), tag="v1.0")
    make_git_package(repo, Release("gitlib", "1.1", requires_dist=("lib",)))
    sources = f'[tool.monorepo.sources]\ngitlib = {{ git = "{repo}", rev = "v1.0" }}\n'
    proj, _ = project([Release("lib", "1.0")], ["gitlib"])
    text = (proj / "pyproject.toml").read_text() + sources
    (proj / "pyproject.toml").write_text(text)
    monorepo.lock(proj)
    data = locked(proj)
    gitlib = next(p for p in data["packages"] if p["name"] == "gitlib")
    assert gitlib["version"] == "1.0"
    assert gitlib["vcs"] == {
        "type": "git",
        "url": str(repo),
        "requested-revision": "v1.0",
        "commit-id": first,
    }
    assert versions(proj)["lib"] == "1.0"


def test_pep508_git_reference(project: Any, tmp_path: Path) -> None:
    repo = tmp_path / "direct"
    commit = make_git_package(repo, Release("direct", "3.0"))
    proj, _ = project([], [f"direct @ git+file://{repo}@{commit}"])
    monorepo.lock(proj)
    pkg = locked(proj)["packages"][0]
    assert pkg["vcs"]["commit-id"] == commit
    assert pkg["version"] == "3.0"


def test_minimal_updates_prefer_locked_versions(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
) -> None:
    index = make_index([Release("lib", "1.0"), Release("other", "1.0")])
    server = serve(index)
    proj = make_project(
        f'[project]\nname = "p"\nversion = "0"\ndependencies = ["lib", "other"]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{LINUX}]\n'
    )
    monorepo.lock(proj)
    index.publish(Release("lib", "2.0"), Release("other", "2.0"))
    monorepo.lock(proj)
    assert versions(proj) == {"lib": "1.0", "other": "1.0"}
    monorepo.lock(proj, upgrade_packages=["lib"])
    assert versions(proj) == {"lib": "2.0", "other": "1.0"}
    result = monorepo.lock(proj, upgrade=True)
    assert versions(proj) == {"lib": "2.0", "other": "2.0"}
    assert result.changes == {"other": ("1.0", "2.0")}


def test_locking_twice_is_byte_identical(project: Any) -> None:
    releases = [
        Release("app", "1.0", requires_dist=("lib", 'extra1; extra == "x"')),
        Release("lib", "1.0"),
        Release("extra1", "1.0"),
    ]
    proj, _ = project(releases, ["app[x]"], targets=[LINUX, WINDOWS])
    monorepo.lock(proj)
    first = (proj / "pylock.toml").read_bytes()
    mtime = (proj / "pylock.toml").stat().st_mtime_ns
    result = monorepo.lock(proj)
    assert not result.changed
    assert (proj / "pylock.toml").read_bytes() == first
    assert (proj / "pylock.toml").stat().st_mtime_ns == mtime
    (proj / "pylock.toml").unlink()
    monorepo.lock(proj)
    assert (proj / "pylock.toml").read_bytes() == first


def test_a_hand_formatted_lock_with_the_same_content_is_rewritten(project: Any) -> None:
    # An unchanged relock reuses the file without rendering it again, but only a file
    # this version rendered: the same data spelled differently gets the canonical text.
    proj, _ = project(
        [Release("app", "1.0", requires_dist=("lib",)), Release("lib", "1.0")], ["app"]
    )
    monorepo.lock(proj)
    lock = proj / "pylock.toml"
    canonical = lock.read_text()
    lock.write_text(canonical.replace(" = ", "=").replace("\n[[packages]]", "\n\n[[packages]]"))
    assert monorepo.lock(proj).changed
    assert lock.read_text() == canonical
    assert not monorepo.lock(proj).changed


def test_offline_lock_is_served_from_the_cache(project: Any) -> None:
    releases = [Release("app", "1.0", requires_dist=("lib",)), Release("lib", "1.0")]
    proj, server = project(releases, ["app"])
    monorepo.lock(proj)
    first = (proj / "pylock.toml").read_bytes()
    (proj / "pylock.toml").unlink()
    server.stop()
    monorepo.lock(proj, offline=True)
    assert (proj / "pylock.toml").read_bytes() == first


def test_offline_without_cache_fails_clearly(project: Any) -> None:
    proj, _ = project([Release("lib", "1.0")], ["lib"])
    with pytest.raises(OfflineError, match="lib"):
        monorepo.lock(proj, offline=True)


def test_lock_retries_server_errors(project: Any) -> None:
    releases = [Release("app", "1.0", requires_dist=("lib",)), Release("lib", "1.0")]
    proj, server = project(releases, ["app"])
    server.add_fault(r"/simple/lib/", "status", times=2, status=503)
    server.add_fault(r"\.metadata$", "reset", times=1)
    monorepo.lock(proj)
    assert versions(proj) == {"app": "1.0", "lib": "1.0"}
    statuses = [r.status for r in server.requests_for(r"/simple/lib/")]
    assert statuses.count(503) == 2


def test_failed_lock_leaves_existing_file_untouched(project: Any) -> None:
    releases = [Release("lib", "1.0")]
    proj, _ = project(releases, ["lib"])
    monorepo.lock(proj)
    before = (proj / "pylock.toml").read_bytes()
    text = (
        (proj / "pyproject.toml")
        .read_text()
        .replace('dependencies = ["lib"]', 'dependencies = ["lib", "nosuch"]')
    )
    (proj / "pyproject.toml").write_text(text)
    with pytest.raises(ResolutionError):
        monorepo.lock(proj)
    assert (proj / "pylock.toml").read_bytes() == before
    assert sorted(p.name for p in proj.iterdir()) == ["pylock.toml", "pyproject.toml"]
    assert not [p for p in proj.iterdir() if p.name.endswith(".tmp")]


# --- lock --check -------------------------------------------------------------


def _edit(proj: Path, old: str, new: str) -> None:
    path = proj / "pyproject.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    ("old", "new", "fresh"),
    [
        ('"lib>=1"', '"lib>=0.5"', True),  # loosened, still satisfied
        ('"lib>=1"', '"lib>=1,<3"', True),  # tightened, still satisfied
        ('"lib>=1"', '"lib>=3"', False),  # tightened, violated
        ('"lib>=1"', '"lib>=1", "other"', False),  # added dependency
        (
            "targets = [",
            'exclude-newer = "2030-01-01"\ntargets = [',
            False,
        ),  # exclude-newer changed
        ('platform = "linux"', 'platform = "windows"', False),  # target changed
        ('index-url = "', 'index-url = "http://127.0.0.2:1/x/"\n# "', False),  # index changed
        ("targets = [", 'constraints = ["lib<3"]\ntargets = [', True),  # constraint satisfied
        ("targets = [", 'constraints = ["lib<2"]\ntargets = [', False),  # constraint violated
    ],
)
def test_check_is_semantic(project: Any, old: str, new: str, fresh: bool) -> None:
    proj, _ = project(
        [Release("lib", "1.0"), Release("lib", "2.0"), Release("other", "1.0")], ["lib>=1"]
    )
    monorepo.lock(proj)
    assert monorepo.check(proj).fresh
    _edit(proj, old, new)
    result = monorepo.check(proj)
    assert result.fresh is fresh, result.reasons
    assert main(["--project", str(proj), "lock", "--check"]) == (0 if fresh else 1)


def test_check_without_lock_is_stale(project: Any) -> None:
    proj, _ = project([Release("lib", "1.0")], ["lib"])
    assert main(["--project", str(proj), "lock", "--check"]) == 1


# --- CLI ------------------------------------------------------------------------


def test_cli_lock_json(project: Any, capsys: pytest.CaptureFixture[str]) -> None:
    proj, _ = project([Release("lib", "1.0")], ["lib"])
    assert main(["--project", str(proj), "lock", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] is True
    assert out["packages"] == [
        {"name": "lib", "version": "1.0", "marker": None, "role": "runtime", "dir": "lib"}
    ]
    assert out["changes"] == {"lib": {"old": None, "new": "1.0"}}


@pytest.mark.parametrize("how", ["console script", "python -m monorepo"])
def test_console_script_flushes_its_output_and_keeps_the_exit_code(project: Any, how: str) -> None:
    """The installed script ends the process without interpreter teardown (cli.script):
    output piped to another process must still arrive whole, with main's exit code.
    ``python -m monorepo`` is the same entry point."""
    script = Path(sys.executable).with_name("monorepo")
    assert script.exists(), "the package's console script is installed next to python"
    command = [str(script)] if how == "console script" else [sys.executable, "-m", "monorepo"]
    proj, _ = project([Release("lib", "1.0"), Release("lib", "2.0")], ["lib<2"])
    run = subprocess.run(
        [*command, "--project", str(proj), "lock", "--json"], capture_output=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["packages"][0]["version"] == "1.0"
    _edit(proj, '"lib<2"', '"lib>=2"')
    run = subprocess.run(
        [*command, "--project", str(proj), "lock", "--check"], capture_output=True, timeout=120
    )
    assert run.returncode == 1
    assert b"is stale" in run.stderr and b"Run `monorepo lock`" in run.stderr


def test_cli_input_error_exits_2_without_traceback(
    make_project: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    proj = make_project(
        '[project]\nname = "p"\nversion = "0"\n[tool.monorepo]\nprerelease = "allow"\n'
    )
    assert main(["--project", str(proj), "lock"]) == 2
    err = capsys.readouterr().err
    assert "prerelease" in err and "pyproject.toml" in err
    assert "Traceback" not in err


def test_cli_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lock", "--no-such-flag"]) == 2
    assert "--no-such-flag" in capsys.readouterr().err


def test_config_error_is_typed(make_project: Any) -> None:
    proj = make_project('[project]\nname = "p"\nversion = "0"\ndependencies = ["not a req!!"]\n')
    with pytest.raises(ConfigError, match="dependencies"):
        monorepo.lock(proj)


def test_lock_leaves_the_garbage_collector_as_it_found_it(project: Any) -> None:
    # Rendering pauses collections (a speed measure); a library call must not leave a
    # caller's process with them switched off, nor switch them on for one that had not.
    proj, _server = project([Release("app", "1.0")], ["app"])
    assert gc.isenabled()
    monorepo.lock(proj)
    assert gc.isenabled()
    (proj / "pylock.toml").unlink()
    gc.disable()
    try:
        monorepo.lock(proj)
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert versions(proj) == {"app": "1.0"}


def test_lock_with_pips_missing_extra_index_warns_and_locks(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pip's config names extra file:// indexes that are gone: the lock goes on, with a note."""
    extra = serve(make_index([Release("extra-only", "1.0")], name="extra"))
    server = serve(make_index([Release("app", "1.0", requires_dist=("extra-only",))]))
    missing = tmp_path / "opt" / "pypi" / "simple"
    conf = tmp_path / "pip.conf"
    conf.write_text(
        f"[global]\nindex-url = {server.url}\nextra-index-url = {missing.as_uri()} {extra.url}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    proj = make_project(
        '[project]\nname = "proj"\nversion = "0"\ndependencies = ["app"]\n'
        f"[tool.monorepo]\ntargets = [{LINUX}]\n"
    )
    notes: list[str] = []

    class Notes(monorepo.NullReporter):
        def message(self, level: Any, text: str) -> None:
            notes.append(text)

    monorepo.lock(proj, reporter=Notes())
    assert versions(proj) == {"app": "1.0", "extra-only": "1.0"}
    assert any("skipped the extra index" in n and missing.as_uri() in n for n in notes)
    assert monorepo.check(proj).fresh
