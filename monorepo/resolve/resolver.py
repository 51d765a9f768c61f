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

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version
from resolvelib import AbstractProvider, BaseReporter, ResolutionImpossible, Resolver
from resolvelib.resolvers import RequirementInformation, ResolutionTooDeep

from monorepo.errors import MetadataError, ResolutionError
from monorepo.project.targets import evaluate_marker
from monorepo.resolve.explain import Explanation, explain_conflict, from_proof
from monorepo.resolve.model import (
    VIRTUAL_PREFIX,
    Candidate,
    Dependencies,
    Finder,
    Policy,
    Req,
    Resolution,
    Scope,
    Wanted,
    identifier_for,
)
from monorepo.resolve.proof import (
    Contradiction,
    MetadataUnreadable,
    Need,
    Prover,
    Requirer,
    Term,
)
from monorepo.resolve.watch import Watch

__all__ = [
    "VIRTUAL_PREFIX",
    "Candidate",
    "Dependencies",
    "Finder",
    "Policy",
    "Req",
    "Resolution",
    "Scope",
    "Wanted",
    "explain_conflict",
    "identifier_for",
    "resolve",
]

#: Identifiers of the unsatisfiable requirement a version with unreadable metadata gets.
UNREADABLE = ":unreadable:"


class Proven(Exception):
    """The prover showed that no resolution exists: stop searching (see :meth:`_Provider.prove`)."""

    def __init__(self, explanation: Explanation) -> None:
        super().__init__(explanation.text())
        self.explanation = explanation


class _Retry(Exception):
    """The search failed after the prover learned something: search again with it."""


class _Provider(AbstractProvider[Req, Candidate, str]):
    def __init__(
        self,
        finder: Finder,
        policy: Policy,
        scopes: Sequence[Scope],
        *,
        prerelease_named: frozenset[NormalizedName] = frozenset(),
        target: str = "",
        proof: Prover | None = None,
        unreadable: Mapping[tuple[NormalizedName, Version], str] | None = None,
    ) -> None:
        self.finder = finder
        self.policy = policy
        self.target = target
        self.scopes = {s.identifier: s for s in scopes}
        #: names some requirement in the last resolution names a prerelease of (if-necessary)
        self.prerelease_named = prerelease_named
        self.held_back: set[NormalizedName] = set()
        #: (name, version) -> why its metadata cannot be used
        self.unreadable: dict[tuple[NormalizedName, Version], str] = dict(unreadable or {})
        #: the proof of an earlier search, if any, and the versions it showed can be in no
        #: solution: skipped from the start (resolvelib's backjumping assumes that what a
        #: search may choose does not change under it)
        self.proof = proof
        self.learned: dict[NormalizedName, set[Version]] = (
            {n: set(vs) for n, vs in proof.excluded.items()} if proof is not None else {}
        )
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
        if identifier.startswith(UNREADABLE):
            return []  # the requirement a version with unreadable metadata depends on
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
        bad |= self.learned.get(name, set())
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
            or (
                policy == "if-necessary"
                and (name in self.prerelease_named or _names_prerelease(specifier, constraint))
            )
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

        # a final release the proof ruled out still counts as "a final release fits"
        proven_final = any(
            not v.is_prerelease and specifier.contains(v, prereleases=True)
            for v in self.learned.get(name, ())
        )

        def matches() -> Iterator[Candidate]:
            held_back: list[Version] = []
            any_final = proven_final
            for version in admitted():
                if version.is_prerelease and not prereleases_first_class:
                    held_back.append(version)
                    self.held_back.add(name)
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

    def _metadata(self, candidate: Candidate) -> Dependencies | str:
        """The candidate's metadata, or why it cannot be used (a sentence).

        Reading an old sdist's metadata may mean building it; before doing that for a
        version that is not the newest (something capped it) the prover gets a chance to
        show that the versions already seen make any search hopeless.  A version whose
        metadata cannot be read, or whose Requires-Python excludes the target, is
        skipped, and a failed resolution names it.
        """
        known = self.unreadable.get((candidate.name, candidate.version))
        if known is not None and candidate.url is None:
            return known  # an earlier pass of this resolution failed to read it
        if self.proof is None and candidate.url is None:
            finals = [v for v in self._newest_first(candidate.name, None) if not v.is_prerelease]
            capped = bool(finals) and candidate.version != finals[0]
            if capped and not self.finder.metadata_is_cheap(candidate):
                self.prove()
        try:
            meta = self.finder.dependencies(candidate)
        except MetadataError as exc:
            if candidate.url is not None:
                raise  # a direct reference has nothing to fall back to
            return _first_line(str(exc))
        rp = meta.requires_python
        if rp is not None and not rp.contains(self.policy.python_version, prereleases=True):
            return f"it requires Python {rp}, and the target has {self.policy.python_version}"
        return meta

    # -- the prover's view (proof.Oracle) ---------------------------------
    def versions(self, name: NormalizedName) -> list[Version]:
        constraint = self.constraints.get(name)
        return [
            v
            for v in self._newest_first(name, None)
            if (constraint is None or constraint.contains(v, prereleases=True))
            and not (self.policy.prereleases == "disallow" and v.is_prerelease)
        ]

    def usable(self, name: NormalizedName, version: Version) -> bool | None:
        found = self.finder.candidate(name, version, None)
        return None if found is None else found.yanked

    def cheap(self, name: NormalizedName, version: Version) -> bool:
        found = self.finder.candidate(name, version, None)
        return found is not None and self.finder.metadata_is_cheap(found)

    def needs(self, name: NormalizedName, version: Version, extras: frozenset[str]) -> list[Need]:
        found = self.finder.candidate(name, version, None)
        assert found is not None, f"{name} {version} was usable a moment ago"
        candidate = Candidate(name, version, extras, found.source, found.yanked)
        deps = self.get_dependencies(candidate)
        reason = self.unreadable.get((name, version))
        if reason is not None:
            raise MetadataUnreadable(reason)
        return [
            Need(d.name, d.specifier, d.extras, d.url, str(d))
            for d in deps
            if d.name != name and not d.name.startswith(VIRTUAL_PREFIX)
        ]

    def prefetch(self, name: NormalizedName, versions: Sequence[Version]) -> None:
        found = [c for v in versions if (c := self.finder.candidate(name, v, None)) is not None]
        self.finder.prefetch_dependencies(found)

    def root_terms(self) -> list[Term]:
        terms = []
        for scope in self.scopes.values():
            if scope.description is not None:
                requirer = Requirer("build", scope.description, origin=scope.origin)
            elif scope.kind == "project":
                requirer = Requirer("project")
            else:
                requirer = Requirer(scope.kind, scope.name)
            for req in self.convert(scope.requirements, scope.label, ()):
                terms.append(
                    Term(
                        req.name, requirer, str(req), req.specifier, url=req.url, extras=req.extras
                    )
                )
        return terms

    def prove(self, *, again: bool = False) -> None:
        """Look for a proof that no resolution exists; raise :class:`Proven` if found.

        Run once during a search (what it rules out is skipped by the next search);
        *again* after a failed search, with what the search learned: the versions whose
        metadata it could not use.
        """
        if self.proof is not None and not again:
            return
        fresh = self.proof is None
        constraints: dict[NormalizedName, list[Term]] = {}
        for c in self.policy.constraints:
            if evaluate_marker(c.marker, self.policy.environment, ()):
                name = canonicalize_name(c.name)
                term = Term(name, Requirer("constraint"), str(c), c.specifier)
                constraints.setdefault(name, []).append(term)
        prover = self.proof = self.proof or Prover(
            self, prereleases=self.policy.prereleases, constraints=constraints
        )
        try:
            if fresh:
                prover.run(self.root_terms())
            for (name, version), reason in sorted(self.unreadable.items()):
                prover.skip(name, version, reason)
            prover.propagate()
        except Contradiction as found:
            if not prover.exclusions and all(
                t.requirer.kind != "package" for t in prover.terms.get(found.package, [])
            ):
                # the project's own requirements clash on one package: the search finds
                # that at once, and its message says more (yanked, wheels only, ...)
                return
            raise Proven(
                from_proof(prover, found.package, self.finder, self.policy, target=self.target)
            ) from None

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
            origin = f"{candidate.name} {candidate.version}"
            meta = self._metadata(candidate)
            if isinstance(meta, str):
                # a version whose metadata cannot be used depends on the impossible
                self.unreadable[(candidate.name, candidate.version)] = meta
                deps = [Req(NormalizedName(f"{UNREADABLE}{candidate}"), origin=origin)]
                self._deps_cache[candidate] = deps
                return deps
            self.requires_python[candidate] = meta.requires_python
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
    target: str = "",
) -> Resolution:
    """Resolve every scope of a project together for one target environment.

    All scopes resolve together (like uv's lock), so installing any combination
    of extras and groups uses the same versions.  When no resolution exists, the
    :class:`ResolutionError` explains why (its ``explanation`` is the same as data);
    *target* names the target in it.

    Under ``prereleases = "if-necessary"`` a requirement that names a prerelease makes
    prereleases of that package fair game.  Whether it had arrived when the package was
    pinned depends on the order of the search, so when the answer holds such a
    requirement for a package whose prereleases were held back, it is resolved again
    with that known from the start: the answer no longer depends on project names.
    """
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
    named: frozenset[NormalizedName] = frozenset()
    proof: Prover | None = None
    unreadable: dict[tuple[NormalizedName, Version], str] = {}
    for attempt in range(4):
        provider = _Provider(
            finder,
            policy,
            scopes,
            prerelease_named=named,
            target=target,
            proof=proof,
            unreadable=unreadable,
        )
        try:
            mapping, graph = _search(provider, reporter, max_rounds, retry=attempt < 3)
        except _Retry:
            # the proof found no contradiction but versions no solution can have: search
            # again without them from the start
            proof = provider.proof
            unreadable = provider.unreadable
            continue
        if policy.prereleases != "if-necessary":
            break
        now = named | {
            d.name
            for cand in mapping.values()
            for d in provider.get_dependencies(cand)
            if _names_prerelease(d.specifier, None)
        }
        if not (now - named) & provider.held_back:
            break
        named = now
    return _summarise(mapping, graph, provider)


def _search(
    provider: _Provider,
    reporter: BaseReporter[Req, Candidate, str] | None,
    max_rounds: int,
    *,
    retry: bool,
) -> tuple[Mapping[str, Candidate], object]:
    """resolvelib's search, with the prover called in at the first sign of trouble."""
    watch = Watch(provider.prove, reporter or BaseReporter())
    resolver: Resolver[Req, Candidate, str] = Resolver(provider, watch)
    try:
        try:
            result = resolver.resolve(provider.root_requirements(), max_rounds=max_rounds)
        except (ResolutionImpossible, ResolutionTooDeep):
            fresh = provider.proof is None
            provider.prove(again=True)  # explain with a proof if there is one
            if (
                provider.proof is not None
                and provider.proof.excluded
                and (fresh or provider.learned != provider.proof.excluded)
            ):
                raise _Retry() from None
            raise
    except Proven as proven:
        raise ResolutionError(proven.explanation.text(), proven.explanation.to_dict()) from None
    except ResolutionImpossible as exc:
        explained = explain_conflict(
            exc.causes, provider.finder, provider.policy, provider.scopes, target=provider.target
        )
        skipped = [
            f"skipped version {name} {version}: its metadata cannot be read ({reason})"
            for (name, version), reason in sorted(provider.unreadable.items())
        ]
        explained = dataclasses.replace(
            explained,
            lines=explained.lines + tuple(skipped),
            skipped=tuple(
                {"package": name, "version": str(version), "reason": reason}
                for (name, version), reason in sorted(provider.unreadable.items())
            ),
        )
        raise ResolutionError(explained.text(), explained.to_dict()) from None
    except ResolutionTooDeep:
        raise ResolutionError(
            _with_skipped(
                "Resolution took too long: the requirements force too much backtracking. "
                "Add a constraint in [tool.monorepo] constraints to narrow the versions tried.",
                provider,
            )
        ) from None
    return result.mapping, result.graph


def _with_skipped(text: str, provider: _Provider) -> str:
    """*text* and the versions whose metadata could not be used, one line each."""
    skipped = [
        f"Skipped version {name} {version}: its metadata cannot be used ({reason})."
        for (name, version), reason in sorted(provider.unreadable.items())
    ]
    return " ".join([text, *skipped])


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


def _first_line(text: str) -> str:
    """A metadata error on one line, short enough for a line of an explanation."""
    line = " ".join(text.strip().splitlines()[0].split()) if text.strip() else ""
    line = line if len(line) <= 240 else line[:237] + "..."
    # a first line cut inside a parenthesis (a build log follows) is closed again
    return (line + ")" * (line.count("(") - line.count(")"))) or "no reason given"
