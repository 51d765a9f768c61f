"""Parsed index pages on disk, so an unchanged page is never parsed twice.

Most index servers send no caching headers, so every lock run downloads every page again
(uv does too); what can be saved is the parse.  A big project's JSON page takes longer to
decode than to download.  This cache keeps, per page URL, the digest of the body it was
parsed from and the page's :data:`~monorepo.index.pages.Groups` (marshalled plain data, which
reloads an order of magnitude faster than JSON decodes).  A body with another digest is a
miss: the page changed, it is parsed again and the entry replaced, so the cache holds one
entry per page, never a stale answer.

Like the other caches it is an optimisation only: a damaged or unreadable entry is a miss,
write failures are ignored, and entries are replaced atomically.

Turn it off with ``MONOREPO_NO_SPEEDUPS=page-cache``: every page is then parsed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
from pathlib import Path

from monorepo._core.atomic import write_bytes
from monorepo.index.pages import Groups

#: Bump when :data:`~monorepo.index.pages.FileEntry` or the grouping changes.
_FORMAT = 2


def body_digest(body: bytes) -> str:
    """What ties an entry to the exact page body it was parsed from."""
    return hashlib.sha256(body).hexdigest()


class PageCache:
    """Entries under ``<root>/<key>`` (flat, as in the HTTP cache), key = sha256 of
    (format, URL, project)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, page_url: str, project: str) -> Path:
        key = hashlib.sha256(f"{_FORMAT}\n{page_url}\n{project}".encode()).hexdigest()
        return self.root / key

    def load(self, page_url: str, project: str, digest: str) -> tuple[Groups, int] | None:
        """The groups and foreign-file count parsed from the body with *digest*, if kept."""
        try:
            raw = self._path(page_url, project).read_bytes()
            stored = marshal.loads(raw)
        except (OSError, EOFError, ValueError, TypeError):
            return None
        if not (isinstance(stored, tuple) and len(stored) == 4 and stored[0] == _FORMAT):
            return None
        _format, stored_digest, groups, foreign = stored
        if stored_digest != digest or not isinstance(groups, dict):
            return None
        return groups, int(foreign)

    def store(self, page_url: str, project: str, digest: str, groups: Groups, foreign: int) -> None:
        with contextlib.suppress(OSError, ValueError):
            data = marshal.dumps((_FORMAT, digest, groups, foreign))
            write_bytes(self._path(page_url, project), data, prefix=".tmp-")
