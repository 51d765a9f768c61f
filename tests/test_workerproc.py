"""Worker processes end with their parent, however it ends, and can hold its lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="looks at processes through /proc"
)

# A parent that starts a worker which never returns on its own (signal.pause),
# optionally holding a file lock whose descriptor the worker inherits, then waits.
PARENT = """
import sys, time
import filelock
from monorepo._core.speed import workerproc
held = []
if len(sys.argv) > 1:
    lock = filelock.FileLock(sys.argv[1], on_acquired=held.append)
    lock.acquire()
    worker = workerproc.spawn("signal", "pause", inherit_fds=held)
else:
    worker = workerproc.spawn("signal", "pause")
print(worker.pid, *held, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def start_parent(*args: str) -> tuple[subprocess.Popen[str], list[int]]:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    return parent, [int(n) for n in parent.stdout.readline().split()]


def test_a_busy_worker_dies_with_its_parent_even_by_sigkill() -> None:
    parent, (worker,) = start_parent()
    try:
        assert alive(worker)
        parent.send_signal(signal.SIGKILL)  # the parent only: the worker has its own session
        parent.wait()
        deadline = time.monotonic() + 60  # generous: it goes at once, or never
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not alive(worker), "the worker outlived its parent"
    finally:
        if alive(worker):
            os.kill(worker, signal.SIGKILL)
        parent.kill()
        parent.wait()


def test_a_worker_holds_an_inherited_lock_until_it_is_gone(tmp_path: Path) -> None:
    import filelock

    path = tmp_path / "lock"
    parent, (worker, fd) = start_parent(str(path))
    try:
        # the worker has the very lock descriptor open (the same open file: the same lock)
        assert os.readlink(f"/proc/{worker}/fd/{fd}") == str(path)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        # The lock is free only once no process holds its open file: taking it means
        # the worker is gone, not about to go.
        filelock.FileLock(path).acquire(timeout=60)
        assert not alive(worker)
    finally:
        if alive(worker):
            os.kill(worker, signal.SIGKILL)
        parent.kill()
        parent.wait()


def test_a_worker_stopped_normally_exits_cleanly() -> None:
    from monorepo._core.speed import workerproc

    process = workerproc.spawn("monorepo.extract.speed.pool", "_serve")
    workerproc.stop(process)
    assert process.returncode == 0
    assert process not in workerproc._lifelines
