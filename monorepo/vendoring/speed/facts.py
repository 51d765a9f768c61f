"""Speed only: what workspace.toml needs of a tree, kept beside it under its tree hash.

The facts (its ``[build-system]`` table, whether it has C sources) are a function of the
tree's content alone, so pull keeps them in ``duni/.monorepo/<dir>.facts`` with the tree
hash they were read at, instead of walking every tree and parsing every pyproject.toml on
each run (most of a no-op pull of a large set).  Turn it off with
``MONOREPO_NO_SPEEDUPS=facts-cache``: every tree is then read again.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path

from monorepo._core.atomic import write_text_if_changed
from monorepo._core.speed.switches import enabled
from monorepo.sources.fetch import STAGING_PREFIX
from monorepo.sources.treehash import Entry
from monorepo.vendoring.workspace import TreeFacts, read_tree_facts

__all__ = ["tree_facts"]


def tree_facts(
    record: Path,
    tree: Path,
    tree_hash: str | None,
    entries: Mapping[str, Entry] | None = None,
) -> TreeFacts:
    """The facts of *tree*, kept in *record* under *tree_hash*.

    *tree_hash* is the hash this run found or made for the tree, so the kept facts are
    those of exactly this content; without one (a partial pull did not look at the tree)
    they are read from the tree.  *entries*, the tree's, spare listing it.
    """
    if tree_hash is None or not enabled("facts-cache"):
        return read_tree_facts(tree)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        data = json.loads(record.read_text(encoding="utf-8"))
        if data.get("tree-hash") == tree_hash:
            return TreeFacts.from_json(data)
    paths = None if entries is None else [e.path for e in entries.values() if e.kind != "dir"]
    found = read_tree_facts(tree, paths)
    text = json.dumps({"tree-hash": tree_hash, **found.to_json()}, sort_keys=True)
    write_text_if_changed(record, text + "\n", prefix=f"{STAGING_PREFIX}{record.name}-")
    return found
