"""workspace.toml: build order over hand-made locks, field sources, detection, rendering."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

from monorepo.errors import PullError
from monorepo.project.lockfile import LockDocument, LockedPackage, SdistSource
from monorepo.project.pyproject import DEFAULT_REQUIRES
from monorepo.vendoring.workspace import (
    build_order,
    detect_c_extension,
    read_workspace,
    render,
    workspace_data,
)


def pkg(
    name: str,
    version: str = "1.0",
    *,
    deps: tuple[str, ...] = (),
    build: tuple[str, ...] | None = (),
    role: str = "runtime",
    tool: Mapping[str, Any] | None = None,
    **more: Any,
) -> LockedPackage:
    """A lock entry; *tool* and *more* (for fields spelled as names) join its tool table."""
    extra = {**(tool or {}), **more}
    data: dict[str, Any] = {"dir": canonicalize_name(name), "role": role, **extra}
    if build is not None:
        data["build-backend"] = extra.get("backend", "backend.api")
        data["build-requires"] = list(build)
    data.pop("backend", None)
    return LockedPackage(
        name=canonicalize_name(name),
        version=Version(version),
        source=SdistSource(f"https://files.invalid/{name}-{version}.tar.gz", "0" * 64, 1, None),
        dependencies=tuple((canonicalize_name(d), None) for d in deps),
        tool=data,
    )


def lock_of(*packages: LockedPackage) -> LockDocument:
    return LockDocument(packages=packages, inputs={})


def order(lock: LockDocument) -> list[str]:
    """The build order, raising like the strict ``build_order`` when there is a cycle."""
    requires = {p.dir: list(p.tool.get("build-requires", ())) for p in lock.packages}
    strict = build_order(lock, requires, in_tree=())
    data = workspace_data(lock, {})
    assert data["build-order"] == strict and "build-cycles" not in data
    return strict


def test_workspace_records_a_cycle_instead_of_failing() -> None:
    lock = lock_of(pkg("a", build=("b",)), pkg("b", deps=("c",), build=()), pkg("c", build=("a",)))
    data = workspace_data(lock, {})
    assert data["build-cycles"] == [["a", "c", "a"]]
    assert sorted(data["build-order"]) == ["a", "b", "c"]


def test_backend_needing_another_backend_comes_after_its_runtime_closure() -> None:
    # hatchling builds with flit-core; hatchling itself needs packaging + pathspec at run
    # time, and packaging builds with flit-core.  app builds with hatchling.
    lock = lock_of(
        pkg("app", build=("hatchling>=1",)),
        pkg("hatchling", deps=("packaging", "pathspec"), build=("flit-core>=3",), role="build"),
        pkg("packaging", build=("flit-core",), role="build"),
        pkg("pathspec", build=("flit-core",), role="build"),
        pkg("flit-core", build=(), role="build", tool={"backend-path": ["."]}),
    )
    result = order(lock)
    pos = {d: i for i, d in enumerate(result)}
    assert sorted(result) == ["app", "flit-core", "hatchling", "packaging", "pathspec"]
    assert pos["flit-core"] < pos["hatchling"] < pos["app"]
    assert pos["packaging"] < pos["app"] and pos["pathspec"] < pos["app"]
    # ties are broken by name: everything after flit-core that only needs flit-core
    assert result == ["flit-core", "hatchling", "packaging", "pathspec", "app"]


def test_ties_broken_by_name_when_nothing_depends() -> None:
    assert order(lock_of(pkg("zeta"), pkg("alpha"), pkg("mid"))) == ["alpha", "mid", "zeta"]


def test_cycle_among_build_requirements_is_named() -> None:
    lock = lock_of(
        pkg("a", build=("b",)),
        pkg("b", deps=("c",), build=()),
        pkg("c", build=("a",)),
    )
    with pytest.raises(PullError, match=r"cycle.*: a -> c -> a \(") as info:
        order(lock)
    assert "overlay" in str(info.value)


def test_flit_core_building_itself_is_not_a_cycle_but_others_are() -> None:
    assert order(lock_of(pkg("flit-core", build=("flit-core",)))) == ["flit-core"]
    with pytest.raises(PullError, match=r"selfish -> selfish"):
        order(lock_of(pkg("selfish", build=("selfish",))))


def test_unlocked_build_requirements_are_ignored() -> None:
    assert order(lock_of(pkg("app", build=("setuptools>=61",)))) == ["app"]


def test_requirement_picks_the_locked_version_it_allows() -> None:
    old = pkg("tool", "1.0", build=("app",))
    new = pkg("tool", "2.0")
    old = LockedPackage(old.name, old.version, old.source, tool={**old.tool, "dir": "tool-1.0"})
    new = LockedPackage(new.name, new.version, new.source, tool={**new.tool, "dir": "tool-2.0"})
    app = pkg("app", build=("tool>=2",))
    assert build_order(lock_of(old, new, app), {"app": ["tool>=2"], "tool-1.0": ["app"]}) == [
        "tool-2.0",
        "app",
        "tool-1.0",
    ]


def test_fields_from_the_tree_when_the_lock_has_none(tmp_path: Path) -> None:
    tree = tmp_path / "legacy"
    (tree / "src").mkdir(parents=True)
    (tree / "setup.py").write_text(
        "from setuptools import setup, Extension\nsetup(ext_modules=[Extension('x', ['x.c'])])\n"
    )
    modern = tmp_path / "modern"
    modern.mkdir()
    (modern / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["flit_core>=3.4"]\nbuild-backend = "flit_core.buildapi"\n'
        'backend-path = ["."]\n'
    )
    lock = lock_of(pkg("legacy", build=None), pkg("modern", build=None))
    data = workspace_data(lock, {"legacy": tree, "modern": modern})
    legacy, mod = data["packages"]["legacy"], data["packages"]["modern"]
    assert legacy["build-backend"] == "setuptools.build_meta:__legacy__"
    assert legacy["build-requires"] == ["setuptools>=40.8.0"]
    assert legacy["c-extension"] is True and legacy["c-extension-source"] == "detected"
    assert mod["build-backend"] == "flit_core.buildapi"
    assert mod["build-requires"] == ["flit_core>=3.4"]
    assert mod["backend-path"] == ["."]
    assert mod["c-extension"] is False


def test_overlay_fields_win_and_are_carried(tmp_path: Path) -> None:
    tree = tmp_path / "native"
    tree.mkdir()
    (tree / "speedup.c").write_text("int x;\n")
    lock = lock_of(
        pkg(
            "native",
            tool={
                "c-extension": False,
                "cross-compile": True,
                "system-libraries": {"debian": ["libssl-dev"]},
                "build-env": {"CFLAGS": "-O2"},
            },
        )
    )
    entry = workspace_data(lock, {"native": tree})["packages"]["native"]
    assert entry["c-extension"] is False and entry["c-extension-source"] == "overlay"
    assert entry["cross-compile"] is True
    assert entry["system-libraries"] == {"debian": ["libssl-dev"]}
    assert entry["build-env"] == {"CFLAGS": "-O2"}


@pytest.mark.parametrize("name", ["a.c", "b.cpp", "c.cc", "d.pyx", "lib.rs"])
def test_detect_c_extension_by_source_suffix(tmp_path: Path, name: str) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    assert not detect_c_extension(tmp_path)
    (tmp_path / "pkg" / "sub" / name).write_text("")
    assert detect_c_extension(tmp_path)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["pkg/mod.py", "README"], False),
        (["pkg/mod.py", "src/fast.c"], True),
        (["__pycache__/x.c", ".git/hooks/y.cpp", "pkg/.hg/z.pyx"], False),  # not looked in
        (["pkg/__pycache__.c"], True),  # only a directory of that name is skipped
    ],
)
def test_detect_c_extension_from_a_listing_agrees_with_the_walk(
    tmp_path: Path, files: list[str], expected: bool
) -> None:
    """pull passes the paths it has just hashed; the answer is the walk's."""
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    assert detect_c_extension(tmp_path) is expected
    assert detect_c_extension(tmp_path, files) is expected
    assert detect_c_extension(tmp_path, []) is False  # the listing is read, not the tree


def test_render_is_deterministic_and_parses_back(tmp_path: Path) -> None:
    lock = lock_of(pkg("b", build=("a",)), pkg("a", tool={"build-env": {"Z": "1", "A": "2"}}))
    text = render(workspace_data(lock, {}))
    assert text == render(workspace_data(lock_of(*reversed(lock.packages)), {}))
    data = tomllib.loads(text)
    assert data["format"] == 1
    assert data["build-order"] == ["a", "b"]
    assert list(data["packages"]) == ["a", "b"]
    assert data["packages"]["b"]["build-requires"] == ["a"]
    assert text.startswith("# Generated by `monorepo pull`")
    assert "Do not edit by hand" in text


def test_read_workspace_reads_what_render_writes(tmp_path: Path) -> None:
    """workspace.toml has one writer (render) and one reader (read_workspace): build's."""
    lock = lock_of(pkg("app", deps=("lib",), build=("flit-core",)), pkg("lib"), pkg("flit-core"))
    data = workspace_data(lock, {})
    (tmp_path / "workspace.toml").write_text(render(data))
    order, packages = read_workspace(tmp_path)
    assert order == data["build-order"]
    assert {d: dict(entry) for d, entry in packages.items()} == data["packages"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "format = 2\nbuild-order = []\n[packages]\n",
            "has format 2, this monorepo reads format 1",
        ),
        ('format = 1\nbuild-order = ["a"]\n[packages]\n', "is inconsistent"),
        ("format = [\n", "cannot be read"),
    ],
)
def test_read_workspace_refuses_what_it_cannot_use(tmp_path: Path, text: str, reason: str) -> None:
    (tmp_path / "workspace.toml").write_text(text)
    with pytest.raises(ValueError, match=reason):
        read_workspace(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_workspace(tmp_path / "none")


def test_a_tree_without_build_fields_in_the_lock_gets_pep_518_defaults(tmp_path: Path) -> None:
    """The lock lacks build fields: the tree's pyproject.toml is read by the one reader,
    with the defaults the lock itself would record (project.pyproject)."""
    tree = tmp_path / "lib"
    tree.mkdir()
    (tree / "pyproject.toml").write_text('[build-system]\nbuild-backend = "flit_core.buildapi"\n')
    entry = workspace_data(lock_of(pkg("lib", build=None)), {"lib": tree})["packages"]["lib"]
    assert entry["build-backend"] == "flit_core.buildapi"
    assert entry["build-requires"] == list(DEFAULT_REQUIRES)
    (tree / "pyproject.toml").write_text('[build-system]\nrequires = "flit_core"\n')
    with pytest.raises(PullError, match=r"lib 1\.0: \[build-system\] .* wrong type"):
        workspace_data(lock_of(pkg("lib", build=None)), {"lib": tree})
