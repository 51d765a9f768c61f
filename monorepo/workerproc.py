"""Worker processes: plain interpreters that exchange pickled frames over two pipes.

Some of monorepo's work is Python under the GIL (tar headers, JSON index pages, zip
directories), so threads doing it mostly wait for each other, and a thread that only
waits for a socket waits for the GIL as well.  A second process runs that work on
another core.  The workers are started with ``python -c`` rather than
:mod:`multiprocessing`: nothing of the caller's ``__main__`` is imported again and no
threaded process is ever forked.  ``start_new_session`` keeps ^C away from them, so the
parent, which stops its workers itself, decides what an interrupt means.

The protocol is one frame per value: an 8-byte big-endian length, then a pickle.  Only
the parent's own children read what it sends, so pickle's trust model holds.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO

_FRAME = struct.Struct("!Q")
_CHUNK = 1 << 20
_CODE = "import sys; sys.path[:0] = {path!r}; from {module} import {function}; {function}()"


class WorkerLost(Exception):
    """A worker died, could not start or broke the protocol: do its job in-process."""


def send(fd: int, value: object) -> None:
    """Write *value* as one frame (callers sharing *fd* between threads hold a lock)."""
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_FRAME.pack(len(payload)) + payload)
    while view:
        view = view[os.write(fd, view) :]


def receive(fd: int) -> object:
    """The next value the other side sent; raises EOFError when it has gone."""
    (size,) = _FRAME.unpack(_read_exactly(fd, _FRAME.size))
    return pickle.loads(_read_exactly(fd, size))


def _read_exactly(fd: int, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, min(size - len(data), _CHUNK))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def picklable(value: object) -> bool:
    """Whether *value* survives the trip (an exception with odd arguments may not)."""
    try:
        pickle.loads(pickle.dumps(value))
    except Exception:
        return False
    return True


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on every platform
        return os.cpu_count() or 1


def index_workers() -> int:
    """How many ``monorepo.indexworker`` processes a lock starts beside itself.

    None on one core, where they would only take turns with the resolver.  Otherwise
    two: the resolving process is idle half the time and a single worker was the busy
    one (on two cores, a cold lock of 117 packages took 1.74 s with one, 1.59 s with two).
    """
    return 2 if cores() > 1 else 0


def prestart(module: str, function: str, count: int = 1) -> None:
    """Start *count* workers now, for the next :func:`spawn` calls of that kind to take.

    A worker's interpreter start-up and imports take about a tenth of a second; started
    first thing, they run on another core while this process does its own imports.
    Spares nobody takes are stopped at exit.
    """
    with _spares_lock:
        spares = _spares.setdefault((module, function), [])
        while len(spares) < count:
            try:
                spares.append(_start(module, function))
            except WorkerLost:
                return
            global _stop_registered
            if not _stop_registered:
                atexit.register(_stop_spares)
                _stop_registered = True


def _stop_spares() -> None:
    with _spares_lock:
        spares = [p for kind in _spares.values() for p in kind]
        _spares.clear()
    for process in spares:
        stop(process)


def stop_spares(module: str, function: str) -> None:
    """Stop the spares of that kind nobody took (a caller that prestarted and is done)."""
    with _spares_lock:
        spares = _spares.pop((module, function), [])
    for process in spares:
        stop(process)


_spares: dict[tuple[str, str], list[subprocess.Popen[bytes]]] = {}
_spares_lock = threading.Lock()
_stop_registered = False


def spawn(module: str, function: str) -> subprocess.Popen[bytes]:
    """Start ``python -c "from <module> import <function>; <function>()"`` with pipes,
    or take the spare :func:`prestart` started.

    The child sees this process's ``sys.path`` (so an editable or zipapp install finds
    the same monorepo) and environment; its stderr is discarded, since a failure
    reaches the parent as a lost worker.  Raises :class:`WorkerLost` if it cannot start.
    """
    with _spares_lock:
        spares = _spares.get((module, function), [])
        while spares:
            spare = spares.pop(0)
            if spare.poll() is None:
                return spare
    return _start(module, function)


def _start(module: str, function: str) -> subprocess.Popen[bytes]:
    if not sys.executable:
        raise WorkerLost("no interpreter to start")
    path = [p for p in sys.path if isinstance(p, str)]
    code = _CODE.format(path=path, module=module, function=function)
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            bufsize=0,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as error:
        raise WorkerLost(str(error)) from error
    _widen(process.stdin, process.stdout)
    return process


#: Pipe capacity asked for (Linux's default ceiling for unprivileged processes).
PIPE_SIZE = 1 << 20


def _widen(*pipes: IO[bytes] | None) -> None:
    """Give the pipes 1 MiB instead of Linux's 64 KiB where the system allows it.

    A parsed index page is most of a megabyte: through 64 KiB the worker's write blocked
    a dozen times until the parent's reader thread (which needs the parent's GIL) drained
    it, so the worker sat in ``write`` for a fifth of its busy time in a cold lock.
    Elsewhere, or when refused, the default stays; only speed depends on it.
    """
    try:
        import fcntl
    except ImportError:  # not on Windows
        return
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is None:
        return
    for pipe in pipes:
        if pipe is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(pipe.fileno(), setsize, PIPE_SIZE)


def stop(
    process: subprocess.Popen[bytes],
    timeout: float = 10.0,
    *,
    then: Callable[[], None] | None = None,
) -> None:
    """Close the worker's stdin (its signal to finish), wait for it, kill it if it hangs.

    *then* runs once the worker has exited and before its stdout is closed: a thread
    reading replies must see the end of the stream, not a closed (or reused) descriptor.
    """
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if then is not None:
        then()
    if process.stdout is not None:
        process.stdout.close()


def serving_fds() -> tuple[int, int]:
    """In the worker: (request fd, reply fd); stray prints go to stderr, not the protocol."""
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sys.stdout = sys.stderr
    return stdin, stdout
