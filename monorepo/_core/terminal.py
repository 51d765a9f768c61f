"""Progress on a terminal: what the command line shows while the library works.

The library calls a reporter from many threads at once (index, pull, build and pool
threads; docs/api.md lists them), so every method here takes one lock: rich's live
display is not meant to be fed from several threads without one, and the bookkeeping
of open tasks (what a Ctrl-C says was left unfinished) must stay consistent.

Each open task is one row: its description (which names the package and phase), a
count that only grows (``3/12``, or ``3`` when the total is unknown, never ``0/?``)
and the time it has run, so a long step says what it is waiting on.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from monorepo._core.reporter import Level

ColorMode = Literal["auto", "always", "never"]

_STYLES = {"error": "1;31", "warning": "1;33", "debug": "2"}


def use_color(mode: ColorMode, stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """Whether to colour output on *stream*: ``always``, ``never``, or (``auto``) on a
    terminal unless ``NO_COLOR`` is set to anything non-empty (no-color.org)."""
    env = os.environ if environ is None else environ
    if mode == "always":
        return True
    if mode == "never" or env.get("NO_COLOR"):
        return False
    return _isatty(stream) and env.get("TERM") != "dumb"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@dataclass
class OpenTask:
    """A task started and not yet done, as the reporter knows it."""

    key: str
    description: str
    total: int | None
    completed: int
    started: float

    def summary(self) -> str:
        """``Pulling 12 packages into duni/ (5/12 done)``."""
        if self.total is not None:
            return f"{self.description} ({self.completed}/{self.total} done)"
        if self.completed:
            return f"{self.description} ({self.completed} done)"
        return self.description


class TerminalReporter:
    """Progress (rich, on stderr) when it is a terminal, warnings always, debug with -v.

    Thread-safe: any thread may call any method at any time.  A task key opened again
    while open updates its row instead of adding a second one.
    """

    def __init__(
        self,
        *,
        verbose: int,
        quiet: bool,
        stream: TextIO | None = None,
        progress: bool = True,
        color: ColorMode = "auto",
    ) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.color = use_color(color, self.stream)
        self._lock = threading.RLock()
        self._open: dict[str, OpenTask] = {}
        self._rows: dict[str, Any] = {}
        self._progress: Any = None
        if progress and not quiet and _isatty(self.stream):
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(),
                console=Console(file=self.stream, no_color=not self.color),
                transient=True,
            )
            self._progress.start()

    def close(self, timeout: float = -1) -> None:
        """Stop the live display (idempotent); lines printed after it stay on screen.

        *timeout* bounds the wait for another thread's call in progress (an interrupted
        process ending at once must not hang on it); the display is then left as it is.
        """
        if not self._lock.acquire(timeout=timeout):
            return
        try:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None
                self._rows.clear()
        finally:
            self._lock.release()

    def unfinished(self, timeout: float = -1) -> list[OpenTask]:
        """The tasks started and not done, oldest first (what an interruption left)."""
        if not self._lock.acquire(timeout=timeout):
            return []
        try:
            return sorted(self._open.values(), key=lambda t: t.started)
        finally:
            self._lock.release()

    # ------------------------------------------------------------ Reporter protocol

    def task(self, key: str, description: str, total: int | None = None) -> None:
        with self._lock:
            known = self._open.get(key)
            if known is not None:
                known.description, known.total = description, total
            else:
                known = self._open[key] = OpenTask(key, description, total, 0, time.monotonic())
                if self._progress is None and self.verbose:
                    self._write(description + "...")
            self._draw(known)

    def advance(self, key: str, steps: int = 1) -> None:
        with self._lock:
            known = self._open.get(key)
            if known is not None:
                known.completed += steps
                self._draw(known)

    def done(self, key: str) -> None:
        with self._lock:
            known = self._open.pop(key, None)
            row = self._rows.pop(key, None)
            if row is not None and self._progress is not None:
                self._progress.remove_task(row)
            if known is not None and self._progress is None and self.verbose > 1:
                seconds = time.monotonic() - known.started
                self._write(f"{known.summary()}: finished in {seconds:.1f}s", "debug")

    def message(self, level: Level, text: str) -> None:
        if (
            level == "warning"
            or (level == "info" and not self.quiet)
            or (level == "debug" and self.verbose)
        ):
            with self._lock:
                prefix = "warning: " if level == "warning" else ""
                self._write(prefix + text, level)

    def error(self, text: str) -> None:
        """An ``error:`` paragraph (the CLI's, never the library's)."""
        with self._lock:
            self._write("error: " + text, "error")

    # ------------------------------------------------------------ drawing

    def _draw(self, known: OpenTask) -> None:
        if self._progress is None:
            return
        if known.total is not None:
            counts = f"{known.completed}/{known.total}"
        else:
            counts = str(known.completed) if known.completed else ""
        row = self._rows.get(known.key)
        if row is None:
            self._rows[known.key] = self._progress.add_task(
                known.description, total=known.total, completed=known.completed, counts=counts
            )
        else:
            self._progress.update(
                row,
                description=known.description,
                total=known.total,
                completed=known.completed,
                counts=counts,
            )

    def _write(self, text: str, level: str = "info") -> None:
        style = _STYLES.get(level) if self.color else None
        if style is not None:
            head, sep, rest = text.partition(": ")
            if level in ("error", "warning") and sep:
                text = f"\x1b[{style}m{head}\x1b[0m{sep}{rest}"
            elif level == "debug":
                text = f"\x1b[{style}m{text}\x1b[0m"
        if self._progress is not None:
            from rich.text import Text

            self._progress.console.print(Text.from_ansi(text), highlight=False)
        else:
            print(text, file=self.stream, flush=True)
