"""The switch that turns speed-only machinery off: ``MONOREPO_NO_SPEEDUPS``.

Everything under a ``speed/`` directory of this package only saves time: with it off,
every command gives the same results (the same lock, byte for byte, the same trees),
only slower.  That makes a suspected speed-up easy to rule out, and it is what
``tests/test_speedups.py`` checks.  The variable holds the names below, separated by
commas, or ``all``::

    MONOREPO_NO_SPEEDUPS=index-workers,page-cache monorepo lock

It is read once per process (worker processes inherit it), like the other
``MONOREPO_*`` settings of a run.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping

__all__ = ["ENV", "NAMES", "enabled", "parse"]

ENV = "MONOREPO_NO_SPEEDUPS"

NAMES: dict[str, str] = {
    "index-workers": "index pages and wheel metadata read by worker processes (lock)",
    "dns": "one resolver query per host in the index workers",
    "write-behind": "the index workers' cache writes held back until they are idle",
    "page-cache": "parsed index pages kept by body digest",
    "metadata-cache": "core metadata kept by file sha256 (also what --offline reuses)",
    "warm-start": "the pages of the last lock asked for before resolving",
    "read-ahead": "the finder's crawl ahead of the resolver (pages and metadata)",
    "lock-reuse": "a resolution reused when its inputs and pages are unchanged",
    "render-reuse": "pylock.toml not rendered again when its data is unchanged",
    "extract-workers": "sdists extracted by worker processes (pull)",
    "tarscan": "tar headers read by a fast reader before tarfile",
    "download-ahead": "sources downloaded ahead of extraction (pull)",
    "sources-ahead": "each pinned sdist fetched into the store at once (lock with build dependencies)",
    "stat-cache": "file stamps that spare reading unchanged files (pull)",
    "facts-cache": "workspace.toml's facts of each tree kept under its tree hash (pull)",
    "placement": "package trees spread over ext4 block groups (pull)",
}
"""Each switch and what it turns off."""


def parse(environ: Mapping[str, str]) -> frozenset[str]:
    """The speed-ups *environ* turns off (unknown names are ignored: a switch from a newer
    or older version must not break a run)."""
    names = {n.strip() for n in environ.get(ENV, "").split(",") if n.strip()}
    return frozenset(NAMES) if "all" in names else frozenset(names & NAMES.keys())


@functools.cache
def _off() -> frozenset[str]:
    return parse(os.environ)


def enabled(name: str) -> bool:
    """Whether speed-up *name* (one of :data:`NAMES`) is on in this process."""
    assert name in NAMES, name
    return name not in _off()
