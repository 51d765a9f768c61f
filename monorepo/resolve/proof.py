"""Proving that no resolution exists, and saying why, without searching for one.

resolvelib searches: on a conflict it backtracks and tries the next version of
something, and when the cause lies elsewhere (``requests>=2.31`` beside
``urllib3<1.21``) it tries every combination before giving up, reading metadata, even
building old sdists, on the way.  PubGrub (uv, Poetry's mixology) instead *derives*
facts that hold in every solution and stops as soon as they contradict each other.

This module is the part of PubGrub that such failures need: unit propagation over sets
of versions from the root.  What the project's scopes require must hold in every
solution ("terms"); a version of a required package whose dependency no admitted
version of a required package satisfies can never be chosen ("exclusions"); when every
admitted version of a required package depends on another package, that package is
required too, limited to the versions one of them accepts (a derived term).  When a
required package is left with no version, the chain of terms and exclusions that led
there is the explanation: both sides, the versions in between, and what to change.

It is sound, not complete: facts are derived only from required packages and metadata
that is cheap to read (a wheel's, a PEP 658 file), within a budget, so "no conflict
proven" means "search".  Its exclusions are safe for the search to skip.  Pure: it sees
the index only through the :class:`Oracle` the resolver gives it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName
from packaging.version import InvalidVersion, Version

RequirerKind = Literal["project", "extra", "group", "build", "constraint", "package"]


@dataclass(frozen=True)
class Requirer:
    """Who asks for a requirement: a root scope of the project, a build, or package versions."""

    kind: RequirerKind
    name: str = ""  # the extra, group, or package name; the build's label
    versions: tuple[Version, ...] = ()  # for a package: every version that asks
    all_versions: int = 0  # for a package: how many versions it had to choose from
    origin: str = ""  # for a build: where its requirements come from

    @property
    def label(self) -> str:
        if self.kind == "project":
            return "the project"
        if self.kind in ("extra", "group"):
            return f"the project's {self.kind} '{self.name}'"
        if self.kind == "build":
            return self.name
        if self.kind == "constraint":
            return "[tool.monorepo] constraints"
        return f"{self.name} {version_list(self.versions, self.all_versions)}"

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": self.kind, "label": self.label}
        if self.name:
            out["name"] = self.name
        if self.versions:
            out["versions"] = [str(v) for v in self.versions]
        if self.origin:
            out["origin"] = self.origin
        return out


def version_list(versions: Sequence[Version], out_of: int = 0) -> str:
    """``1.0``, ``1.0, 1.1``, or ``13.0.0 to 14.2.0 (31 versions)``: short, exact enough."""
    ordered = sorted(versions)
    if len(ordered) <= 3:
        return ", ".join(str(v) for v in ordered)
    every = " (every version that fits)" if out_of and out_of == len(ordered) else ""
    return f"{ordered[0]} to {ordered[-1]} ({len(ordered)} versions{every})"


@dataclass(frozen=True)
class Need:
    """A dependency as the oracle gives it: markers evaluated, overrides applied."""

    name: NormalizedName
    specifier: SpecifierSet
    extras: frozenset[str]
    url: str | None
    text: str  # as the requirer wrote it, for messages


@dataclass(frozen=True)
class Term:
    """A requirement that holds in every solution, and who imposes it."""

    package: NormalizedName
    requirer: Requirer
    text: str
    specifier: SpecifierSet = field(default_factory=SpecifierSet)
    #: for a derived term: the versions one of the requirer's versions accepts
    allow: frozenset[Version] | None = None
    url: str | None = None
    extras: frozenset[str] = frozenset()

    def admits(self, version: Version) -> bool:
        if self.allow is not None:
            return version in self.allow
        return self.specifier.contains(version, prereleases=True)

    @property
    def sentence(self) -> str:
        verb = (
            "requires"
            if self.requirer.kind != "package" or len(self.requirer.versions) == 1
            else "require"
        )
        if self.requirer.kind == "constraint":
            return f"[tool.monorepo] constraints limit {self.text}"
        return f"{self.requirer.label} {verb} {self.text}"

    def to_dict(self) -> dict[str, object]:
        return {
            "package": self.package,
            "requirement": self.text,
            "requirer": self.requirer.to_dict(),
        }


@dataclass(frozen=True)
class Exclusion:
    """Versions of a package that can be in no solution, and why."""

    package: NormalizedName
    versions: tuple[Version, ...]
    #: the dependency they share that no admitted version satisfies
    dependency: Need | None = None
    #: or: their metadata cannot be read (the reason), or they need another Python
    reason: str | None = None


class MetadataUnreadable(Exception):
    """Raised by an oracle for a version whose metadata cannot be read (the reason)."""


class Oracle(Protocol):
    """What the prover asks of the resolver, for one target."""

    def versions(self, name: NormalizedName) -> Sequence[Version]:
        """Every version the constraints allow, usable or not (cheap: no file is looked at)."""
        ...

    def usable(self, name: NormalizedName, version: Version) -> bool | None:
        """None when *version* cannot be chosen for the target, else whether it is yanked."""
        ...

    def cheap(self, name: NormalizedName, version: Version) -> bool:
        """Whether this version's metadata is cheap to read (no build)."""
        ...

    def needs(self, name: NormalizedName, version: Version, extras: frozenset[str]) -> list[Need]:
        """Its dependencies for the target; raises :class:`MetadataUnreadable`."""
        ...

    def prefetch(self, name: NormalizedName, versions: Sequence[Version]) -> None:
        """Hint: the metadata of these versions is about to be read."""
        ...


class Contradiction(Exception):
    """A required package is left with no version: :attr:`package` (see :class:`Prover`)."""

    def __init__(self, package: NormalizedName) -> None:
        super().__init__(package)
        self.package = package


#: Metadata reads one proof may spend, and versions of one package it reads at most.
BUDGET = 200
PER_PACKAGE = 60


class Prover:
    """The derivation state: terms, exclusions, what each package is still allowed."""

    def __init__(
        self,
        oracle: Oracle,
        *,
        budget: int = BUDGET,
        prereleases: str = "if-necessary",
        constraints: Mapping[NormalizedName, Sequence[Term]] | None = None,
    ) -> None:
        self.oracle = oracle
        self.constraints = constraints or {}
        self.prereleases = prereleases
        self.budget = budget
        self.terms: dict[NormalizedName, list[Term]] = {}
        self.exclusions: dict[NormalizedName, list[Exclusion]] = {}
        self.excluded: dict[NormalizedName, set[Version]] = {}
        self.allowed: dict[NormalizedName, list[Version]] = {}
        self._versions: dict[NormalizedName, list[Version]] = {}
        self._usable: dict[tuple[NormalizedName, Version], bool | None] = {}
        self._needs: dict[tuple[NormalizedName, Version], list[Need] | str] = {}
        self._derived: dict[tuple[NormalizedName, NormalizedName], Term] = {}
        self._dirty: set[NormalizedName] = set()

    # -- the state ----------------------------------------------------------
    def versions(self, name: NormalizedName) -> list[Version]:
        found = self._versions.get(name)
        if found is None:
            found = self._versions[name] = sorted(self.oracle.versions(name), reverse=True)
        return found

    def _yanked(self, name: NormalizedName, version: Version) -> bool | None:
        key = (name, version)
        if key not in self._usable:
            self._usable[key] = self.oracle.usable(name, version)
        return self._usable[key]

    def admitted_by_terms(self, name: NormalizedName) -> list[Version]:
        """The usable versions every term admits (a yanked one only when a term pins it).

        Files are looked at only for the versions the terms admit: ``urllib3<1.21``
        need not check the hundred releases after it.
        """
        terms = self.terms.get(name, [])
        out = []
        for version in self.versions(name):
            if not all(t.admits(version) for t in terms):
                continue
            yanked = self._yanked(name, version)
            if yanked is None or (yanked and not any(_pins(t, version) for t in terms)):
                continue
            out.append(version)
        # if-necessary: a prerelease only when no final release fits, or one is named
        if (
            self.prereleases == "if-necessary"
            and any(not v.is_prerelease for v in out)
            and not any(
                (v := _named(s.version)) is not None and v.is_prerelease
                for t in terms
                for s in t.specifier
            )
        ):
            out = [v for v in out if not v.is_prerelease]
        return out

    def _refresh(self, name: NormalizedName) -> None:
        if any(t.url for t in self.terms.get(name, [])):
            return  # a direct reference: one version, decided by the search
        excluded = self.excluded.get(name, set())
        allowed = [v for v in self.admitted_by_terms(name) if v not in excluded]
        if allowed != self.allowed.get(name):
            self.allowed[name] = allowed
            # this package, and every package whose versions may depend on it, again
            self._dirty.update(self.allowed)
        if not allowed:
            raise Contradiction(name)

    def add(self, term: Term) -> None:
        first = term.package not in self.terms
        self.terms.setdefault(term.package, []).append(term)
        if first:
            # a constraint adds no package, but limits one that is required: say so
            self.terms[term.package].extend(self.constraints.get(term.package, ()))
        self._refresh(term.package)

    def _exclude(self, exclusion: Exclusion) -> None:
        self.exclusions.setdefault(exclusion.package, []).append(exclusion)
        self.excluded.setdefault(exclusion.package, set()).update(exclusion.versions)
        self._refresh(exclusion.package)

    # -- propagation ----------------------------------------------------------
    def run(self, roots: Iterable[Term]) -> None:
        """Add the roots and propagate; raises :class:`Contradiction` when one is proven."""
        for term in sorted(roots, key=lambda t: (t.package, t.requirer.label, t.text)):
            self.add(term)
        self.propagate()

    def skip(self, name: NormalizedName, version: Version, reason: str) -> None:
        """The search found *version*'s metadata unusable: a fact for the proof too."""
        if (name, version) in self._needs:
            return
        self._needs[(name, version)] = reason
        if version in self.allowed.get(name, ()):
            self._exclude(Exclusion(name, (version,), reason=reason))

    def propagate(self) -> None:
        """Derive until nothing changes or the budget is spent."""
        while self._dirty and self.budget > 0:
            # the most constrained package first: fewest versions to read
            name = min(self._dirty, key=lambda n: (len(self.allowed.get(n, ())), n))
            self._dirty.discard(name)
            self._examine(name)

    def _read(self, name: NormalizedName, versions: Sequence[Version]) -> None:
        extras = frozenset(e for t in self.terms.get(name, []) for e in t.extras)
        todo = [v for v in versions if (name, v) not in self._needs]
        if todo:
            self.oracle.prefetch(name, todo)
        for version in todo:
            if self.budget <= 0:
                return
            self.budget -= 1
            try:
                self._needs[(name, version)] = sorted(
                    self.oracle.needs(name, version, extras), key=lambda n: (n.name, n.text)
                )
            except MetadataUnreadable as exc:
                self._needs[(name, version)] = str(exc)

    def _examine(self, name: NormalizedName) -> None:
        allowed = self.allowed.get(name)
        if not allowed or len(allowed) > PER_PACKAGE:
            return
        cheap = [v for v in allowed if (name, v) in self._needs or self.oracle.cheap(name, v)]
        self._read(name, cheap)
        known = {v: self._needs[(name, v)] for v in allowed if (name, v) in self._needs}
        unreadable: dict[str, list[Version]] = {}
        by_need: dict[tuple[NormalizedName, str], tuple[Need, list[Version]]] = {}
        for version, needs in sorted(known.items()):
            if isinstance(needs, str):
                unreadable.setdefault(needs, []).append(version)
                continue
            for need in needs:
                if need.url or need.name not in self.allowed or need.name == name:
                    continue
                if not any(
                    need.specifier.contains(v, prereleases=True) for v in self.allowed[need.name]
                ):
                    by_need.setdefault((need.name, need.text), (need, []))[1].append(version)
        for reason, versions in sorted(unreadable.items()):
            self._exclude(Exclusion(name, tuple(versions), reason=reason))
        done: set[Version] = set()
        for (_, _text), (need, versions) in sorted(by_need.items()):
            rest = tuple(v for v in versions if v not in done)
            if rest:
                done.update(rest)
                self._exclude(Exclusion(name, rest, dependency=need))
        self._derive(name)

    def _derive(self, name: NormalizedName) -> None:
        """Every allowed version depends on X: X is required, within what they accept."""
        allowed = self.allowed.get(name, [])
        if not allowed or any((name, v) not in self._needs for v in allowed):
            return
        per_version = [self._needs[(name, v)] for v in allowed]
        if any(isinstance(n, str) for n in per_version):
            return
        lists = [n for n in per_version if not isinstance(n, str)]
        shared = set.intersection(*({n.name for n in needs if not n.url} for needs in lists))
        shared.discard(name)
        for dep in sorted(shared):
            specs = {n.text: n for needs in lists for n in needs if n.name == dep}
            # whichever version is chosen, its requirement on dep holds: the union
            accepted = frozenset(
                v
                for v in self.versions(dep)
                if any(
                    n.specifier.contains(v, prereleases=True)
                    for needs in lists
                    for n in needs
                    if n.name == dep
                )
            )
            extras = frozenset.intersection(
                *(frozenset(e for n in needs if n.name == dep for e in n.extras) for needs in lists)
            )
            key = (name, dep)
            old = self._derived.get(key)
            if old is not None and old.allow == accepted:
                continue
            texts = sorted(specs)
            term = Term(
                dep,
                Requirer(
                    "package", name, tuple(allowed), all_versions=len(self.admitted_by_terms(name))
                ),
                texts[0] if len(texts) == 1 else " or ".join(texts),
                specs[texts[0]].specifier if len(texts) == 1 else SpecifierSet(),
                allow=accepted,
                extras=extras,
            )
            if old is not None:
                self.terms[dep].remove(old)
            self._derived[key] = term
            self.add(term)


def _pins(term: Term, version: Version) -> bool:
    return any(
        s.operator in ("==", "===")
        and not s.version.endswith(".*")
        and s.contains(version, prereleases=True)
        for s in term.specifier
    )


def _named(text: str) -> Version | None:
    try:
        return Version(text.removesuffix(".*"))
    except InvalidVersion:
        return None
