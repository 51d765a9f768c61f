"""Dependency resolution for one target environment, on resolvelib.

The core is resolvelib's backtracking resolver; this module supplies the provider
that knows Python packaging rules (extras, markers evaluated for the *target*,
requires-python, yanked releases, prereleases, exclude-newer, constraints and
overrides) and turns resolvelib's failure into a sentence a user can act on.

Where candidates and metadata come from is behind the :class:`Finder` protocol, so
the same provider serves the index client, git sources and tests alike.  The scopes
of a project (its dependencies, each extra, each dependency group) enter the
resolution as *virtual packages* (``:project:``, ``:extra:x``, ``:group:g``); after
resolution, the graph tells which scopes reach which package, which becomes the
package's ``extras``/``dependency_groups`` marker in the lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version
from resolvelib import AbstractProvider, BaseReporter, ResolutionImpossible, Resolver
from resolvelib.resolvers import RequirementInformation, ResolutionTooDeep

from monorepo.errors import ResolutionError
from monorepo.project.config import PrereleasePolicy
from monorepo.project.targets import evaluate_marker

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


class _Provider(AbstractProvider[Req, Candidate, str]):
    def __init__(self, finder: Finder, policy: Policy, scopes: Sequence[Scope]) -> None:
        self.finder = finder
        self.policy = policy
        self.scopes = {s.identifier: s for s in scopes}
        self.overrides: dict[NormalizedName, list[Requirement]] = {}
        for o in policy.overrides:
            self.overrides.setdefault(canonicalize_name(o.name), []).append(o)
        self.constraints: dict[NormalizedName, SpecifierSet] = {}
        for c in policy.constraints:
            if evaluate_marker(c.marker, policy.environment, ()):
                name = canonicalize_name(c.name)
                self.constraints[name] = self.constraints.get(name, SpecifierSet()) & c.specifier
        self.requires_python: dict[Candidate, SpecifierSet | None] = {}
        self._deps_cache: dict[Candidate, list[Req]] = {}
        # (id(requirement), id(candidate)) -> (requirement, candidate, answer); the
        # entry holds both objects, so neither id can be reused while it is cached.
        self._satisfied: dict[tuple[int, int], tuple[Req, Candidate, bool]] = {}
        self._sorted: dict[tuple[NormalizedName, str | None], list[Version]] = {}

    # -- requirements ---------------------------------------------------
    def convert(
        self, requirements: Iterable[Requirement], origin: str, extras: Iterable[str]
    ) -> list[Req]:
        """Turn PEP 508 requirements into resolver requirements for this target.

        Overrides replace every requirement on their name (uv's semantics), so a
        bad upper bound deep in the graph can be lifted without forking anything.
        """
        extras = tuple(extras)
        out: list[Req] = []
        for req in requirements:
            name = canonicalize_name(req.name)
            replacements: Sequence[Requirement] = self.overrides.get(name, [req])
            for r in replacements:
                marker = r.marker if r is not req else req.marker
                if r is not req and not evaluate_marker(
                    req.marker, self.policy.environment, extras
                ):
                    continue
                if not evaluate_marker(marker, self.policy.environment, extras):
                    continue
                url = r.url or self.policy.sources.get(name)
                out.append(
                    Req(
                        name=name,
                        specifier=r.specifier,
                        extras=frozenset(canonicalize_name(e) for e in r.extras),
                        url=url,
                        origin=origin,
                    )
                )
        return out

    def root_requirements(self) -> list[Req]:
        return [Req(name=NormalizedName(i), origin="root") for i in self.scopes]

    # -- resolvelib protocol ----------------------------------------------
    def identify(self, requirement_or_candidate: Req | Candidate) -> str:
        return requirement_or_candidate.identifier

    def get_preference(
        self,
        identifier: str,
        resolutions: Mapping[str, Candidate],
        candidates: Mapping[str, Iterator[Candidate]],
        information: Mapping[str, Iterator[RequirementInformation[Req, Candidate]]],
        backtrack_causes: Sequence[RequirementInformation[Req, Candidate]],
    ) -> tuple[bool, bool, bool, bool, str]:
        infos = list(information[identifier])
        direct = any(i.requirement.url for i in infos)
        pinned = any(i.requirement.pinned for i in infos)
        in_causes = any(
            c.requirement.identifier == identifier
            or (c.parent and c.parent.identifier == identifier)
            for c in backtrack_causes
        )
        return (
            not identifier.startswith(VIRTUAL_PREFIX),
            not direct,
            not pinned,
            not in_causes,
            identifier,
        )

    def find_matches(
        self,
        identifier: str,
        requirements: Mapping[str, Iterator[Req]],
        incompatibilities: Mapping[str, Iterator[Candidate]],
    ) -> Callable[[], Iterator[Candidate]] | list[Candidate]:
        """The usable candidates, best first, produced lazily.

        Only the versions the specifiers admit are considered, and each one's files are
        looked at (platform tags, requires-python, yanked) only when resolvelib iterates
        that far: usually the first candidate is taken, so a project with thousands of
        files costs a handful of file checks, not thousands.
        """
        if identifier.startswith(VIRTUAL_PREFIX):
            # A scope has one candidate; once backtracking has ruled it out there is none
            # left.  Offering it again made resolvelib pin and reject the same scope until
            # max_rounds whenever two scopes' requirements conflicted directly.
            if any(True for _ in incompatibilities[identifier]):
                return []
            return [Candidate(name=NormalizedName(identifier), version=Version("0"))]
        reqs = list(requirements[identifier])
        bad = {c.version for c in incompatibilities[identifier]}
        name = reqs[0].name if reqs else canonicalize_name(identifier.split("[")[0])
        extras = reqs[0].extras if reqs else frozenset()
        urls = {r.url for r in reqs if r.url}
        if len(urls) > 1:
            return []  # two different direct references cannot both hold
        url = next(iter(urls), None) or self.policy.sources.get(name)
        specifier = SpecifierSet()
        for r in reqs:
            specifier &= r.specifier
        constraint = self.constraints.get(name)
        pinned_versions = {
            v
            for r in reqs
            if r.pinned
            for s in r.specifier
            if s.operator in ("==", "===") and not s.version.endswith(".*")
            if (v := _specifier_version(s.version)) is not None
        }
        newest_first = self._newest_first(name, url)
        preferred = self.policy.preferred.get(name)
        if preferred is not None and preferred in newest_first:
            newest_first = [preferred, *(v for v in newest_first if v != preferred)]

        def admitted() -> Iterator[Version]:
            # checked lazily: resolvelib usually takes the first admitted version
            for v in newest_first:
                if (
                    v not in bad
                    and specifier.contains(v, prereleases=True)
                    and (constraint is None or constraint.contains(v, prereleases=True))
                ):
                    yield v

        policy = self.policy.prereleases
        prereleases_first_class = (
            url is not None
            or policy == "allow"
            or (policy == "if-necessary" and _names_prerelease(specifier, constraint))
        )

        def usable(version: Version) -> Candidate | None:
            found = self.finder.candidate(name, version, url)
            if found is None or (found.yanked and url is None and version not in pinned_versions):
                return None
            return Candidate(
                name=found.name,
                version=found.version,
                extras=extras,
                source=found.source,
                yanked=found.yanked,
                url=found.url,
            )

        def matches() -> Iterator[Candidate]:
            held_back: list[Version] = []
            any_final = False
            for version in admitted():
                if version.is_prerelease and not prereleases_first_class:
                    held_back.append(version)
                    continue
                found = usable(version)
                if found is not None:
                    if not any_final:
                        # the best candidate's metadata is almost certainly needed next
                        self.finder.prefetch_dependencies([found])
                    any_final = True
                    yield found
            # if-necessary: prereleases only when no final release fits (PEP 440's rule)
            if not any_final and policy == "if-necessary":
                for version in held_back:
                    found = usable(version)
                    if found is not None:
                        yield found

        return matches

    def _newest_first(self, name: NormalizedName, url: str | None) -> list[Version]:
        """The finder's versions of *name*, newest first, sorted once per resolution."""
        key = (name, url)
        cached = self._sorted.get(key)
        if cached is None:
            cached = self._sorted[key] = sorted(self.finder.versions(name, url), reverse=True)
        return cached

    def is_satisfied_by(self, requirement: Req, candidate: Candidate) -> bool:
        """Memoized: resolvelib asks again for every pin on every round.

        With a hundred packages that is tens of thousands of specifier checks for the
        same few hundred (requirement, pin) pairs, a tenth of a warm lock.
        """
        key = (id(requirement), id(candidate))
        hit = self._satisfied.get(key)
        if hit is not None:
            return hit[2]
        if candidate.name.startswith(VIRTUAL_PREFIX):
            answer = True
        elif requirement.url:
            answer = candidate.url == requirement.url
        else:
            answer = requirement.specifier.contains(candidate.version, prereleases=True)
        self._satisfied[key] = (requirement, candidate, answer)
        return answer

    def get_dependencies(self, candidate: Candidate) -> list[Req]:
        cached = self._deps_cache.get(candidate)
        if cached is not None:
            return cached
        if candidate.name.startswith(VIRTUAL_PREFIX):
            scope = self.scopes[candidate.name]
            deps = self.convert(scope.requirements, scope.label, ())
        else:
            meta = self.finder.dependencies(candidate)
            self.requires_python[candidate] = meta.requires_python
            origin = f"{candidate.name} {candidate.version}"
            deps = self.convert(meta.requires, origin, candidate.extras)
            if candidate.extras:
                # an extras candidate stands for the same version of the base package
                deps.append(
                    Req(
                        name=candidate.name,
                        specifier=SpecifierSet(f"=={candidate.version}"),
                        url=candidate.url,
                        origin=origin,
                    )
                )
        self._deps_cache[candidate] = deps
        self.finder.prefetch({(d.name, d.extras, d.specifier) for d in deps})
        return deps


def _names_prerelease(specifier: SpecifierSet, constraint: SpecifierSet | None) -> bool:
    """Whether a specifier names a prerelease explicitly (then prereleases are fair game)."""
    specs = list(specifier) + (list(constraint) if constraint is not None else [])
    versions = (_specifier_version(s.version) for s in specs)
    return any(v is not None and v.is_prerelease for v in versions)


def _specifier_version(text: str) -> Version | None:
    """The version a specifier names (``1.0`` for ``==1.0.*``); None for a string that
    ``===`` compares literally, which metadata may carry (``===weird-build``)."""
    try:
        return Version(text.removesuffix(".*"))
    except InvalidVersion:
        return None


def resolve(
    scopes: Sequence[Scope],
    finder: Finder,
    policy: Policy,
    *,
    reporter: BaseReporter[Req, Candidate, str] | None = None,
    max_rounds: int = 20000,
) -> Resolution:
    """Resolve every scope of a project together for one target environment.

    All scopes resolve together (like uv's lock), so installing any combination
    of extras and groups uses the same versions.
    """
    provider = _Provider(finder, policy, scopes)
    resolver: Resolver[Req, Candidate, str] = Resolver(provider, reporter or BaseReporter())
    finder.prefetch(
        {
            (
                canonicalize_name(r.name),
                frozenset(canonicalize_name(e) for e in r.extras),
                r.specifier,
            )
            for s in scopes
            for r in s.requirements
        }
    )
    try:
        result = resolver.resolve(provider.root_requirements(), max_rounds=max_rounds)
    except ResolutionImpossible as exc:
        raise ResolutionError(explain_conflict(exc.causes, finder, policy)) from None
    except ResolutionTooDeep:
        raise ResolutionError(
            "Resolution took too long: the requirements force too much backtracking. "
            "Add a constraint in [tool.monorepo] constraints to narrow the versions tried."
        ) from None
    return _summarise(result.mapping, result.graph, provider)


def _summarise(mapping: Mapping[str, Candidate], graph: object, provider: _Provider) -> Resolution:
    packages: dict[NormalizedName, Candidate] = {}
    for ident, cand in mapping.items():
        if ident.startswith(VIRTUAL_PREFIX):
            continue
        packages.setdefault(
            cand.name,
            Candidate(
                cand.name, cand.version, source=cand.source, yanked=cand.yanked, url=cand.url
            ),
        )
    # reachability runs over identifiers (``core[speed]`` reaches what only the
    # extra needs); lock dependencies fold extras candidates into their base name
    id_edges: dict[str, set[str]] = {}
    edges: dict[str, set[str]] = {}
    for ident, cand in mapping.items():
        for dep in provider.get_dependencies(cand):
            id_edges.setdefault(ident, set()).add(dep.identifier)
            if dep.name != cand.name:
                edges.setdefault(cand.name, set()).add(dep.name)
    scopes: dict[NormalizedName, set[str]] = {n: set() for n in packages}
    for scope_id in provider.scopes:
        seen: set[str] = set()
        stack = [scope_id]
        while stack:
            node = stack.pop()
            for child in id_edges.get(node, ()):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        for ident in seen:
            reached = mapping.get(ident)
            if reached is not None and reached.name in scopes:
                scopes[reached.name].add(scope_id)
    rp: dict[NormalizedName, SpecifierSet | None] = {}
    for cand, spec in provider.requires_python.items():
        if cand.name in packages and packages[cand.name].version == cand.version:
            rp[cand.name] = spec
    return Resolution(
        packages=dict(sorted(packages.items())),
        edges={
            NormalizedName(k): tuple(sorted(NormalizedName(v) for v in vs))
            for k, vs in sorted(edges.items())
            if not k.startswith(VIRTUAL_PREFIX)
        },
        scopes={k: frozenset(v) for k, v in scopes.items()},
        requires_python=rp,
    )


def explain_conflict(
    causes: Iterable[RequirementInformation[Req, Candidate]],
    finder: Finder,
    policy: Policy,
) -> str:
    """Say in words which requirements, from which packages, cannot hold together."""
    by_name: dict[str, list[tuple[Req, Candidate | None]]] = {}
    for info in causes:
        by_name.setdefault(info.requirement.name, []).append((info.requirement, info.parent))
    lines: list[str] = []
    for name, items in sorted(by_name.items()):
        asks = []
        for req, parent in items:
            who = (
                req.origin
                if parent is None or parent.name.startswith(VIRTUAL_PREFIX)
                else str(parent)  # with its extras: core[old] and core[new] may disagree
            )
            if parent is not None and parent.name.startswith(VIRTUAL_PREFIX):
                who = req.origin
            asks.append(f"{who} requires {req}")
        asks = sorted(set(asks))
        found = (
            [
                c
                for v in finder.versions(NormalizedName(name), None)
                if (c := finder.candidate(NormalizedName(name), v, None)) is not None
            ]
            if not any(r.url for r, _ in items)
            else []
        )
        available = sorted(c.version for c in found)
        sourceless = sorted(finder.sourceless(NormalizedName(name)))
        if not available and sourceless:
            tail = (
                f"{name} {', '.join(str(v) for v in sourceless[-8:])}"
                f" {'is' if len(sourceless) == 1 else 'are'} on the index only as wheels, and"
                " monorepo vendors and builds from source: add an overlay rule with a `source`"
                " (git commit or url + sha256) for it"
            )
        elif not available and not any(r.url for r, _ in items):
            tail = (
                f"no usable release of {name} was found on the index for Python "
                f"{policy.python_version} (check the name, requires-python and exclude-newer)"
            )
        elif len(asks) == 1 and (url := items[0][0].url):
            req = items[0][0]
            held = finder.versions(NormalizedName(name), url)
            tail = f"{url} holds {name} {', '.join(str(v) for v in held)}"
            if not any(req.specifier.contains(v, prereleases=True) for v in held):
                tail += ", which does not satisfy it"
        elif len(asks) == 1:
            # releases the resolver may not take are not "available": say why instead
            spec = items[0][0].specifier
            yanked = {c.version for c in found if c.yanked}
            disallowed = (
                {v for v in available if v.is_prerelease}
                if policy.prereleases == "disallow"
                else set()
            )
            shown = ", ".join(
                str(v) for v in [v for v in available if v not in yanked | disallowed][-8:]
            )
            tail = f"no release of {name} satisfies it (available: {shown or 'none'})"
            for why, versions in (
                ("yanked, so taken only when pinned with ==", yanked),
                ('prereleases, which prereleases = "disallow" rules out', disallowed - yanked),
            ):
                admitted = [str(v) for v in sorted(versions) if spec.contains(v, prereleases=True)]
                if admitted:
                    tail += f"; {why}: {', '.join(admitted[-8:])}"
            if sourceless:
                tail += (
                    f"; passed over as wheels only, without an sdist to vendor:"
                    f" {', '.join(str(v) for v in sourceless[-8:])}"
                )
            constraint = [c for c in policy.constraints if canonicalize_name(c.name) == name]
            if constraint:
                tail += f"; note the constraint {', '.join(str(c) for c in constraint)}"
        else:
            tail = f"no single version of {name} satisfies all of these"
        lines.append("; ".join(asks) + f": {tail}.")
    return (
        "Cannot resolve the requirements: "
        + " ".join(lines)
        + (
            " Loosen one of these requirements, or add an override in [tool.monorepo] overrides "
            "to replace a dependency's requirement."
        )
    )
