"""Speed only: a relock that changes nothing does not render pylock.toml again.

Rendering through tomlkit is a tenth of a warm lock, and a relock usually changes
nothing.  :func:`rendered` reuses the text on disk only when its data equals the new
lock's and the cache remembers that this version of monorepo rendered that very text
(a marker under ``<cache>/rendered`` keyed by the text's digest), so a hand-edited or
older-format file is still rewritten.  Rendering also pauses the garbage collector.

Turn it off with ``MONOREPO_NO_SPEEDUPS=render-reuse`` (:mod:`monorepo._core.speed.switches`).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from monorepo._core.speed.switches import enabled
from monorepo._core.version import VERSION

if TYPE_CHECKING:
    from monorepo.project.lockfile import LockDocument

__all__ = ["rendered"]


def _marker(text: str, root: Path) -> Path:
    """Where the cache remembers that this version of monorepo rendered exactly *text*."""
    from monorepo.project.lockfile import RENDERER

    key = hashlib.sha256(f"{VERSION}\n{RENDERER}\n{text}".encode()).hexdigest()
    return root / key[:2] / key


@contextlib.contextmanager
def _collections_paused() -> Iterator[None]:
    """The cyclic garbage collector paused for the block, then left as it was.

    Rendering allocates tens of thousands of small tomlkit objects, and each allocation
    burst triggers collections that walk everything a resolution left alive (versions,
    candidates, parsed pages): measured on the data bench set, 0.15 s of rendering of which
    0.06 s were collections.  Rendering makes no garbage cycles worth collecting early.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def rendered(
    document: LockDocument, existing: tuple[str, LockDocument] | None, *, root: Path
) -> str:
    """``render(document)``, or the text on disk when it already is exactly that.

    *root* is ``CacheDir.rendered``; see the module docstring for when the text on disk
    is reused.
    """
    from monorepo.project.lockfile import render, render_data

    if not enabled("render-reuse"):
        return render(document)
    if existing is not None:
        text, old = existing
        if render_data(old) == render_data(document) and _marker(text, root).exists():
            return text
    with _collections_paused():
        text = render(document)
    with contextlib.suppress(OSError):
        marker = _marker(text, root)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    return text
