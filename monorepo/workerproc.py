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

import contextlib
import os
import pickle
import struct
import subprocess
import sys

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


def spawn(module: str, function: str) -> subprocess.Popen[bytes]:
    """Start ``python -c "from <module> import <function>; <function>()"`` with pipes.

    The child sees this process's ``sys.path`` (so an editable or zipapp install finds
    the same monorepo) and environment; its stderr is discarded, since a failure
    reaches the parent as a lost worker.  Raises :class:`WorkerLost` if it cannot start.
    """
    if not sys.executable:
        raise WorkerLost("no interpreter to start")
    path = [p for p in sys.path if isinstance(p, str)]
    code = _CODE.format(path=path, module=module, function=function)
    try:
        return subprocess.Popen(
            [sys.executable, "-c", code],
            bufsize=0,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as error:
        raise WorkerLost(str(error)) from error


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Close the worker's stdin (its signal to finish), wait for it, kill it if it hangs."""
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def serving_fds() -> tuple[int, int]:
    """In the worker: (request fd, reply fd); stray prints go to stderr, not the protocol."""
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sys.stdout = sys.stderr
    return stdin, stdout
