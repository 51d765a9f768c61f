"""Progress on a terminal: what the command line shows while the library works."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from monorepo._core.reporter import Level


class TerminalReporter:
    """Progress on a terminal (rich, on stderr), warnings always, debug with -v."""

    def __init__(self, *, verbose: int, quiet: bool, stream: TextIO | None = None) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        if not quiet and self.stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._progress.start()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()

    def task(self, key: str, description: str, total: int | None = None) -> None:
        if self._progress is not None:
            self._tasks[key] = self._progress.add_task(description, total=total)
        elif self.verbose:
            self._print(description + "...")

    def advance(self, key: str, steps: int = 1) -> None:
        if self._progress is not None and key in self._tasks:
            self._progress.advance(self._tasks[key], steps)

    def done(self, key: str) -> None:
        if self._progress is not None and key in self._tasks:
            self._progress.remove_task(self._tasks.pop(key))

    def message(self, level: Level, text: str) -> None:
        if (
            level == "warning"
            or (level == "info" and not self.quiet)
            or (level == "debug" and self.verbose)
        ):
            prefix = "warning: " if level == "warning" else ""
            self._print(prefix + text)

    def _print(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream)
