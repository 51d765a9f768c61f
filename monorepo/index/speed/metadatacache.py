"""Core metadata kept on disk by the sha256 of the distribution file it describes.

A module of its own, apart from :mod:`monorepo.index.metadata`, so that the index workers,
which store the metadata they read, need not import that module's parsing and build
backend machinery.

It saves reading a release's metadata again (a PEP 658 file, byte ranges of a wheel,
an sdist's build backend) in every later lock, and lets ``--offline`` lock from what
an earlier run read.  Turn it off with ``MONOREPO_NO_SPEEDUPS=metadata-cache``: the
sources are then read every time (offline, from the HTTP cache alone).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from monorepo._core.atomic import write_bytes

__all__ = ["MetadataCache"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class MetadataCache:
    """Core metadata by the sha256 of the distribution file it describes.

    A file with a given hash never changes, so neither does its metadata: entries never
    expire.  Each is the raw ``METADATA``/``PKG-INFO`` text in ``<root>/<sha256>``, written
    through a temporary file and ``os.replace`` so readers never see a partial entry.  A
    file without a (well-formed) sha256 is never cached; write failures are ignored, since
    the cache only saves work the sources can repeat.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, sha256: str | None) -> Path | None:
        if sha256 is None or not _SHA256.match(sha256.lower()):
            return None
        return self.root / sha256.lower()

    def load(self, sha256: str | None) -> bytes | None:
        path = self._path(sha256)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError:
            return None

    def store(self, sha256: str | None, text: bytes) -> None:
        """Keep *text*, unless an entry is already there: an index worker that read the
        metadata stored it, and an entry, written whole, never changes."""
        path = self._path(sha256)
        if path is None or path.exists():
            return
        with contextlib.suppress(OSError):
            write_bytes(path, text, prefix=".tmp-")
