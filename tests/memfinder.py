"""An in-memory :class:`~monorepo.resolve.resolver.Finder` and the lock's per-target loop around it.

The resolver is written against the ``Finder`` protocol so that its rules can be tested
without an index, a cache or a socket; this module is that test double.  It is a
faithful finder, not a stub: it does what :class:`monorepo.resolve.finder.IndexFinder` is
responsible for (dropping releases whose requires-python excludes the target's Python,
releases uploaded after exclude-newer, releases with no source to vendor; flagging
yanked ones) and nothing the resolver is responsible for (markers, extras, prereleases,
skipping yanked releases, constraints, overrides, preferences), so the resolver's rules
are exercised for real.  ``IndexFinder`` keeps those filters inside methods over index
files, not as pure functions, so the few lines are mirrored here rather than shared.

A finder may answer in any order ("every version ..., any order"), so :class:`MemFinder`
can shuffle the versions and each release's ``Requires-Dist`` with a seed: a correct
resolver gives the same answer whatever the seed.

Every ``monorepo`` name the resolver tests use is imported here and nowhere else, so a
move of the resolver module changes one import block.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypeVar

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName
from packaging.version import Version

from monorepo.errors import MetadataError, ResolutionError
from monorepo.locking.document import prefer_previous
from monorepo.project.config import PrereleasePolicy
from monorepo.project.targets import Target, parse_target
from monorepo.resolve.resolver import (
    Candidate,
    Dependencies,
    Finder,
    Policy,
    Resolution,
    Scope,
    Wanted,
    resolve,
)

T = TypeVar("T")

__all__ = [
    "Candidate",
    "Finder",
    "MemFinder",
    "MemIndex",
    "MemRelease",
    "Options",
    "Outcome",
    "Policy",
    "PrereleasePolicy",
    "Resolution",
    "ResolutionError",
    "Scope",
    "Target",
    "parse_target",
    "resolve",
    "resolve_targets",
    "scopes",
]


@dataclass(frozen=True)
class MemRelease:
    """One version of a project as an index and its core metadata would describe it.

    ``requires`` is ``Requires-Dist`` as written (markers, ``extra == ...`` and all).
    ``requires_python`` stands for both the index's ``data-requires-python`` (which the
    finder filters on) and the metadata's ``Requires-Python`` (which the resolution
    records).  ``sdist=False`` is a release uploaded only as wheels.
    """

    name: NormalizedName
    version: Version
    requires: tuple[Requirement, ...] = ()
    requires_python: SpecifierSet | None = None
    yanked: bool = False
    upload_time: datetime | None = None
    sdist: bool = True
    #: False: no wheel, so reading its metadata means building the sdist (not cheap)
    wheels: bool = True
    #: reading its metadata fails with this message (a build that breaks)
    metadata_error: str | None = None


@dataclass(frozen=True)
class MemIndex:
    """Projects by name, and the releases direct references (``name @ url``) point at."""

    projects: Mapping[NormalizedName, Sequence[MemRelease]]
    direct: Mapping[str, MemRelease] = field(default_factory=dict)


class MemFinder:
    """The :class:`~monorepo.resolve.resolver.Finder` over a :class:`MemIndex` for one target.

    It records what the resolver asked (``candidate_calls``, ``dependency_calls``,
    ``prefetched``) so tests can check the resolver's laziness and hints.
    """

    def __init__(
        self,
        index: MemIndex,
        target: Target,
        *,
        exclude_newer: datetime | None = None,
        seed: int | None = None,
    ) -> None:
        self.index = index
        self.target = target
        self.exclude_newer = exclude_newer
        self.python = Version(target.marker_environment()["python_full_version"])
        self._random = random.Random(seed) if seed is not None else None
        self._sourceless: dict[NormalizedName, set[Version]] = {}
        self._given: set[Candidate] = set()
        self.candidate_calls: list[tuple[NormalizedName, Version, str | None]] = []
        self.dependency_calls: list[Candidate] = []
        self.prefetched: list[Wanted] = []
        self.prefetched_candidates: list[Candidate] = []

    def _shuffled(self, items: Iterable[T]) -> list[T]:
        out = list(items)
        if self._random is not None:
            self._random.shuffle(out)
        return out

    def _direct(self, name: NormalizedName, url: str) -> MemRelease:
        release = self.index.direct[url]
        assert release.name == name, f"{url} holds {release.name}, not {name}"
        return release

    def _release(self, name: NormalizedName, version: Version, url: str | None) -> MemRelease:
        if url is not None:
            return self._direct(name, url)
        for release in self.index.projects.get(name, ()):
            if release.version == version:
                return release
        raise AssertionError(
            f"the resolver asked for {name} {version}, which versions() never offered"
        )

    # -- Finder protocol --------------------------------------------------
    def versions(self, name: NormalizedName, url: str | None) -> Sequence[Version]:
        if url is not None:
            return (self._direct(name, url).version,)
        return self._shuffled(r.version for r in self.index.projects.get(name, ()))

    def candidate(
        self, name: NormalizedName, version: Version, url: str | None
    ) -> Candidate | None:
        self.candidate_calls.append((name, version, url))
        release = self._release(name, version, url)
        if release.version != version:
            return None
        if url is None:
            # IndexFinder._usable: requires-python, exclude-newer (a file without an
            # upload time is excluded once a cutoff is set), and a source to vendor
            if release.requires_python is not None and not release.requires_python.contains(
                self.python, prereleases=True
            ):
                return None
            if self.exclude_newer is not None and (
                release.upload_time is None or release.upload_time > self.exclude_newer
            ):
                return None
            if not release.sdist:
                self._sourceless.setdefault(name, set()).add(version)
                return None
        found = Candidate(
            name=name, version=version, source=release, yanked=release.yanked, url=url
        )
        self._given.add(found)
        return found

    def dependencies(self, candidate: Candidate) -> Dependencies:
        self.dependency_calls.append(candidate)
        release = candidate.source
        assert isinstance(release, MemRelease), f"{candidate} does not come from this finder"
        base = Candidate(
            candidate.name,
            candidate.version,
            source=release,
            yanked=candidate.yanked,
            url=candidate.url,
        )
        assert base in self._given, f"metadata asked for {candidate}, never offered"
        if release.metadata_error is not None:
            raise MetadataError(release.metadata_error)
        return Dependencies(tuple(self._shuffled(release.requires)), release.requires_python)

    def prefetch(self, wanted: Iterable[Wanted]) -> None:
        self.prefetched.extend(wanted)

    def prefetch_dependencies(self, candidates: Iterable[Candidate]) -> None:
        self.prefetched_candidates.extend(candidates)

    def metadata_is_cheap(self, candidate: Candidate) -> bool:
        release = candidate.source
        assert isinstance(release, MemRelease), f"{candidate} does not come from this finder"
        return release.wheels

    def sourceless(self, name: NormalizedName) -> Sequence[Version]:
        return tuple(sorted(self._sourceless.get(name, ())))


@dataclass(frozen=True)
class Options:
    """The project's resolution settings, as ``[tool.monorepo]`` would give them."""

    prereleases: PrereleasePolicy = "if-necessary"
    exclude_newer: datetime | None = None
    constraints: tuple[Requirement, ...] = ()
    overrides: tuple[Requirement, ...] = ()
    preferred: Mapping[NormalizedName, Version] = field(default_factory=dict)
    sources: Mapping[NormalizedName, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """One target's result: a resolution or the message of its :class:`ResolutionError`."""

    resolution: Resolution | None
    error: str | None
    finder: MemFinder

    @property
    def pins(self) -> dict[str, str]:
        assert self.resolution is not None, self.error
        return {str(n): str(c.version) for n, c in self.resolution.packages.items()}


def scopes(
    project: Sequence[Requirement],
    extras: Mapping[str, Sequence[Requirement]],
    groups: Mapping[str, Sequence[Requirement]],
) -> list[Scope]:
    """The root scopes in the order :func:`monorepo.locking.document.scopes_of` builds them."""
    out = [Scope("project", "", tuple(project))]
    out += [Scope("extra", n, tuple(r)) for n, r in sorted(extras.items())]
    out += [Scope("group", n, tuple(r)) for n, r in sorted(groups.items())]
    return out


def resolve_targets(
    index: MemIndex,
    roots: Sequence[Scope],
    targets: Sequence[Target],
    options: Options,
    *,
    seed: int | None = None,
    max_rounds: int = 20000,
) -> dict[str, Outcome]:
    """Resolve each target in turn as ``monorepo lock`` does (lockdoc.resolve_document).

    With a *seed*, the finder answers in shuffled orders and each scope's requirements
    are shuffled too.  Each target has its own finder and policy; a later target prefers what earlier ones
    chose (the lock's own rule, imported), so divergent versions appear only where the
    requirements force them.  A failing target does not stop the others here, so a case
    can say which targets fail.
    """
    if seed is not None:
        # the order of a project's own requirements may not matter either
        rng = random.Random(seed)
        roots = [
            replace(s, requirements=tuple(rng.sample(s.requirements, len(s.requirements))))
            for s in roots
        ]
    outcomes: dict[str, Outcome] = {}
    done: dict[str, Resolution] = {}
    for target in targets:
        finder = MemFinder(index, target, exclude_newer=options.exclude_newer, seed=seed)
        env = target.marker_environment()
        policy = Policy(
            environment=env,
            python_version=Version(env["python_full_version"]),
            prereleases=options.prereleases,
            exclude_newer=options.exclude_newer,
            constraints=options.constraints,
            overrides=options.overrides,
            preferred=prefer_previous(options.preferred, done),
            sources=options.sources,
        )
        try:
            resolution = resolve(roots, finder, policy, max_rounds=max_rounds)
        except ResolutionError as exc:
            outcomes[target.name] = Outcome(None, str(exc), finder)
            continue
        done[target.name] = resolution
        outcomes[target.name] = Outcome(resolution, None, finder)
    return outcomes
