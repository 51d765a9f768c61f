"""A failed resolution told as a derivation a person can follow, and what to change.

:class:`Explanation` is the one shape of every "no solution" answer: the lines of the
derivation in the order a reader needs them (who requires what, which versions of a
package were ruled out and by which requirement, which versions were skipped because
their metadata cannot be read), the conclusion, and the changes that would lift the
conflict (loosen a requirement of the project, add an override, an overlay rule for a
build requirement or an unreadable release).  The same content goes into ``--json``
as data (:meth:`Explanation.to_dict`).

:func:`from_proof` renders a :class:`~monorepo.resolve.proof.Prover`'s contradiction,
walking back from the package left without a version through the terms and
exclusions that emptied it, as PubGrub's reports do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from packaging.utils import NormalizedName, canonicalize_name
from resolvelib.resolvers import RequirementInformation

from monorepo.resolve.model import Candidate, Finder, Policy, Req, Scope
from monorepo.resolve.proof import Exclusion, Prover, Requirer, Term, version_list


@dataclass(frozen=True)
class Explanation:
    """Why no resolution exists: a derivation, its conclusion, and the fixes."""

    lines: tuple[str, ...]
    conclusion: str
    fixes: tuple[str, ...] = ()
    causes: tuple[dict[str, object], ...] = ()
    skipped: tuple[dict[str, object], ...] = ()
    package: str = ""
    target: str = ""

    def text(self) -> str:
        where = f" for target {self.target}" if self.target else ""
        out = [f"Cannot resolve the requirements{where}:"]
        out += [f"  - {line}" for line in self.lines]
        out.append(f"  {self.conclusion}")
        if self.fixes:
            out.append("To fix it, one of:")
            out += [f"  - {fix}" for fix in self.fixes]
        return "\n".join(out)

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": "resolution-impossible",
            "target": self.target,
            "package": self.package,
            "derivation": list(self.lines),
            "conclusion": self.conclusion,
            "causes": list(self.causes),
            "skipped": list(self.skipped),
            "fixes": list(self.fixes),
        }


@dataclass
class _Walk:
    prover: Prover
    lines: list[str] = field(default_factory=list)
    causes: list[dict[str, object]] = field(default_factory=list)
    skipped: list[dict[str, object]] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)

    def once(self, key: tuple[str, str]) -> bool:
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def fix(self, text: str) -> None:
        if text not in self.fixes:
            self.fixes.append(text)

    # -- why a package is limited -------------------------------------------------
    def package(self, name: NormalizedName, *, terms_only: bool = False) -> None:
        if not self.once(("package-terms" if terms_only else "package", name)):
            return
        for term in self.prover.terms.get(name, []):
            self.term(term)
        if not terms_only:
            for exclusion in self.prover.exclusions.get(name, []):
                self.exclusion(exclusion)

    def term(self, term: Term) -> None:
        if not self.once(("term", f"{term.package} {term.requirer.label} {term.text}")):
            return
        requirer = term.requirer
        if requirer.kind == "package":
            # the requirer is required (and limited) for reasons of its own
            self.package(NormalizedName(requirer.name))
        self.lines.append(term.sentence)
        self.causes.append(term.to_dict())
        if requirer.kind == "project":
            self.fix(f"loosen the project's requirement {term.text} ([project] dependencies)")
        elif requirer.kind == "extra":
            self.fix(
                f"loosen {term.text} in the extra '{requirer.name}' "
                "([project.optional-dependencies]), or lock that extra in another project"
            )
        elif requirer.kind == "group":
            self.fix(f"loosen {term.text} in the dependency group '{requirer.name}'")
        elif requirer.kind == "build":
            # the requirer's name says package, version and origin
            # (monorepo.project.pyproject.build_requirer)
            self.fix(_fix(requirer, term.text, term.package))
        elif requirer.kind == "package" and (term.specifier or term.allow is None):
            self.fix(
                f"add an override for {term.package} in [tool.monorepo] overrides to replace"
                f" what {requirer.name} requires ({term.text})"
            )
        elif requirer.kind == "constraint":
            self.fix(f"loosen the constraint {term.text} in [tool.monorepo] constraints")

    def exclusion(self, exclusion: Exclusion) -> None:
        name = exclusion.package
        admitted = len(self.prover.admitted_by_terms(name))
        versions = version_list(exclusion.versions, admitted)
        if exclusion.reason is not None:
            for version in exclusion.versions:
                self.skipped.append(
                    {"package": name, "version": str(version), "reason": exclusion.reason}
                )
            self.lines.append(
                f"skipped version{'s' if len(exclusion.versions) > 1 else ''} {name} {versions}:"
                f" {'their' if len(exclusion.versions) > 1 else 'its'} metadata cannot be read"
                f" ({exclusion.reason})"
            )
            self.fix(
                f"add an overlay rule for {name} {versions} that fixes its metadata"
                " (`add-dependencies`, or a `source` that builds), or require a version"
                " whose metadata can be read"
            )
            return
        need = exclusion.dependency
        assert need is not None
        dep = need.name
        # if the terms on dep already rule out what these versions need, they suffice
        terms_only = not any(
            need.specifier.contains(v, prereleases=True) for v in self.prover.admitted_by_terms(dep)
        )
        self.package(dep, terms_only=terms_only)
        left = self.prover.allowed.get(dep, [])
        verb = "requires" if len(exclusion.versions) == 1 else "require"
        self.lines.append(
            f"{name} {versions} {verb} {need.text}, which no version of {dep} left satisfies"
            f" ({dep} can only be {version_list(left) if left else 'none'})"
        )
        self.causes.append(
            {
                "package": dep,
                "requirement": need.text,
                "requirer": {
                    "kind": "package",
                    "name": name,
                    "versions": [str(v) for v in exclusion.versions],
                    "label": f"{name} {versions}",
                },
                "excluded": True,
            }
        )
        roots = [
            t.text
            for t in self.prover.terms.get(dep, [])
            if t.requirer.kind in ("project", "extra", "group") and t.specifier
        ]
        example = f' (e.g. "{roots[0]}")' if roots else ""
        if self.once(("override", f"{name} {dep}")):
            self.fix(
                f"add an override for {dep} in [tool.monorepo] overrides{example} to replace"
                f" what {name} requires ({need.text})"
            )


def from_proof(
    prover: Prover,
    package: NormalizedName,
    finder: Finder,
    policy: Policy,
    *,
    target: str = "",
) -> Explanation:
    """The derivation of *package*'s empty version set, and the fixes it suggests."""
    walk = _Walk(prover)
    walk.package(package)
    terms = prover.terms.get(package, [])
    if not prover.admitted_by_terms(package):
        items = [Req(package, t.specifier, t.extras, t.url) for t in terms]
        tail = availability(package, items, finder, policy, single=len(terms) == 1)
        conclusion = f"So {tail}."
    else:
        admitted = prover.admitted_by_terms(package)
        conclusion = (
            f"So no version of {package} is left ({package} {version_list(admitted)}"
            f" {'is' if len(admitted) == 1 else 'are'} ruled out above):"
            " these requirements cannot all hold."
        )
    return Explanation(
        lines=tuple(walk.lines),
        conclusion=conclusion,
        fixes=tuple(walk.fixes),
        causes=tuple(walk.causes),
        skipped=tuple(walk.skipped),
        package=package,
        target=target,
    )


def explain_conflict(
    causes: Iterable[RequirementInformation[Req, Candidate]],
    finder: Finder,
    policy: Policy,
    scopes: Mapping[str, Scope],
    *,
    target: str = "",
) -> Explanation:
    """The search's last conflict in words: who requires what, and what the index has.

    Used when no proof was found (the prover leaves a clash among the project's own
    requirements on one package to this, which knows more about the releases it
    passed over: yanked, prereleases, wheels only).
    """
    by_name: dict[str, list[tuple[Req, Candidate | None]]] = {}
    for info in causes:
        by_name.setdefault(info.requirement.name, []).append((info.requirement, info.parent))
    lines: list[str] = []
    fixes: list[str] = []
    structured: list[dict[str, object]] = []
    for name, items in sorted(by_name.items()):
        asks = []
        for req, parent in items:
            scope = scopes.get(parent.name) if parent is not None else None
            # with its extras: core[old] and core[new] may disagree
            who = req.origin if parent is None or scope is not None else str(parent)
            asks.append(f"{who} requires {req}")
            requirer = _requirer(scope, parent)
            structured.append(
                {"package": name, "requirement": str(req), "requirer": requirer.to_dict()}
            )
            fix = _fix(requirer, str(req), name)
            if fix not in fixes:
                fixes.append(fix)
        asks = sorted(set(asks))
        if len(items) > 1 and not any(f.startswith(f"add an override for {name} ") for f in fixes):
            fixes.append(
                f"add an override for {name} in [tool.monorepo] overrides: it replaces every"
                " requirement on it, the project's included"
            )
        tail = availability(
            NormalizedName(name), [r for r, _ in items], finder, policy, single=len(asks) == 1
        )
        lines.append("; ".join(asks) + f": {tail}")
    return Explanation(
        lines=tuple(lines),
        conclusion="So these requirements cannot all hold.",
        fixes=tuple(fixes),
        causes=tuple(structured),
        package=min(by_name, default=""),
        target=target,
    )


def _requirer(scope: Scope | None, parent: Candidate | None) -> Requirer:
    if scope is not None and scope.description is not None:
        return Requirer("build", scope.description, origin=scope.origin)
    if scope is not None and scope.kind != "project":
        return Requirer(scope.kind, scope.name)
    if scope is not None or parent is None:
        return Requirer("project")
    return Requirer("package", parent.identifier, (parent.version,))


def _fix(requirer: Requirer, text: str, name: str) -> str:
    if requirer.kind == "project":
        return f"loosen the project's requirement {text} ([project] dependencies)"
    if requirer.kind == "extra":
        return f"loosen {text} in the extra '{requirer.name}' ([project.optional-dependencies])"
    if requirer.kind == "group":
        return f"loosen {text} in the dependency group '{requirer.name}'"
    if requirer.kind == "build":
        return (
            f"replace {text}, asked for by {requirer.name}, with an overlay rule's"
            " `build-requires` for that package"
        )
    return (
        f"add an override for {name} in [tool.monorepo] overrides to replace what"
        f" {requirer.label} requires ({text})"
    )


def availability(
    name: NormalizedName,
    items: Sequence[Req],
    finder: Finder,
    policy: Policy,
    *,
    single: bool,
) -> str:
    """What the index offers of *name* against these requirements, and why it is not enough.

    *single*: the requirements come from one requirer (then the releases are listed with
    the reasons some are not taken: yanked, prereleases disallowed, wheels only).
    """
    found = (
        [
            c
            for v in finder.versions(NormalizedName(name), None)
            if (c := finder.candidate(NormalizedName(name), v, None)) is not None
        ]
        if not any(r.url for r in items)
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
    elif not available and not any(r.url for r in items):
        tail = (
            f"no usable release of {name} was found on the index for Python "
            f"{policy.python_version} (check the name, requires-python and exclude-newer)"
        )
        listed = sorted(finder.versions(NormalizedName(name), None))
        if listed:
            # the project exists: say so, or the user goes looking for a typo
            shown = ", ".join(str(v) for v in listed[-8:])
            tail += (
                f"; the index lists {name} {shown}, none usable for this target"
                " (their requires-python, their upload time against exclude-newer, or their"
                " wheels' platforms)"
            )
    elif single and (url := items[0].url):
        req = items[0]
        held = finder.versions(NormalizedName(name), url)
        tail = f"{url} holds {name} {', '.join(str(v) for v in held)}"
        if not any(req.specifier.contains(v, prereleases=True) for v in held):
            tail += ", which does not satisfy it"
    elif single:
        # releases the resolver may not take are not "available": say why instead
        spec = items[0].specifier
        yanked = {c.version for c in found if c.yanked}
        disallowed = (
            {v for v in available if v.is_prerelease} if policy.prereleases == "disallow" else set()
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
    return tail
