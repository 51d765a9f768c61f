"""The resolver's vocabulary: requirements, candidates, the finder protocol, the policy.

Kept apart from :mod:`monorepo.resolve.resolver` so that the search, the proof of a
conflict (:mod:`monorepo.resolve.proof`) and its explanation
(:mod:`monorepo.resolve.explain`) share one set of types without importing each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName
from packaging.version import Version

from monorepo.project.config import PrereleasePolicy

VIRTUAL_PREFIX = ":"


#: What a finder is asked to read ahead: a project, the extras wanted of it, and the
#: versions the asking requirement allows (an empty specifier allows any).
Wanted = tuple[NormalizedName, frozenset[str], SpecifierSet]


@dataclass(frozen=True)
class Req:
    """A requirement as the resolver sees it: markers already evaluated away.

    ``origin`` is a human description of who asked (``"project"``,
    ``"requests 2.31.0"``) kept for conflict explanations.
    """

    name: NormalizedName
    specifier: SpecifierSet = field(default_factory=SpecifierSet)
    extras: frozenset[str] = frozenset()
    url: str | None = None
    origin: str = "project"

    @property
    def identifier(self) -> str:
        return identifier_for(self.name, self.extras)

    @property
    def pinned(self) -> bool:
        """True for ``==X`` / ``===X`` without wildcard: such a pin may select a yanked release."""
        return any(
            s.operator in ("==", "===") and not s.version.endswith(".*") for s in self.specifier
        )

    def __str__(self) -> str:
        extras = f"[{','.join(sorted(self.extras))}]" if self.extras else ""
        if self.url:  # a source's URL may come with a dependent's specifier: show both
            return f"{self.name}{extras}{self.specifier} @ {self.url}"
        return f"{self.name}{extras}{self.specifier}"


def identifier_for(name: str, extras: Iterable[str] = ()) -> str:
    extras = sorted(extras)
    return f"{name}[{','.join(extras)}]" if extras else name


@dataclass(frozen=True)
class Candidate:
    """One concrete choice: a version of a package (plus the extras it stands for).

    ``source`` is opaque to the resolver: the finder's record of where this
    version comes from (index files, a git commit, an archive URL).
    """

    name: NormalizedName
    version: Version
    extras: frozenset[str] = frozenset()
    source: object = None
    yanked: bool = False
    url: str | None = None  # for direct references: the URL it satisfies

    @property
    def identifier(self) -> str:
        return identifier_for(self.name, self.extras)

    def __str__(self) -> str:
        return f"{self.identifier} {self.version}"


@dataclass(frozen=True)
class Dependencies:
    """What a finder says about one candidate's metadata."""

    requires: tuple[Requirement, ...]
    requires_python: SpecifierSet | None = None


class Finder(Protocol):
    """Where candidates come from (the index client, git sources, an archive URL)."""

    def versions(self, name: NormalizedName, url: str | None) -> Sequence[Version]:
        """Every version of *name* that may be a candidate, any order; cheap (no per-file work).

        With *url*, the one version that a direct reference names.
        """
        ...

    def candidate(
        self, name: NormalizedName, version: Version, url: str | None
    ) -> Candidate | None:
        """*version* of *name* as a candidate for this target, None when it is unusable.

        Filtering by requires-python, exclude-newer and platform happens here, and only
        for the versions the resolver actually reaches (it asks newest first).
        """
        ...

    def dependencies(self, candidate: Candidate) -> Dependencies:
        """The candidate's core metadata (``Requires-Dist``, ``Requires-Python``)."""
        ...

    def prefetch(self, wanted: Iterable[Wanted]) -> None:
        """Hint: these projects (with these extras, in these versions) will probably be
        asked for soon."""
        ...

    def prefetch_dependencies(self, candidates: Iterable[Candidate]) -> None:
        """Hint: the metadata of these candidates will probably be asked for soon."""
        ...

    def metadata_is_cheap(self, candidate: Candidate) -> bool:
        """Whether reading this candidate's metadata is cheap: no build of an sdist.

        The resolver asks before reading an old version's metadata, so that a conflict
        the versions already seen prove is reported instead of building a 2012 sdist.
        """
        ...

    def sourceless(self, name: NormalizedName) -> Sequence[Version]:
        """Versions :meth:`candidate` passed over because they have nothing to vendor.

        A release offered only as wheels (and given no source by an overlay) cannot be
        pulled into duni/; conflict messages name these so the user knows why a version
        that pip would install is not taken.
        """
        ...


@dataclass(frozen=True)
class Policy:
    """The knobs of a resolution that are not requirements."""

    environment: Mapping[str, str]
    python_version: Version
    prereleases: PrereleasePolicy = "if-necessary"
    exclude_newer: datetime | None = None
    constraints: tuple[Requirement, ...] = ()
    overrides: tuple[Requirement, ...] = ()
    preferred: Mapping[NormalizedName, Version] = field(default_factory=dict)
    sources: Mapping[NormalizedName, str] = field(default_factory=dict)  # name -> direct URL


@dataclass(frozen=True)
class Scope:
    """A root scope of the project: its dependencies, one extra, or one group."""

    kind: Literal["project", "extra", "group"]
    name: str
    requirements: tuple[Requirement, ...]
    #: who asks, in conflict explanations, when not the project itself (a build's requirements)
    description: str | None = None
    #: where a build's requirements come from (an sdist's pyproject.toml, an overlay rule)
    origin: str = ""

    @property
    def identifier(self) -> str:
        return VIRTUAL_PREFIX + (
            self.kind if self.kind == "project" else f"{self.kind}:{self.name}"
        )

    @property
    def label(self) -> str:
        if self.description is not None:
            return self.description
        return (
            "the project" if self.kind == "project" else f"the project's {self.kind} '{self.name}'"
        )


@dataclass(frozen=True)
class Resolution:
    """The outcome for one target: chosen candidates and who reaches whom."""

    packages: dict[NormalizedName, Candidate]
    #: package -> sorted names of the packages it depends on (in this target)
    edges: dict[NormalizedName, tuple[NormalizedName, ...]]
    #: package -> the scopes whose requirements reach it
    scopes: dict[NormalizedName, frozenset[str]]
    #: package -> requires-python from its metadata
    requires_python: dict[NormalizedName, SpecifierSet | None]
