"""Where monorepo keeps its caches.

One root, so that the HTTP cache, the content-addressed source store and fetched
overlay repositories can be inspected and wiped together.  ``MONOREPO_CACHE_DIR``
overrides platformdirs' user cache directory (tests always set it).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote


def url_path(path: str) -> Path:
    """The local path that a ``file:`` URL's (already split) path part names.

    What ``urllib.request.url2pathname`` does, without importing urllib.request,
    which loads http.client, email and ssl: verify and offline runs never need them.
    """
    if os.name == "nt":  # pragma: no cover - POSIX CI
        from nturl2path import url2pathname

        return Path(url2pathname(path))
    return Path(unquote(path))


def cache_root() -> Path:
    """The cache root directory (not created here)."""
    override = os.environ.get("MONOREPO_CACHE_DIR")
    if override:
        return Path(override).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_cache_dir("monorepo", appauthor=False))
