"""pull's own state in duni/: its records directory (never reached through a link), its lock."""

from __future__ import annotations

import contextlib
import os
import shlex
import stat
from collections.abc import Iterator
from pathlib import Path

import filelock

from monorepo._core.fstree import remove_tree
from monorepo._core.reporter import Reporter
from monorepo.errors import MonorepoError, PullError, disk_full
from monorepo.sources.fetch import STAGING_PREFIX
from monorepo.sources.store import ContentStore

STATE_DIR = ".monorepo"
"""pull's records inside duni/ (manifests, the file lock)."""


STATE_GITIGNORE = """\
# Written by `monorepo pull`: its records of the trees it placed in duni/ on this
# machine (manifests, file stamps, its lock).  They describe this checkout only and
# are not committed; `monorepo pull` rebuilds them from the sources.
*
"""


def state_problems(duni: Path) -> list[tuple[Path, str]]:
    """What makes ``duni/.monorepo`` unfit for pull's records: (path, why) pairs.

    duni/ is meant to be committed, so a branch can plant ``duni/.monorepo`` as a
    symbolic link, or a link in it: pull would read its records from, write them to,
    and delete ``*.manifest``, ``*.stat``, ``*.facts`` and ``.tmp-*`` files in
    wherever it points.  The directory must be a real one holding only regular
    files (its own records and lock; nothing else is ever put there).  Empty when
    it is (or does not exist yet).
    """
    state = duni / STATE_DIR
    try:
        st = os.lstat(state)
    except FileNotFoundError:
        return []
    except OSError as error:
        return [(state, f"cannot be examined ({error})")]
    if stat.S_ISLNK(st.st_mode):
        return [(state, f"is a symbolic link (to {_link_target(state)})")]
    if not stat.S_ISDIR(st.st_mode):
        return [(state, "is not a directory")]
    problems: list[tuple[Path, str]] = []
    try:
        entries = sorted(os.scandir(state), key=lambda e: e.name)
    except OSError as error:
        return [(state, f"cannot be listed ({error})")]
    for entry in entries:
        path = Path(entry.path)
        if entry.is_symlink():
            problems.append((path, f"is a symbolic link (to {_link_target(path)})"))
        elif not entry.is_file(follow_symlinks=False):
            problems.append((path, "is not a regular file"))
    return problems


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def state_dir(duni: Path) -> Path:
    """``duni/.monorepo``, created if missing; a :class:`PullError` if it is not safe.

    Checked before the lock inside it is taken (filelock would follow a planted link,
    or fail with a bare OSError): see :func:`state_problems`.
    """
    state = duni / STATE_DIR
    try:
        duni.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(state)
    except OSError as error:
        raise PullError(
            f"cannot create {state}: {error}; check the permissions of {duni.parent}"
        ) from error
    problems = state_problems(duni)
    if problems:
        paths = " ".join(shlex.quote(str(path)) for path, _ in problems)
        raise PullError(
            f"pull keeps its records in {state}, which must be a real directory of plain"
            " files, never reached through a symbolic link (duni/ is committed, and a"
            " planted link would have pull write and delete files where it points), but:\n  "
            + "\n  ".join(f"{path} {why}" for path, why in problems)
            + f"\nNothing was written. Remove them (`rm -r {paths}`): the records describe"
            " this checkout only, are not meant to be committed, and the next pull"
            " rebuilds them from the sources."
        )
    return state


@contextlib.contextmanager
def exclusive(path: Path, reporter: Reporter) -> Iterator[int | None]:
    """Hold the pull lock of a duni/; yields its descriptor (None where there is none).

    The descriptor goes to the extraction workers, which inherit it (see
    :mod:`monorepo._core.speed.workerproc`): a lock is held as long as any process holds its open
    file, so when a pull is killed the lock stays taken until the last of its workers
    has exited too.  Whoever gets the lock next is then sure that no process is left
    writing into duni/, and that every ``.tmp-*`` there is garbage to delete.
    """
    held: list[int] = []
    lock = filelock.FileLock(path, on_acquired=held.append)
    try:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            reporter.message("info", f"waiting for another monorepo pull to finish ({path})")
            lock.acquire()
    except OSError as error:
        raise PullError(
            f"cannot take the pull lock {path}: {error}; check the permissions of {path.parent}"
        ) from error
    try:
        yield held[-1] if held else None
    finally:
        lock.release()


def write_failed(error: OSError, duni: Path, what: str) -> MonorepoError:
    """A failed write in duni/: its disk is full, or it cannot be written (permissions)."""
    fix = "set [tool.monorepo] duni to a directory on another disk"
    full = disk_full(error, duni, what=what, fix=fix)
    if full is not None:
        return full
    return PullError(
        f"{what}: {error}; check the permissions and free space of {duni}, then run"
        " `monorepo pull` again"
    )


def clean_leftovers(duni: Path, state: Path, store: ContentStore) -> None:
    """Delete what killed runs left: staging trees, set-aside trees, half-written files.

    Called with the pull lock held, which no process of an earlier pull holds any
    more (:func:`exclusive`): nobody owns a ``.tmp-*`` in duni/ now.  In the download
    cache, shared with other projects, only the files of writers that are gone.
    """
    try:
        for directory in (duni, state):
            for entry in directory.iterdir():
                if entry.name.startswith(STAGING_PREFIX):
                    remove_tree(entry)
    except OSError as error:
        raise PullError(
            f"cannot delete what an interrupted pull left in {duni}: {error}; check the"
            f" permissions of {duni}, or delete its .tmp-* entries by hand"
        ) from error
    store.sweep()
