"""Speed only: extract_sdist in worker processes, so sdists unpack on every core at once.

Saves most of a cold pull's extraction time on a machine with several cores (data
set: 1.6 to 1.3 s warm).  Turn it off with ``MONOREPO_NO_SPEEDUPS=extract-workers``:
every archive is then extracted in the calling thread, by the same code.
"""

from __future__ import annotations

import os
import pickle
import queue
import threading
from pathlib import Path
from typing import cast

from monorepo._core.fstree import remove_tree
from monorepo._core.speed import workerproc
from monorepo._core.speed.switches import enabled
from monorepo._core.speed.workerproc import WorkerLost
from monorepo.errors import ExtractError
from monorepo.extract.archive import extract_sdist
from monorepo.extract.rules import DEFAULT_LIMITS, Limits
from monorepo.extract.sinks import FileStamps

# ------------------------------------------------------------------ worker processes

_Request = tuple[str, str, str, Limits, "str | None"]


class _Worker:
    """One worker interpreter serving extractions over its stdin and stdout."""

    def __init__(self, inherit_fds: tuple[int, ...] = ()) -> None:
        self.process = workerproc.spawn(__name__, "_serve", inherit_fds=inherit_fds)
        if self._exchange(None) != "ready":
            self.stop()
            raise WorkerLost("no handshake")

    def _exchange(self, request: _Request | None) -> object:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        try:
            if request is not None:
                workerproc.send(stdin.fileno(), request)
            return workerproc.receive(stdout.fileno())
        except (OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
            raise WorkerLost(str(e)) from e

    def call(self, request: _Request) -> FileStamps:
        reply = self._exchange(request)
        if not isinstance(reply, tuple) or len(reply) != 2:
            raise WorkerLost(f"unexpected reply {reply!r}")
        status, value = reply
        if status == "error" and isinstance(value, BaseException):
            raise value
        if status != "ok" or not isinstance(value, dict):
            raise WorkerLost(f"unexpected reply {reply!r}")
        return value

    def stop(self) -> None:
        workerproc.stop(self.process)


def _serve() -> None:
    """The worker's loop: one extraction per request until its stdin closes."""
    stdin, stdout = workerproc.serving_fds()
    workerproc.send(stdout, "ready")
    while True:
        try:
            request = cast(_Request, workerproc.receive(stdin))
        except EOFError:
            return
        archive, dest, package, limits, name = request
        reply: tuple[str, object]
        try:
            reply = (
                "ok",
                extract_sdist(Path(archive), Path(dest), package=package, limits=limits, name=name),
            )
        except Exception as error:  # sent back, and raised there
            reply = ("error", error if workerproc.picklable(error) else ExtractError(str(error)))
        workerproc.send(stdout, reply)


class ExtractorPool:
    """:func:`extract_sdist` in worker processes, so sdists unpack on every core at once.

    Planning and writing a tar is Python work under the GIL (tarfile's header parsing
    above all), so threads extracting several sdists mostly wait for each other.  The
    workers are plain interpreters started with ``python -c`` rather than
    multiprocessing: nothing of the caller's ``__main__`` is imported again and no
    threaded process is forked.  Each serves one extraction at a time over a pipe;
    the result (or the :class:`~monorepo.errors.ExtractError`) is the same as in-thread.
    Archives smaller than *min_size* bytes are extracted in the calling thread, where a
    round trip costs more than it saves, and so is everything once a worker could not
    be started or was lost.  Thread safe; :meth:`close` stops the workers.
    *inherit_fds*: descriptors every worker holds until it exits (pull's lock).
    """

    def __init__(
        self,
        processes: int | None = None,
        *,
        min_size: int = 256 * 1024,
        inherit_fds: tuple[int, ...] = (),
    ) -> None:
        self.processes = processes if processes is not None else (os.cpu_count() or 1)
        if not enabled("extract-workers"):
            self.processes = 0  # everything in the calling thread
        self.min_size = min_size
        self.inherit_fds = inherit_fds
        self._idle: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._in_thread = False
        self.started = 0
        """How many worker processes were started (for diagnostics and tests)."""

    def __enter__(self) -> ExtractorPool:
        return self

    def prestart(self) -> None:
        """Start the worker processes now, for a caller that knows archives are coming:
        their interpreters start up while it downloads, not when the first archive is
        ready (about a tenth of a second each)."""
        if self.processes > 0 and not self._in_thread:
            workerproc.prestart(
                __name__,
                "_serve",
                self.processes - len(self._workers),
                inherit_fds=self.inherit_fds,
            )

    def __exit__(self, *exc: object) -> None:
        self.close()

    def extract(
        self,
        archive: Path,
        dest: Path,
        *,
        package: str,
        limits: Limits = DEFAULT_LIMITS,
        name: str | None = None,
    ) -> FileStamps:
        """:func:`extract_sdist`, in a worker when the archive is large enough."""
        try:
            large = archive.stat().st_size >= self.min_size
        except OSError:
            large = False  # extract_sdist words the error
        worker = self._acquire() if large else None
        if worker is not None:
            request: _Request = (os.fspath(archive), os.fspath(dest), package, limits, name)
            try:
                stamps = worker.call(request)
            except WorkerLost:
                self._lose(worker)
                if os.path.lexists(dest):  # the worker died after its final rename
                    remove_tree(dest, ignore_errors=True)
            except BaseException:
                self._idle.put(worker)
                raise
            else:
                self._idle.put(worker)
                return stamps
        return extract_sdist(archive, dest, package=package, limits=limits, name=name)

    def _acquire(self) -> _Worker | None:
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                worker = None
            if worker is not None:
                return worker
            with self._lock:
                if self._in_thread or self.processes < 1:
                    return None
                if len(self._workers) < self.processes:
                    try:
                        worker = _Worker(self.inherit_fds)
                    except WorkerLost:
                        self._in_thread = True
                        return None
                    self._workers.append(worker)
                    self.started += 1
                    return worker
            worker = self._idle.get()
            if worker is not None:
                return worker
            # None: a worker was lost, so there is room to start another.

    def _lose(self, worker: _Worker) -> None:
        worker.stop()
        with self._lock:
            self._workers.remove(worker)
            self._in_thread = True  # a worker that dies once is likely to die again
        self._idle.put(None)

    def close(self) -> None:
        """Stop every worker (each finishes its current extraction first)."""
        with self._lock:
            workers, self._workers = self._workers, []
            self._in_thread = True
        for worker in workers:
            worker.stop()
        workerproc.stop_spares(__name__, "_serve", inherit_fds=self.inherit_fds)
        self._idle.put(None)
