"""Progress reporting without printing.

The library never prints (DESIGN.md section 9): long operations call a
:class:`Reporter`, and the CLI supplies one that draws a progress bar on a terminal
while an embedding tool supplies its own.  :class:`NullReporter` is the default.
"""

from __future__ import annotations

from typing import Literal, Protocol

Level = Literal["debug", "info", "warning"]


class Reporter(Protocol):
    """What the library tells its caller while it works."""

    def task(self, key: str, description: str, total: int | None = None) -> None:
        """A unit of work named *key* starts; *total* steps if known."""

    def advance(self, key: str, steps: int = 1) -> None:
        """*steps* more steps of task *key* are done."""

    def done(self, key: str) -> None:
        """Task *key* is finished."""

    def message(self, level: Level, text: str) -> None:
        """A line for the user (``warning`` is always shown, ``debug`` only verbose)."""


class NullReporter:
    """A reporter that discards everything: the library default."""

    def task(self, key: str, description: str, total: int | None = None) -> None:
        pass

    def advance(self, key: str, steps: int = 1) -> None:
        pass

    def done(self, key: str) -> None:
        pass

    def message(self, level: Level, text: str) -> None:
        pass


class RecordingReporter(NullReporter):
    """Keeps messages: used by tests and by ``--json`` output to collect warnings."""

    def __init__(self) -> None:
        self.messages: list[tuple[Level, str]] = []

    def message(self, level: Level, text: str) -> None:
        self.messages.append((level, text))
