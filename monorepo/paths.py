"""Where monorepo keeps its caches.

One root, so that the HTTP cache, the content-addressed source store and fetched
overlay repositories can be inspected and wiped together.  ``MONOREPO_CACHE_DIR``
overrides platformdirs' user cache directory (tests always set it).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache root directory (not created here)."""
    override = os.environ.get("MONOREPO_CACHE_DIR")
    if override:
        return Path(override).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_cache_dir("monorepo", appauthor=False))
