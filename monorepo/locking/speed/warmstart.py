"""Which index pages a lock will read, known before the resolver asks for them.

The resolver asks for a project's page only once it has pinned a package that depends
on it, so a deep graph costs one round trip per level even when every page is cached:
most indexes send no caching headers, and each page is downloaded again.  A relock
almost always needs the same pages as the lock before it, so their names are known at
the start: the packages of the existing pylock.toml and, when there is none (deleted,
or a new checkout sharing the cache), the names the last lock of this project wrote,
remembered in the cache.  :func:`lock` fetches them all at once before resolving.

Like the other caches this is a hint only: what is resolved never depends on it, a
missing or damaged entry means no hint, and failures to remember are ignored.

Saves one round trip per level of the dependency graph in a relock.  Turn it off
with ``MONOREPO_NO_SPEEDUPS=warm-start``: pages are then asked for as the resolver needs them.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from monorepo._core.atomic import write_text_if_changed

#: A canonical project name (PEP 503), the only lines an entry may hold.
_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")

#: An entry is a hint for the pages of one lock, not a list to trust blindly.
_LIMIT = 5000


def _entry(project: Path, cache: Path) -> Path:
    return cache / hashlib.sha256(str(project.resolve()).encode()).hexdigest()


def remembered(project: Path, *, cache: Path) -> list[str]:
    """The project names the last lock of the project at *project* wrote; [] when unknown.

    *cache* is ``CacheDir.warmstart``.
    """
    try:
        lines = _entry(project, cache).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [line for line in lines[:_LIMIT] if _NAME.fullmatch(line)]


def remember(project: Path, names: Iterable[str], *, cache: Path) -> None:
    """Keep *names* (canonical) as the pages the next lock of *project* will read."""
    text = "".join(f"{name}\n" for name in sorted(set(names)))
    with contextlib.suppress(OSError):
        write_text_if_changed(_entry(project, cache), text)
