"""The reporter the resolver's search runs under: the caller's, plus a hook at the first backtrack.

Kept apart from :mod:`monorepo.resolve.resolver` only for size.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from resolvelib import BaseReporter
from resolvelib.resolvers import RequirementInformation

from monorepo.resolve.model import Candidate, Req


class Watch(BaseReporter[Req, Candidate, str]):
    """Relays to the caller's reporter; at the search's first backtrack, asks for a proof.

    A conflict the project's own requirements force shows up as a rejected candidate;
    proving it then costs a few metadata reads, where resolvelib's search would try every
    combination of the versions in between first.
    """

    def __init__(
        self, on_backtrack: Callable[[], None], inner: BaseReporter[Req, Candidate, str]
    ) -> None:
        self.on_backtrack = on_backtrack
        self.inner = inner

    def starting(self) -> None:
        self.inner.starting()

    def starting_round(self, index: int) -> None:
        self.inner.starting_round(index)

    def ending_round(self, index: int, state: Any) -> None:
        self.inner.ending_round(index, state)

    def ending(self, state: Any) -> None:
        self.inner.ending(state)

    def adding_requirement(self, requirement: Req, parent: Candidate | None) -> None:
        self.inner.adding_requirement(requirement, parent)

    def resolving_conflicts(
        self, causes: Collection[RequirementInformation[Req, Candidate]]
    ) -> None:
        self.inner.resolving_conflicts(causes)

    def rejecting_candidate(self, criterion: Any, candidate: Candidate) -> None:
        self.inner.rejecting_candidate(criterion, candidate)
        self.on_backtrack()

    def pinning(self, candidate: Candidate) -> None:
        self.inner.pinning(candidate)
