"""The resolver's rules, one data file per case, on an in-memory finder (no I/O at all).

Each ``tests/resolver_cases/*.json`` holds an index, the project's scopes, the targets,
the ``[tool.monorepo]`` options and the expected outcome per target: the exact set of
pins, or fragments the conflict message must contain.  Every case is also run with the
finder answering in shuffled orders, and must give the same pins and the same message
byte for byte: a lock may not depend on the order an index lists versions in.

The keys of a case file (unknown keys are an error, so a typo cannot silence a check):

- ``description``: what the case shows (required);
- ``index``: ``{project: {version: release}}``, a release being ``{}`` or a table of
  ``dependencies`` (PEP 508 strings, markers allowed), ``extras`` (``{extra: [PEP 508]}``,
  written into ``Requires-Dist`` with ``extra == ...`` as metadata does),
  ``requires-python``, ``yanked`` (bool), ``upload-time`` (RFC 3339), ``sdist`` (bool,
  false: wheels only), ``wheels`` (bool, false: sdist only, its metadata needs a build),
  ``metadata-error`` (reading its metadata fails with this message);
- ``direct``: ``{url: release + name + version}``, what a direct reference points at;
- ``project``, ``extras``, ``groups``: the root scopes (PEP 508 strings);
- ``targets``: names from :data:`TARGETS` or ``[tool.monorepo] targets`` tables
  (default ``["linux"]``), resolved in order like ``monorepo lock``;
- ``options``: ``prereleases``, ``exclude-newer``, ``constraints``, ``overrides``,
  ``preferred`` (``{name: version}``, an earlier lock), ``sources`` (``{name: url}``);
- ``resolved``: ``{target: {name: version}}``, the whole set of pins;
- ``errors``: ``{target: [fragment, ...]}``; every target is in exactly one of the two;
- ``yanked``: ``{target: [name]}``, the pins that are yanked releases (default none);
- ``scopes``: ``{target: {name: [scope id]}}``, which scopes reach these packages;
- ``edges``: ``{target: {name: [name]}}``, these packages' dependencies;
- ``xfail``: a reason, for a case that shows a known bug.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from tests.memfinder import (
    Finder,
    MemFinder,
    MemIndex,
    MemRelease,
    Options,
    Outcome,
    Policy,
    PrereleasePolicy,
    ResolutionError,
    Scope,
    Target,
    parse_target,
    resolve,
    resolve_targets,
    scopes,
)

CASES = Path(__file__).parent / "resolver_cases"

#: Target presets a case names instead of writing a table.
TARGETS: dict[str, Target] = {
    "linux": Target("linux", "3.11", "linux", "x86_64"),
    "linux-aarch64": Target("linux-aarch64", "3.11", "linux", "aarch64"),
    "linux-py312": Target("linux-py312", "3.12", "linux", "x86_64"),
    "windows": Target("windows", "3.11", "windows", "AMD64"),
    "macos": Target("macos", "3.12", "darwin", "arm64"),
}

#: The orders the finder answers in: as listed in the file, then shuffled by seed.
SEEDS: tuple[int | None, ...] = (None, 1, 2, 3, 4, 5)

_CASE_KEYS = {
    "description",
    "index",
    "direct",
    "project",
    "extras",
    "groups",
    "targets",
    "options",
    "resolved",
    "errors",
    "yanked",
    "scopes",
    "edges",
    "xfail",
}
_RELEASE_KEYS = {
    "dependencies",
    "extras",
    "requires-python",
    "yanked",
    "upload-time",
    "sdist",
    "wheels",
    "metadata-error",
}
_OPTION_KEYS = {"prereleases", "exclude-newer", "constraints", "overrides", "preferred", "sources"}


# -- no sockets ------------------------------------------------------------------


class _NoSocket(socket.socket):
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("the resolver tests must not open sockets")


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any socket opened during these tests fails the test (the finder is in memory)."""
    monkeypatch.setattr(socket, "socket", _NoSocket)


def test_the_socket_guard_works() -> None:
    with pytest.raises(AssertionError, match="must not open sockets"):
        socket.create_connection(("127.0.0.1", 9))


# -- loading a case ----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    description: str
    index: MemIndex
    roots: list[Scope]
    targets: list[Target]
    options: Options
    resolved: dict[str, dict[str, str]]
    errors: dict[str, list[str]]
    yanked: dict[str, list[str]] = field(default_factory=dict)
    scopes: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    edges: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    xfail: str | None = None


def _unknown(where: str, data: Mapping[str, Any], known: set[str]) -> None:
    extra = sorted(set(data) - known)
    assert not extra, f"{where}: unknown keys {extra}"


def _time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"{value}: give an offset (Z)"
    return parsed


def _requirements(values: Sequence[str]) -> tuple[Requirement, ...]:
    return tuple(Requirement(v) for v in values)


def _release(where: str, name: str, version: str, data: Mapping[str, Any]) -> MemRelease:
    _unknown(where, data, _RELEASE_KEYS)
    requires = list(_requirements(data.get("dependencies", [])))
    for extra, values in data.get("extras", {}).items():
        for req in _requirements(values):
            # as a build backend writes an extra into Requires-Dist
            marker = f"extra == '{extra}'"
            req.marker = Marker(f"({req.marker}) and {marker}" if req.marker else marker)
            requires.append(req)
    rp = data.get("requires-python")
    upload = data.get("upload-time")
    return MemRelease(
        name=canonicalize_name(name),
        version=Version(version),
        requires=tuple(requires),
        requires_python=SpecifierSet(rp) if rp is not None else None,
        yanked=bool(data.get("yanked", False)),
        upload_time=_time(upload) if upload is not None else None,
        sdist=bool(data.get("sdist", True)),
        wheels=bool(data.get("wheels", True)),
        metadata_error=data.get("metadata-error"),
    )


def _target(where: str, value: object) -> Target:
    if isinstance(value, str):
        assert value in TARGETS, f"{where}: no target preset {value!r}"
        return TARGETS[value]
    return parse_target(value, where=where)


def load_case(path: Path) -> Case:
    data = json.loads(path.read_text(encoding="utf-8"))
    where = path.name
    _unknown(where, data, _CASE_KEYS)
    assert data.get("description"), f"{where}: say what the case shows"
    projects: dict[NormalizedName, list[MemRelease]] = {}
    for name, releases in data.get("index", {}).items():
        projects[canonicalize_name(name)] = [
            _release(f"{where}: {name} {v}", name, v, r) for v, r in releases.items()
        ]
    direct = {}
    for url, value in data.get("direct", {}).items():
        rest = {k: v for k, v in value.items() if k not in ("name", "version")}
        direct[url] = _release(f"{where}: {url}", value["name"], value["version"], rest)
    options = data.get("options", {})
    _unknown(f"{where}: options", options, _OPTION_KEYS)
    exclude_newer = options.get("exclude-newer")
    targets = [
        _target(f"{where}: targets[{i}]", t) for i, t in enumerate(data.get("targets", ["linux"]))
    ]
    resolved = data.get("resolved", {})
    errors = data.get("errors", {})
    names = [t.name for t in targets]
    assert len(set(names)) == len(names), f"{where}: duplicate target names"
    for name in names:
        assert (name in resolved) != (name in errors), (
            f"{where}: target {name!r} must be in exactly one of 'resolved' and 'errors'"
        )
    for key in ("resolved", "errors", "yanked", "scopes", "edges"):
        stray = set(data.get(key, {})) - set(names)
        assert not stray, f"{where}: {key} names targets {sorted(stray)} the case does not have"
    return Case(
        description=data["description"],
        index=MemIndex(projects, direct),
        roots=scopes(
            _requirements(data.get("project", [])),
            {k: _requirements(v) for k, v in data.get("extras", {}).items()},
            {k: _requirements(v) for k, v in data.get("groups", {}).items()},
        ),
        targets=targets,
        options=Options(
            prereleases=cast(PrereleasePolicy, options.get("prereleases", "if-necessary")),
            exclude_newer=_time(exclude_newer) if exclude_newer is not None else None,
            constraints=_requirements(options.get("constraints", [])),
            overrides=_requirements(options.get("overrides", [])),
            preferred={
                canonicalize_name(k): Version(v) for k, v in options.get("preferred", {}).items()
            },
            sources={canonicalize_name(k): v for k, v in options.get("sources", {}).items()},
        ),
        resolved=resolved,
        errors=errors,
        yanked=data.get("yanked", {}),
        scopes=data.get("scopes", {}),
        edges=data.get("edges", {}),
        xfail=data.get("xfail"),
    )


def _case_params() -> Iterator[Any]:
    for path in sorted(CASES.glob("*.json")):
        case = load_case(path)
        marks = [pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else []
        yield pytest.param(case, id=path.stem, marks=marks)


# -- running a case ---------------------------------------------------------------


def _fingerprint(outcomes: Mapping[str, Outcome]) -> dict[str, object]:
    """Everything a lock takes from a resolution, comparable across runs."""
    out: dict[str, object] = {}
    for target, o in outcomes.items():
        if o.resolution is None:
            out[target] = o.error
            continue
        res = o.resolution
        out[target] = (
            o.pins,
            sorted(n for n, c in res.packages.items() if c.yanked),
            {n: sorted(s) for n, s in res.scopes.items()},
            res.edges,
            {n: str(s) for n, s in res.requires_python.items()},
        )
    return out


def _check(case: Case, outcomes: Mapping[str, Outcome]) -> None:
    for target in case.targets:
        o = outcomes[target.name]
        if target.name in case.errors:
            assert o.error is not None, f"{target.name}: expected a conflict, got {o.pins}"
            for fragment in case.errors[target.name]:
                assert fragment in o.error, f"{target.name}: {fragment!r} not in:\n{o.error}"
            continue
        assert o.error is None, f"{target.name}: {o.error}"
        assert o.resolution is not None
        assert o.pins == case.resolved[target.name], f"{target.name}: got {o.pins}"
        yanked = sorted(n for n, c in o.resolution.packages.items() if c.yanked)
        assert yanked == sorted(case.yanked.get(target.name, [])), target.name
        for name, want in case.scopes.get(target.name, {}).items():
            got = o.resolution.scopes[canonicalize_name(name)]
            assert sorted(got) == sorted(want), f"{target.name}: scopes of {name}"
        for name, deps in case.edges.get(target.name, {}).items():
            got_edges = o.resolution.edges.get(canonicalize_name(name), ())
            assert list(got_edges) == sorted(deps), f"{target.name}: edges of {name}"


@pytest.mark.parametrize("case", list(_case_params()))
def test_case(case: Case) -> None:
    runs = {
        seed: resolve_targets(case.index, case.roots, case.targets, case.options, seed=seed)
        for seed in SEEDS
    }
    _check(case, runs[None])
    first = _fingerprint(runs[None])
    for seed in SEEDS[1:]:
        assert _fingerprint(runs[seed]) == first, f"answer order (seed {seed}) changed the result"


# -- what data cannot say well ----------------------------------------------------------


def _index(**projects: dict[str, Sequence[str]]) -> MemIndex:
    """``_index(lib={"1.0": ["dep>=1"]})``: releases with their dependencies only."""
    return MemIndex(
        {
            canonicalize_name(name): [
                MemRelease(canonicalize_name(name), Version(v), _requirements(deps))
                for v, deps in releases.items()
            ]
            for name, releases in projects.items()
        }
    )


def _policy(target: Target, **kw: Any) -> Policy:
    env = target.marker_environment()
    return Policy(environment=env, python_version=Version(env["python_full_version"]), **kw)


def _roots(*requirements: str) -> list[Scope]:
    return scopes(_requirements(requirements), {}, {})


def test_the_finder_is_asked_only_about_the_versions_the_resolver_reaches() -> None:
    """find_matches is lazy: of 300 releases only the newest admitted one is looked at
    (each look is file checks on a real index), and only its metadata is read."""
    versions = [f"1.{i}" for i in range(300)]
    index = _index(lib={v: [] for v in versions}, app={"1.0": ["lib<1.200"]})
    target = TARGETS["linux"]
    finder: Finder = MemFinder(index, target, seed=7)
    resolution = resolve(_roots("app"), finder, _policy(target))
    assert resolution.packages[canonicalize_name("lib")].version == Version("1.199")
    assert isinstance(finder, MemFinder)
    asked = [(str(n), str(v)) for n, v, _ in finder.candidate_calls]
    assert sorted(asked) == [("app", "1.0"), ("lib", "1.199")]
    assert sorted(str(c) for c in finder.dependency_calls) == ["app 1.0", "lib 1.199"]


def test_the_finder_gets_read_ahead_hints_for_the_roots_and_each_pin() -> None:
    index = _index(app={"1.0": ["lib>=1"]}, lib={"1.0": [], "2.0": []})
    target = TARGETS["linux"]
    finder = MemFinder(index, target)
    resolve(_roots("app"), finder, _policy(target))
    hinted = {(str(n), str(s)) for n, _, s in finder.prefetched}
    assert ("app", "") in hinted and ("lib", ">=1") in hinted
    assert not any(n.startswith(":") for n, _, _ in finder.prefetched)
    assert {str(c) for c in finder.prefetched_candidates} >= {"app 1.0", "lib 2.0"}


def test_backtracking_through_many_versions() -> None:
    """a N needs b==N, b N needs c==N, and the project caps c: 60 versions of a and b are
    ruled out one by one before a 1 / b 1 / c 1 is found."""
    n = 60
    index = _index(
        a={f"{i}.0": [f"b=={i}.0"] for i in range(1, n + 1)},
        b={f"{i}.0": [f"c=={i}.0"] for i in range(1, n + 1)},
        c={f"{i}.0": [] for i in range(1, n + 1)},
    )
    target = TARGETS["linux"]
    for seed in (None, 3):
        resolution = resolve(
            _roots("a", "c<2"), MemFinder(index, target, seed=seed), _policy(target)
        )
        assert {str(n): str(c.version) for n, c in resolution.packages.items()} == {
            "a": "1.0",
            "b": "1.0",
            "c": "1.0",
        }


def _chain(wheels: bool) -> MemIndex:
    """a==i needs b==i needs c==i, 30 versions each: a cap on c sends a search through all."""
    index = _index(
        a={f"{i}.0": [f"b=={i}.0"] for i in range(1, 31)},
        b={f"{i}.0": [f"c=={i}.0"] for i in range(1, 31)},
        c={f"{i}.0": [] for i in range(1, 31)},
    )
    return MemIndex(
        {n: [replace(r, wheels=wheels) for r in rs] for n, rs in index.projects.items()}
    )


def test_too_much_backtracking_is_a_resolution_error() -> None:
    """Only sdists, whose metadata needs a build: the proof reads none, the search gives up."""
    target = TARGETS["linux"]
    with pytest.raises(ResolutionError, match="took too long") as info:
        resolve(
            _roots("a", "c<2"), MemFinder(_chain(False), target), _policy(target), max_rounds=10
        )
    assert "constraint" in str(info.value)


def test_the_proof_spares_the_search_its_backtracking() -> None:
    """With cheap metadata, the proof rules out a, b 2.0 to 30.0 at the first backtrack,
    and the search that follows takes a 1.0 in a handful of rounds."""
    target = TARGETS["linux"]
    finder = MemFinder(_chain(True), target)
    found = resolve(_roots("a", "c<2"), finder, _policy(target), max_rounds=10)
    assert {n: str(c.version) for n, c in found.packages.items()} == {
        "a": "1.0",
        "b": "1.0",
        "c": "1.0",
    }


def test_requires_python_of_the_chosen_versions_is_recorded() -> None:
    release = MemRelease(
        canonicalize_name("lib"), Version("2.0"), requires_python=SpecifierSet(">=3.10")
    )
    index = MemIndex(
        {
            canonicalize_name("lib"): [
                MemRelease(canonicalize_name("lib"), Version("1.0"), requires_python=None),
                release,
            ],
            canonicalize_name("plain"): [MemRelease(canonicalize_name("plain"), Version("1"))],
        }
    )
    target = TARGETS["linux"]
    resolution = resolve(_roots("lib", "plain"), MemFinder(index, target), _policy(target))
    assert resolution.requires_python == {
        canonicalize_name("lib"): SpecifierSet(">=3.10"),
        canonicalize_name("plain"): None,
    }


def test_a_case_file_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    """A misspelt expectation ("resolvd") must fail loudly rather than check nothing."""
    path = tmp_path / "typo.json"
    path.write_text(
        json.dumps({"description": "x", "project": [], "resolvd": {"linux": {}}}),
        encoding="utf-8",
    )
    with pytest.raises(AssertionError, match="unknown keys"):
        load_case(path)


def test_a_proven_conflict_reads_no_sdist_metadata() -> None:
    """The case's old pygments sdists are never asked for metadata (no build to learn it),
    in any answer order, and the error carries the same explanation as data."""
    case = load_case(CASES / "conflict-proven-without-building.json")
    for seed in SEEDS:
        outcome = resolve_targets(case.index, case.roots, case.targets, case.options, seed=seed)[
            "linux"
        ]
        assert outcome.error is not None
        assert not [c for c in outcome.finder.dependency_calls if c.name == "pygments"], seed
    target = TARGETS["linux"]
    with pytest.raises(ResolutionError) as info:
        resolve(case.roots, MemFinder(case.index, target), _policy(target), target="linux")
    data = info.value.explanation
    assert data is not None and data["package"] == "rich" and data["target"] == "linux"
    causes = cast(list[dict[str, Any]], data["causes"])
    assert {
        k: causes[1][k] for k in ("package", "requirement")
    } == {"package": "pygments", "requirement": "pygments<2"}
    assert any(c["requirer"].get("name") == "rich" and c.get("excluded") for c in causes)
    assert data["fixes"] and "for target linux" in str(info.value)
