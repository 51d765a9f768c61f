"""Unsatisfiable projects on a loopback fixture index: each explanation is checked for its content.

Every case names both sides of the conflict (who requires what, through which
versions) and the change that would lift it, in the message and in the structured
``explanation`` that ``--json`` prints.  The ``network`` tests at the end run the three
real conflicts of the issue against the index named by ``MONOREPO_TEST_INDEX_URL``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

import monorepo
from fixtures.builder import FixtureIndex, Release
from fixtures.server import IndexServer
from monorepo.cli.commands import main
from monorepo.errors import ResolutionError

LINUX = '{ name = "linux", python = "3.11", platform = "linux", machine = "x86_64" }'
WINDOWS = '{ name = "windows", python = "3.11", platform = "windows", machine = "AMD64" }'


@pytest.fixture
def project(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
) -> Callable[..., Path]:
    """``project(releases, deps, extra_toml="", tool_toml="", targets=[LINUX])``."""

    def factory(
        releases: Iterable[Release],
        deps: Iterable[str],
        *,
        extra_toml: str = "",
        tool_toml: str = "",
        targets: Iterable[str] = (LINUX,),
    ) -> Path:
        server = serve(make_index(list(releases)))
        deps_toml = ", ".join(json.dumps(d) for d in deps)
        return make_project(
            f'[project]\nname = "proj"\nversion = "0"\ndependencies = [{deps_toml}]\n'
            f"{extra_toml}\n"
            f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{", ".join(targets)}]\n'
            f"build-dependencies = false\n{tool_toml}\n"
        )

    return factory


def conflict(proj: Path) -> tuple[str, dict[str, Any]]:
    """The message and the structured explanation of the lock's failure."""
    with pytest.raises(ResolutionError) as info:
        monorepo.lock(proj)
    assert info.value.explanation is not None, str(info.value)
    assert not (proj / "pylock.toml").exists()
    return str(info.value), info.value.explanation


def has_all(text: str, *fragments: str) -> None:
    if os.environ.get("T21_SHOW"):
        print("=====\n" + text)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text}"


def test_transitive_upper_bound(project: Any) -> None:
    releases = [
        Release("app", "1.0", requires_dist=("lib<2",)),
        Release("app", "1.1", requires_dist=("lib<2",)),
        Release("lib", "1.0"),
        Release("lib", "2.0"),
    ]
    text, data = conflict(project(releases, ["app", "lib>=2"]))
    has_all(
        text,
        "the project requires app",
        "the project requires lib>=2",
        "app 1.0, 1.1 require lib<2, which no version of lib left satisfies (lib can only be 2.0)",
        "loosen the project's requirement lib>=2",
        'add an override for lib in [tool.monorepo] overrides (e.g. "lib>=2")',
    )
    assert data["package"] == "app"
    assert {c["requirement"] for c in data["causes"]} >= {"app", "lib>=2", "lib<2"}


def test_transitive_lower_bound(project: Any) -> None:
    releases = [
        Release("app", "1.0", requires_dist=("lib>=2",)),
        Release("app", "2.0", requires_dist=("lib>=3",)),
        Release("lib", "1.0"),
        Release("lib", "2.0"),
        Release("lib", "3.0"),
    ]
    text, _ = conflict(project(releases, ["app", "lib<2"]))
    has_all(
        text,
        "the project requires lib<2",
        "app 1.0 requires lib>=2, which no version of lib left satisfies (lib can only be 1.0)",
        "app 2.0 requires lib>=3",
        "So no version of app is left",
        "loosen the project's requirement lib<2",
    )


def test_two_conflicting_extras(project: Any) -> None:
    releases = [Release("lib", "1.0"), Release("lib", "2.0")]
    extras = '[project.optional-dependencies]\nold = ["lib<2"]\nnew = ["lib>=2"]\n'
    with pytest.raises(ResolutionError) as info:
        monorepo.lock(project(releases, [], extra_toml=extras))
    has_all(
        str(info.value),
        "the project's extra 'old' requires lib<2",
        "the project's extra 'new' requires lib>=2",
        "no single version of lib satisfies all of these",
        "loosen lib<2 in the extra 'old'",
        "add an override for lib in [tool.monorepo] overrides",
    )


def test_two_extras_through_a_dependency(project: Any) -> None:
    """The extras' clash is one dependency deep: the proof names both extras and the package."""
    releases = [
        Release("old-client", "1.0", requires_dist=("lib<2",)),
        Release("lib", "1.0"),
        Release("lib", "2.0"),
    ]
    extras = '[project.optional-dependencies]\nlegacy = ["old-client"]\nmodern = ["lib>=2"]\n'
    text, data = conflict(project(releases, [], extra_toml=extras))
    has_all(
        text,
        "the project's extra 'legacy' requires old-client",
        "the project's extra 'modern' requires lib>=2",
        "old-client 1.0 requires lib<2",
        "loosen lib>=2 in the extra 'modern'",
    )
    kinds = {c["requirer"]["kind"] for c in data["causes"]}
    assert {"extra", "package"} <= kinds


def test_conflict_for_one_target_only(project: Any) -> None:
    releases = [
        Release("app", "1.0", requires_dist=("lib>=2", "winshim; sys_platform == 'win32'")),
        Release("winshim", "1.0", requires_dist=("lib<2",)),
        Release("lib", "1.0"),
        Release("lib", "2.0"),
    ]
    text, data = conflict(project(releases, ["app"], targets=(LINUX, WINDOWS)))
    has_all(
        text,
        "for target windows",
        "app 1.0 requires lib>=2",
        "winshim 1.0 requires lib<2",
        "add an override for lib",
    )
    assert data["target"] == "windows"


def test_a_build_requirement_no_version_meets(project: Any) -> None:
    releases = [
        Release("fastlib", "6.2.0", build_requires=("cython>=3.3.2",)),
        Release("cython", "3.0.0"),
        Release("cython", "3.1.0"),
    ]
    proj = project(releases, ["fastlib"], tool_toml="build-dependencies = true")
    text = (proj / "pyproject.toml").read_text().replace("build-dependencies = false\n", "")
    (proj / "pyproject.toml").write_text(text)
    with pytest.raises(ResolutionError) as info:
        monorepo.lock(proj)
    has_all(
        str(info.value),
        "fastlib 6.2.0's build settings (sdist pyproject.toml) requires cython>=3.3.2",
        "replace cython>=3.3.2, asked for by fastlib 6.2.0's build settings (sdist"
        " pyproject.toml), with an overlay rule's `build-requires`",
        "no release of cython satisfies it (available: 3.0.0, 3.1.0)",
        "An overlay rule's `build-requires` can replace them",
    )
    assert "the project's group" not in str(info.value)


def test_a_conflict_only_an_old_sdist_could_resolve(project: Any) -> None:
    """app 1.0 (an old sdist whose build backend is gone) might fit lib<2; app 2.0 cannot.

    Its metadata cannot be read: it is skipped with the reason, and the explanation
    suggests an overlay rule for it.
    """
    releases = [
        Release(
            "app",
            "1.0",
            requires_dist=("lib<2",),
            wheels=(),
            dynamic=("Requires-Dist",),
            build_backend="backend_that_is_gone",
        ),
        Release("app", "2.0", requires_dist=("lib>=2",)),
        Release("lib", "1.0"),
        Release("lib", "2.0"),
    ]
    text, data = conflict(project(releases, ["app", "lib<2"]))
    has_all(
        text,
        "the project requires lib<2",
        "app 2.0 requires lib>=2, which no version of lib left satisfies",
        "skipped version app 1.0: its metadata cannot be read (app 1.0",
        "add an overlay rule for app 1.0 that fixes its metadata",
        "loosen the project's requirement lib<2",
    )
    assert [(s["package"], s["version"]) for s in data["skipped"]] == [("app", "1.0")]


def test_cli_json_carries_the_explanation(project: Any, capsys: pytest.CaptureFixture[str]) -> None:
    releases = [
        Release("app", "1.0", requires_dist=("lib<2",)),
        Release("lib", "1.0"),
        Release("lib", "2.0"),
    ]
    proj = project(releases, ["app", "lib>=2"])
    assert main(["--project", str(proj), "lock", "--json"]) == 1
    out, err = capsys.readouterr()
    error = json.loads(out)["error"]
    assert error["type"] == "ResolutionError" and error["exit_code"] == 1
    explanation = error["explanation"]
    assert explanation["derivation"] and explanation["fixes"]
    assert "app 1.0 requires lib<2" in " ".join(explanation["derivation"])
    assert "Traceback" not in err and "Cannot resolve" in err


# -- the real conflicts, on a real index (off by default) ----------------------------

REAL = [
    (["requests>=2.31", "urllib3<1.21"], "requests", ["urllib3<1.21", "requests"]),
    (["requests==2.31.0", "urllib3<1.21"], "requests", ["urllib3<1.21", "requests 2.31.0"]),
    (["rich>=13", "pygments<2"], "rich", ["pygments<2", "rich 1"]),
]


@pytest.mark.network
@pytest.mark.parametrize(("deps", "package", "fragments"), REAL, ids=["range", "pin", "rich"])
def test_real_conflicts_are_explained_fast(
    make_project: Callable[..., Path], deps: list[str], package: str, fragments: list[str]
) -> None:
    index = os.environ["MONOREPO_TEST_INDEX_URL"]
    proj = make_project(
        f'[project]\nname = "p"\nversion = "0"\ndependencies = {json.dumps(deps)}\n'
        f'[tool.monorepo]\nindex-url = "{index}"\nbuild-dependencies = false\n'
    )
    start = time.monotonic()
    text, data = conflict(proj)
    elapsed = time.monotonic() - start
    has_all(text, *fragments, "which no version of", "To fix it")
    assert data["package"] == package
    assert not data["skipped"], "no old release should even be looked at"
    assert "creating build environment" not in text
    assert elapsed < 20, f"took {elapsed:.1f} s"
