"""Worker processes: plain interpreters that exchange pickled frames over two pipes.

Some of monorepo's work is Python under the GIL (tar headers, JSON index pages, zip
directories), so threads doing it mostly wait for each other, and a thread that only
waits for a socket waits for the GIL as well.  A second process runs that work on
another core.  The workers are started with ``python -c`` rather than
:mod:`multiprocessing`: nothing of the caller's ``__main__`` is imported again and no
threaded process is ever forked.  ``start_new_session`` keeps ^C away from them, so the
parent, which stops its workers itself, decides what an interrupt means.

A worker never outlives its parent: it watches a pipe whose only writer is the
parent, and exits at once when that pipe closes, which the kernel does when the
parent dies, even by SIGKILL (a signal to the parent's process group does not reach
a worker in its own session).  Otherwise a killed pull's workers went on writing
into ``duni/`` while the next pull cleaned it up.  ``PR_SET_PDEATHSIG`` would be
Linux only, and it fires when the *thread* that started the worker ends.  A caller
may also hand its workers descriptors to inherit (``inherit_fds``): a lock held
through one stays held until the last of them has exited.

The protocol is one frame per value: an 8-byte big-endian length, then a pickle.  Only
the parent's own children read what it sends, so pickle's trust model holds.

Speed only: the index workers and the extraction workers run on it.  Without them
(``MONOREPO_NO_SPEEDUPS=index-workers,extract-workers``) the same work runs in threads
of the calling process, with the same results.
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
from collections.abc import Callable, Sequence
from typing import IO

from monorepo._core.speed.switches import enabled

_FRAME = struct.Struct("!Q")
_CHUNK = 1 << 20
_CODE = (
    "import sys; sys.path[:0] = {path!r}; from monorepo._core.speed.workerproc import watch_parent;"
    " watch_parent({watch}); from {module} import {function}; {function}()"
)


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
    """How many ``monorepo.index.speed.worker`` processes a lock starts beside itself.

    None on one core, where they would only take turns with the resolver.  Otherwise
    two: the resolving process is idle half the time and a single worker was the busy
    one (on two cores, a cold lock of 117 packages took 1.74 s with one, 1.59 s with two).
    None either with ``MONOREPO_NO_SPEEDUPS=index-workers``.
    """
    return 2 if cores() > 1 and enabled("index-workers") else 0


def prestart(
    module: str, function: str, count: int = 1, *, inherit_fds: Sequence[int] = ()
) -> None:
    """Start *count* workers now, for the next :func:`spawn` calls of that kind to take.

    A worker's interpreter start-up and imports take about a tenth of a second; started
    first thing, they run on another core while this process does its own imports.
    Spares nobody takes are stopped at exit.  *inherit_fds*: see :func:`spawn`.
    """
    inherited = tuple(inherit_fds)
    with _spares_lock:
        spares = _spares.setdefault((module, function), [])
        while sum(_inherited.get(p) == inherited for p in spares) < count:
            try:
                spare = _start(module, function, inherited)
            except WorkerLost:
                return
            spares.append(spare)
            _inherited[spare] = inherited
            global _stop_registered
            if not _stop_registered:
                atexit.register(_stop_spares)
                _stop_registered = True


def _stop_spares() -> None:
    with _spares_lock:
        spares = [p for kind in _spares.values() for p in kind]
        _spares.clear()
        _inherited.clear()
    for process in spares:
        stop(process)


def stop_spares(module: str, function: str, *, inherit_fds: Sequence[int] = ()) -> None:
    """Stop the spares of that kind nobody took (a caller that prestarted and is done)."""
    inherited = tuple(inherit_fds)
    with _spares_lock:
        kind = _spares.get((module, function), [])
        spares = [p for p in kind if _inherited.get(p) == inherited]
        kind[:] = [p for p in kind if p not in spares]
        for process in spares:
            del _inherited[process]
    for process in spares:
        stop(process)


_spares: dict[tuple[str, str], list[subprocess.Popen[bytes]]] = {}
_inherited: dict[subprocess.Popen[bytes], tuple[int, ...]] = {}
"""What each spare inherited: it serves only a spawn asking for the same."""
_spares_lock = threading.Lock()
_stop_registered = False
_lifelines: dict[subprocess.Popen[bytes], int] = {}
"""Worker -> the write end of the pipe it watches (closed once it has exited)."""
_lifelines_lock = threading.Lock()


def spawn(
    module: str, function: str, *, inherit_fds: Sequence[int] = ()
) -> subprocess.Popen[bytes]:
    """Start ``python -c "from <module> import <function>; <function>()"`` with pipes,
    or take the spare :func:`prestart` started.

    The child sees this process's ``sys.path`` (so an editable or zipapp install finds
    the same monorepo) and environment; its stderr is discarded, since a failure
    reaches the parent as a lost worker.  It exits when this process dies (see the
    module docstring).  *inherit_fds* are descriptors the child inherits and keeps
    open until it exits (pull passes its lock: the next pull waits for the workers of
    a killed one).  Raises :class:`WorkerLost` if it cannot start.
    """
    inherited = tuple(inherit_fds)
    with _spares_lock:
        spares = _spares.get((module, function), [])
        for spare in [p for p in spares if _inherited.get(p) == inherited]:
            spares.remove(spare)
            del _inherited[spare]
            if spare.poll() is None:
                return spare
            _cut_lifeline(spare)
    return _start(module, function, inherited)


def _start(module: str, function: str, inherit_fds: Sequence[int] = ()) -> subprocess.Popen[bytes]:
    if not sys.executable:
        raise WorkerLost("no interpreter to start")
    path = [p for p in sys.path if isinstance(p, str)]
    # Both ends are created non-inheritable: only this worker gets the read end
    # (pass_fds), and no other child of this process ever holds the write end.
    watch, lifeline = os.pipe()
    code = _CODE.format(path=path, module=module, function=function, watch=watch)
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            bufsize=0,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=(watch, *inherit_fds),
        )
    except OSError as error:
        os.close(lifeline)
        raise WorkerLost(str(error)) from error
    finally:
        os.close(watch)
    with _lifelines_lock:
        _lifelines[process] = lifeline
    _widen(process.stdin, process.stdout)
    return process


def _cut_lifeline(process: subprocess.Popen[bytes]) -> None:
    """Close the write end *process* watches (once it has exited: closing it ends it)."""
    with _lifelines_lock:
        lifeline = _lifelines.pop(process, None)
    if lifeline is not None:
        os.close(lifeline)


def watch_parent(fd: int) -> None:
    """In the worker: end this process at once when the parent is gone.

    *fd* is the read end of a pipe whose only writer is the parent; a read returns
    nothing once every writer is closed, which happens when the parent dies, however.
    A thread waits for that: the worker's own work (a long extraction) does not have
    to look.  ``os._exit``: what the worker was writing is unfinished work under a
    ``.tmp-`` name, which the next pull deletes.
    """

    def wait() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 1):
                pass
        os._exit(70)

    threading.Thread(target=wait, name="watch-parent", daemon=True).start()


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
    _cut_lifeline(process)
    if then is not None:
        then()
    if process.stdout is not None:
        process.stdout.close()


def serving_fds() -> tuple[int, int]:
    """In the worker: (request fd, reply fd); stray prints go to stderr, not the protocol."""
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sys.stdout = sys.stderr
    return stdin, stdout
