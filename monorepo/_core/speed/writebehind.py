"""Cache writes held back until a process has a moment with nothing else to do.

A cold lock on two cores is CPU-bound: its resolving process and two index workers use
about all of both cores while the resolution runs, and every bit of CPU spent then is
wall time.  The workers' cache entries (each page's body in the HTTP cache, its parsed
groups in the page cache, a fifth of a second for the data bench set) are for later runs
only: within a run each page is read once, by one worker.  So they are queued here and
written once the worker has answered everything and stayed idle for a moment (the end of
a resolution, while the resolving process renders the lock), or when too much is queued,
and at the latest by :meth:`WriteBehind.close`, before the worker exits.

A write that fails is the writer's business (the caches ignore their own write errors);
one that raises is dropped, so that one bad entry never stops the others.

Speed only: saves the index workers' cache writes during a cold lock (about a fifth
of a second on the data bench set).  Turn it off with ``MONOREPO_NO_SPEEDUPS=write-behind``:
the workers then write each entry as it arrives.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

#: Idle time after the last request before queued writes start, in seconds.
QUIET = 0.025

#: Queued bytes past which writes start even while requests are under way.
LIMIT = 256 << 20


class WriteBehind:
    """Queued writes, run by one background thread when :meth:`busy` blocks are over.

    Thread-safe.  Writes run in the order queued, outside any lock.
    """

    def __init__(self, *, quiet: float = QUIET, limit: int = LIMIT) -> None:
        self._quiet = quiet
        self._limit = limit
        self._changed = threading.Condition()
        self._queue: list[Callable[[], None]] = []
        self._queued_bytes = 0
        self._busy = 0
        self._idle_since = time.monotonic()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="write-behind", daemon=True)
        self._thread.start()

    def defer(self, write: Callable[[], None], size: int = 0) -> None:
        """Run *write* later; *size* is what it holds in memory until then."""
        with self._changed:
            if not self._closing:
                self._queue.append(write)
                self._queued_bytes += size
                self._changed.notify()
                return
        _run_one(write)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """A block of work during which queued writes wait (unless too much is queued)."""
        with self._changed:
            self._busy += 1
        try:
            yield
        finally:
            with self._changed:
                self._busy -= 1
                if not self._busy:
                    self._idle_since = time.monotonic()
                self._changed.notify()

    def close(self) -> None:
        """Run every queued write now, and any deferred later at once; returns when done."""
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                while True:
                    if self._queue and (self._closing or self._queued_bytes > self._limit):
                        break
                    if self._queue and not self._busy:
                        wait = self._idle_since + self._quiet - time.monotonic()
                        if wait <= 0:
                            break
                        self._changed.wait(wait)
                        continue
                    if self._closing:
                        return
                    self._changed.wait()
                writes, self._queue = self._queue, []
                self._queued_bytes = 0
            for write in writes:
                _run_one(write)


def _run_one(write: Callable[[], None]) -> None:
    with contextlib.suppress(Exception):
        write()
