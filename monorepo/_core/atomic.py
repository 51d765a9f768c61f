"""Replacing a file all at once: a temporary file in the same directory, then a rename.

Every file monorepo writes in place (the lock, cache entries, pull's manifests,
workspace.toml, build state, a build venv's records) goes through here, so a crash or
a concurrent reader never sees half a file: the rename either happened or it did not.
Two kinds of writes do not need it: files inside a staging directory that is renamed
into place whole (an extracted tree, a sysroot), and the content store, which hashes a
download while it writes it and renames it into place only once it is verified.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_bytes(
    path: Path, data: bytes, *, prefix: str | None = None, suffix: str = "", fsync: bool = False
) -> None:
    """Put *data* at *path* atomically (mode 0644); the parent is created if needed.

    *fsync* makes the content durable before the rename, for files whose loss after
    a power failure matters more than the cost (the lock file).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=prefix or f".tmp-{path.name}-", suffix=suffix, dir=path.parent
    )
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if fsync:
                out.flush()
                os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_if_changed(
    path: Path, text: str, *, prefix: str | None = None, suffix: str = "", fsync: bool = False
) -> bool:
    """Like :func:`write_bytes` for UTF-8 text, but a no-op (False) when *path* already
    holds *text*, so an unchanged file keeps its mtime and inode."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    write_bytes(path, text.encode("utf-8"), prefix=prefix, suffix=suffix, fsync=fsync)
    return True
