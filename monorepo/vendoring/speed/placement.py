"""Speed only: package trees spread over the file system's block groups.

Saves the tenfold slow-down of extracting next to a large tree just deleted, on ext4
without a journal.  Turn it off with ``MONOREPO_NO_SPEEDUPS=placement``.
"""

from __future__ import annotations

import os
import platform
import struct
import sys
from pathlib import Path

from monorepo._core.speed.switches import enabled

_TOPDIR_FLAG = 0x00020000
"""``FS_TOPDIR_FL`` (``chattr +T``): "the top of a directory hierarchy" for ext2/3/4."""
_GENERIC_IOCTL_MACHINES = ("x86_64", "amd64", "i386", "i686", "aarch64", "arm64", "riscv64")


def spread_package_trees(duni: Path) -> None:
    """Ask the file system to place each tree under *duni* in its own block group.

    ext4's allocator (Orlov) keeps a directory's subdirectories in their parent's
    group unless the parent is marked as the top of a hierarchy.  Without a journal,
    ext4 also skips inodes freed in the last seconds, one by one, for every new file:
    after a large tree was deleted nearby (a previous duni/, a replaced package),
    extraction slows down tenfold.  Each package tree is a hierarchy of its own, so
    duni/ gets the flag.  Best effort: other file systems and systems ignore it.
    """
    if not enabled("placement"):
        return
    if sys.platform != "linux" or platform.machine() not in _GENERIC_IOCTL_MACHINES:
        return
    size = struct.calcsize("l")
    get_flags = (2 << 30) | (size << 16) | (ord("f") << 8) | 1  # _IOR('f', 1, long)
    set_flags = (1 << 30) | (size << 16) | (ord("f") << 8) | 2  # _IOW('f', 2, long)
    import fcntl  # POSIX only

    try:
        fd = os.open(duni, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        buffer = bytearray(size)
        fcntl.ioctl(fd, get_flags, buffer)
        flags = struct.unpack_from("i", buffer)[0]
        if not flags & _TOPDIR_FLAG:
            struct.pack_into("i", buffer, 0, flags | _TOPDIR_FLAG)
            fcntl.ioctl(fd, set_flags, buffer)
    except OSError:
        pass
    finally:
        os.close(fd)
