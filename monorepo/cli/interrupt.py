"""Ctrl-C: every command stops within a second and says what it left unfinished.

A first SIGINT raises :class:`KeyboardInterrupt` in the main thread, as usual, so
the command unwinds through its ``finally`` blocks; but worker threads (pull's,
build's, the index client's) cannot be interrupted, and a thread pool's exit waits
for the step each is in (a compile, a download), which took 12 s.  So the console
script (:func:`install`) also starts a timer: if the command has not ended within
:data:`GRACE` seconds, the process prints what was unfinished, stops its child
processes (builds, compilers) and ends with status 130.  Nothing is lost by that:
every file monorepo writes is written whole or not at all (a temporary file and a
rename), so the next run starts where this one stopped.  A second Ctrl-C ends the
process at once.

In-process callers of :func:`monorepo.cli.commands.main` (tests, embedding tools)
keep ordinary ``KeyboardInterrupt`` semantics: nothing is installed for them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from monorepo._core.terminal import TerminalReporter

GRACE = 0.6
"""Seconds a command has to unwind after Ctrl-C before the process ends anyway."""
EXIT_INTERRUPTED = 130

_state: dict[str, Any] = {"reporter": None, "json": False, "hard": False, "hit": False}
_said = threading.Lock()


def install() -> None:
    """Make Ctrl-C end this process within :data:`GRACE` seconds (the console script)."""
    _state["hard"] = True
    signal.signal(signal.SIGINT, _on_sigint)


@contextlib.contextmanager
def watching(reporter: TerminalReporter, *, as_json: bool = False) -> Iterator[None]:
    """While the command runs, an interruption reports *reporter*'s open tasks."""
    _state["reporter"], _state["json"] = reporter, as_json
    try:
        yield
    finally:
        _state["reporter"] = None


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    if _state["hit"]:
        _end_now()
    _state["hit"] = True
    reporter = _state["reporter"]
    if reporter is not None:
        # What was open when the key was pressed: the library's ``finally`` blocks close
        # their tasks while the KeyboardInterrupt unwinds, before the CLI reports.
        _state["unfinished"] = reporter.unfinished(timeout=0)
    timer = threading.Timer(GRACE, _end_now)
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt


def message(reporter: TerminalReporter | None, timeout: float = -1) -> str:
    """``interrupted: left unfinished: ...`` for the tasks *reporter* still has open."""
    tasks = reporter.unfinished(timeout) if reporter is not None else []
    tasks = tasks or list(_state.get("unfinished") or ())
    left = "; ".join(t.summary() for t in tasks)
    what = f" left unfinished: {left}." if left else ""
    return (
        f"interrupted.{what} Nothing is half-written: run the command again to finish"
        " (finished work is kept)."
    )


def report(reporter: TerminalReporter, *, as_json: bool) -> int:
    """Say what an interruption left unfinished (once per process); returns 130."""
    if not _said.acquire(blocking=False):
        return EXIT_INTERRUPTED
    text = message(reporter, timeout=0.2)
    reporter.close(timeout=0.2)
    if as_json:
        error = {"code": "interrupted", "type": "KeyboardInterrupt", "message": text}
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.write(json.dumps({"error": {**error, "exit_code": 130}}) + "\n")
            sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    return EXIT_INTERRUPTED


def _end_now() -> None:
    reporter = _state["reporter"]
    if reporter is not None:
        report(reporter, as_json=_state["json"])
    _stop_children()
    os._exit(EXIT_INTERRUPTED)


def _stop_children() -> None:
    """SIGTERM to every process descending from this one (builds and their compilers)."""
    me = os.getpid()
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc/self").exists() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    stack, found = [me], []
    while stack:
        for child in parents.get(stack.pop(), ()):
            found.append(child)
            stack.append(child)
    for pid in found:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
