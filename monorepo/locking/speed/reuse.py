"""A lock remembered with everything it was computed from, to skip resolving it again.

A lock is a pure function of the project's inputs (requirements, targets, overlays,
index URLs, exclude-newer, the versions an existing lock prefers) and of the index pages
the resolver read: every other fact it uses (a release's metadata, an sdist's build
system) is keyed by a file hash those pages list.  So when the inputs are the same and
every page read last time is byte for byte the same (same sha256), resolving again
would give the same lock, and the remembered one is used instead.  The pages are still
downloaded, all at once, to compare them; only the resolution and rendering are saved.

An entry is ``<cache>/locks/<key>``, the key a digest of the inputs; it holds the page
digests and the lock text.  Resolutions that read anything outside the index (git
sources, direct URLs) are never remembered: a branch can move without any page
changing.  Audits (``verify --resolve``) always resolve.  As for every cache, a missing
or damaged entry is a miss and write failures are ignored.

Turn it off with ``MONOREPO_NO_SPEEDUPS=lock-reuse``: every lock then resolves.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monorepo._core.atomic import write_bytes

#: Bump when an entry's layout or what the key covers changes (3: Rust crates in the lock).
FORMAT = 3


@dataclass(frozen=True)
class Memo:
    """What a lock was computed from (besides the key's inputs), and its text."""

    #: ``"<index URL> <project>"`` -> the page body's sha256, None when not on that index
    pages: dict[str, str | None]
    text: str


def memo_key(inputs: Mapping[str, Any]) -> str:
    """The digest of everything besides the pages that decides the lock."""
    data = json.dumps({"format": FORMAT, **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()


def _path(key: str, root: Path) -> Path:
    return root / key


def load(key: str, *, root: Path) -> Memo | None:
    """The entry for *key* under *root* (``CacheDir.locks``), or None (missing, unreadable
    or not ours)."""
    try:
        data = json.loads(_path(key, root).read_bytes())
        pages, text = data["pages"], data["text"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (
        data.get("format") != FORMAT
        or not isinstance(text, str)
        or not isinstance(pages, dict)
        or not all(isinstance(d, str | None) for d in pages.values())
    ):
        return None
    return Memo(pages=pages, text=text)


def store(key: str, memo: Memo, *, root: Path) -> None:
    """Remember *memo* under *key* in *root* (atomically; failures ignored)."""
    data = json.dumps({"format": FORMAT, "pages": memo.pages, "text": memo.text})
    with contextlib.suppress(OSError):
        write_bytes(_path(key, root), data.encode(), prefix=".tmp-")
