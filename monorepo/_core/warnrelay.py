"""Build backends' warnings routed to the build's log (or the caller), never the terminal.

pyproject-hooks issues each warning a backend emitted again in the calling process; the
library never prints, so :data:`RELAY` sends them where the caller says: a build's log
(``monorepo build``) or a list (``monorepo lock`` asking a backend for its requirements).
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["RELAY", "WarningRelay"]


class WarningRelay:
    """Backend warnings into the build's log, not onto the terminal.

    pyproject-hooks hands each warning a backend emitted back to the caller: it issues it
    again with :func:`warnings.warn_explicit` as a :class:`~pyproject_hooks.BuildBackendWarning`,
    in the thread that called the hook.  While :meth:`installed`, :func:`warnings.showwarning`
    (documented as replaceable) sends those to the log the calling thread named with
    :meth:`to`; every other warning, and one from a thread without a log, goes where it
    went before.  Builds run in parallel threads, hence one log per thread.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._users = 0
        self._previous: Callable[..., None] = warnings.showwarning

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._previous = warnings.showwarning
                warnings.showwarning = self._show
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and warnings.showwarning == self._show:
                    warnings.showwarning = self._previous

    @contextlib.contextmanager
    def collecting(self, sink: list[str]) -> Iterator[None]:
        """Backend warnings issued in this thread are appended to *sink* during the block
        (a lock asking a backend has no log: it reports them itself)."""
        self._local.sink = sink
        try:
            yield
        finally:
            self._local.sink = None

    @contextlib.contextmanager
    def to(self, log: Path) -> Iterator[None]:
        """Backend warnings issued in this thread go to the end of *log* during the block."""
        self._local.log = log
        try:
            yield
        finally:
            self._local.log = None

    def _show(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        # pyproject_hooks is imported here, not at the top: a lock that never calls a
        # backend should not pay for loading it (tests/test_indexworker.py checks).
        from pyproject_hooks import BuildBackendWarning

        sink: list[str] | None = getattr(self._local, "sink", None)
        if sink is not None and issubclass(category, BuildBackendWarning):
            sink.append(f"{filename}:{lineno}: {message}")
            return
        log: Path | None = getattr(self._local, "log", None)
        if log is None or not issubclass(category, BuildBackendWarning):
            self._previous(message, category, filename, lineno, file, line)
            return
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"{filename}:{lineno}: {category.__name__}: {message}\n")


RELAY = WarningRelay()
"""The process's one relay: :func:`monorepo.building.builder.build` installs it."""
