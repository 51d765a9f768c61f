"""Walking, copying and removing directory trees at any depth.

Python 3.11's ``os.walk``, ``shutil.rmtree``, ``shutil.copytree`` and
``tempfile.TemporaryDirectory`` (which removes with ``rmtree``) recurse once per
directory level, so a tree a thousand directories deep kills them with
RecursionError, half-way through: a removal leaves a partial tree behind, a walk
an empty report.  Extraction refuses such trees (:class:`monorepo.extract.rules.Limits`),
but a tree can also be made by hand, by a build, or by an older version of this
tool, and ``pull``, ``verify`` and ``lock`` must still be able to hash, walk and
remove it.  Everything here keeps its own stack instead of the interpreter's.

Removal holds one directory descriptor at a time (not one per level, which a deep
tree would turn into EMFILE), deletes a directory's entries through that
descriptor, and checks that each directory it opens is the very one it listed
(device and inode), as ``shutil.rmtree`` does: a directory swapped for a symlink
meanwhile is not followed out of the tree.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path

__all__ = ["Stamp", "copy_tree", "file_stamp", "remove_tree", "temporary_directory", "walk"]

_DIR_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_DIRECTORY", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


#: what identifies an unchanged file without reading it: size, mtime, inode, ctime (ns)
Stamp = tuple[int, int, int, int]


def file_stamp(st: os.stat_result) -> Stamp:
    """The stat fields a content change cannot leave all equal (ctime moves on any write,
    even one that restores the mtime), as git's index uses them."""
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def walk(
    top: str | os.PathLike[str], *, strict: bool = False
) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(top)`` (top-down, symlinks not followed), iteratively.

    Yields ``(dirpath, dirnames, filenames)`` like ``os.walk``; as there, removing
    names from *dirnames* prunes the walk.  Symlinks (to directories too) are listed
    in *filenames*, since they are never descended into.  A directory that cannot be
    listed is skipped, as ``os.walk`` does, unless *strict*: then its OSError is raised.
    """
    stack = [os.fspath(top)]
    while stack:
        directory = stack.pop()
        dirnames: list[str] = []
        filenames: list[str] = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    (dirnames if is_dir else filenames).append(entry.name)
        except OSError:
            if strict:
                raise
            continue
        yield directory, dirnames, filenames
        # Reversed, so that directories are visited in listing order, as os.walk does.
        stack += [os.path.join(directory, name) for name in reversed(dirnames)]


def remove_tree(path: str | os.PathLike[str], *, ignore_errors: bool = False) -> None:
    """Delete *path* and everything below it (a file or symlink: just that), at any depth.

    A missing *path* is not an error.  With *ignore_errors*, whatever can be deleted is,
    and the rest is left; otherwise the first failure raises its OSError.
    """
    root = os.fspath(path)
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return
    except OSError:
        if ignore_errors:
            return
        raise
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.unlink(root)
        except OSError:
            if not ignore_errors:
                raise
        return
    # (path, (dev, ino) it had when listed, listed already): a directory is pushed
    # again once its subdirectories are pushed, and removed when popped the second time.
    stack: list[tuple[str, tuple[int, int], bool]] = [(root, (st.st_dev, st.st_ino), False)]
    while stack:
        directory, identity, listed = stack.pop()
        try:
            if listed:
                os.rmdir(directory)
                continue
            stack.append((directory, identity, True))
            stack += _clear_files(directory, identity)
        except FileNotFoundError:
            continue
        except OSError:
            if not ignore_errors:
                raise


def _clear_files(
    directory: str, identity: tuple[int, int]
) -> list[tuple[str, tuple[int, int], bool]]:
    """Unlink everything in *directory* but its subdirectories, which are returned."""
    fd = os.open(directory, _DIR_FLAGS)
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != identity:
            raise OSError(f"{directory} changed while it was being removed")
        subdirectories: list[tuple[str, tuple[int, int], bool]] = []
        with os.scandir(fd) as entries:
            names = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        for name, is_dir in names:
            if is_dir:
                child = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(child.st_mode):
                    subdirectories.append(
                        (os.path.join(directory, name), (child.st_dev, child.st_ino), False)
                    )
                    continue
            os.unlink(name, dir_fd=fd)
        return subdirectories
    finally:
        os.close(fd)


def copy_tree(
    source: str | os.PathLike[str], dest: str | os.PathLike[str], *, skip: Collection[str] = ()
) -> None:
    """``shutil.copytree(source, dest, symlinks=True)``, iteratively.

    Symlinks are copied as links, files with their mode and times, directories with
    their mode and times once filled; names in *skip* are left out at every level (as
    copytree's *ignore* would).  *dest* must not exist; errors raise their OSError.
    """
    src_root, dest_root = os.fspath(source), os.fspath(dest)
    os.mkdir(dest_root)
    copied: list[tuple[str, str]] = []
    for directory, dirnames, filenames in walk(src_root, strict=True):
        rel = os.path.relpath(directory, src_root)
        target = dest_root if rel == "." else os.path.join(dest_root, rel)
        copied.append((directory, target))
        dirnames[:] = [name for name in dirnames if name not in skip]
        for name in dirnames:
            os.mkdir(os.path.join(target, name))
        for name in filenames:
            if name in skip:
                continue
            src = os.path.join(directory, name)
            if os.path.islink(src):
                os.symlink(os.readlink(src), os.path.join(target, name))
            else:
                shutil.copy2(src, os.path.join(target, name))
    # Directory modes and times last: copying into a directory changes its mtime.
    for directory, target in reversed(copied):
        shutil.copystat(directory, target)


@contextlib.contextmanager
def temporary_directory(prefix: str, dir: Path | None = None) -> Iterator[Path]:
    """``tempfile.TemporaryDirectory`` whose cleanup survives any depth.

    The directory is made with mode 0700 (``mkdtemp``), so no other user can plant
    anything in it; it is removed on exit whatever happened inside.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    try:
        yield path
    finally:
        remove_tree(path, ignore_errors=True)
