"""Speed only: file stamps kept per tree, so an unchanged file is not read again.

A no-op pull of a large set then reads no file content (pull keeps the stamps in
``duni/.monorepo/<dir>.stat``).  Turn it off with ``MONOREPO_NO_SPEEDUPS=stat-cache``:
every file is then read and hashed again.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path

from monorepo._core.atomic import write_bytes
from monorepo._core.fstree import Stamp
from monorepo._core.speed.switches import enabled
from monorepo.sources.fetch import STAGING_PREFIX


def read_stamps(path: Path) -> dict[str, tuple[Stamp, str]]:
    """The stat cache of one directory; empty when missing or damaged (then files are read)."""
    if not enabled("stat-cache"):
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {rel: ((v[0], v[1], v[2], v[3]), str(v[4])) for rel, v in raw.items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return {}


def write_stamps(path: Path, stamps: Mapping[str, tuple[Stamp, str]]) -> None:
    """Keep *stamps* as the stat cache at *path* (atomically; failures only cost reads)."""
    if not enabled("stat-cache"):
        return
    data = {rel: [*stamp, digest] for rel, (stamp, digest) in sorted(stamps.items())}
    with contextlib.suppress(OSError):
        write_bytes(
            path,
            json.dumps(data, separators=(",", ":")).encode(),
            prefix=f"{STAGING_PREFIX}{path.name}-",
        )
