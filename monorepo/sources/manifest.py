"""What pull records of every tree it places: one reader and one writer of that record.

``duni/.monorepo/<dir>.manifest`` (and ``<dir>.pending`` while a tree is renamed into
place) is the tree's per-file manifest (:func:`~monorepo.sources.treehash.manifest`)
followed by two lines::

    # source {"kind": "sdist", "url": ..., "sha256": ..., "size": ...}
    # input <sha256 of the lock entry's source identity and patches>

``pull`` writes it and trusts it to tell its own trees from edited ones; ``verify``
reads it to name the files that differ.  Both go through :func:`record_text` and
:func:`read_record` here, so the format has one definition.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monorepo.project.lockfile import LockedPackage, SdistSource, VcsSource
from monorepo.sources.treehash import (
    Entry,
    TreeHashError,
    hash_entries,
    manifest,
    parse_manifest,
)

__all__ = [
    "Record",
    "describe_source_change",
    "input_key",
    "read_record",
    "record_text",
    "source_identity",
]

_TAIL = re.compile(r"(?:# source (.*)\n)?# input ([0-9a-f]{64})\n")


@dataclass(frozen=True)
class Record:
    """A record pull wrote: the entries of a tree, their tree hash, the lock entry's key."""

    entries: Mapping[str, Entry]
    hash: str
    key: str | None
    """:func:`input_key` of the lock entry the tree was built from (None: not recorded)."""
    source: Mapping[str, Any] | None = None
    """:func:`source_identity` of that lock entry (None in a record without it)."""


def source_identity(pkg: LockedPackage) -> dict[str, Any]:
    """What the lock entry says its source is: URL, size and sha256, or git URL and commit.

    Pull records it with every tree it writes and compares it with the lock on every
    run, whatever the tree hash says: a lock whose sha256, size or URL was edited
    (by hand, or by a branch) names another source than the one vendored, and pull
    must fetch that source and check it rather than keep the old tree under the new
    name.
    """
    source = pkg.source
    if isinstance(source, VcsSource):
        return {
            "kind": "git",
            "url": source.url,
            "commit": source.commit,
            "subdirectory": source.subdirectory,
        }
    kind = "sdist" if isinstance(source, SdistSource) else "archive"
    return {"kind": kind, "url": source.url, "sha256": source.sha256.lower(), "size": source.size}


def describe_source_change(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """``sha256 abc -> def, size 10 -> 11``: the fields of two source identities that differ."""
    if old is None:
        return "the record of the pull does not name its source (written by an older monorepo)"
    parts = [
        f"{field} {old.get(field)} -> {new.get(field)}"
        for field in ("kind", "url", "sha256", "size", "commit", "subdirectory")
        if old.get(field) != new.get(field)
    ]
    return ", ".join(parts) if parts else "the overlay patches changed"


def input_key(pkg: LockedPackage) -> str:
    """A digest of everything in the lock entry that decides the tree's content.

    The source's URL is part of it: a hash proves what bytes are, but the lock also
    says where they come from, and an edited URL (another version's file name) must
    be checked like an edited hash.  The overlay patches count by path and sha256, as
    the lock records them (pull checks the patch files against those before using them).
    """
    patches = [
        [str(p.get("path", "")), str(p.get("sha256", "")).lower()]
        for p in pkg.tool.get("patches", ())
        if isinstance(p, Mapping)
    ]
    data = {"source": source_identity(pkg), "patches": patches}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def record_text(entries: Mapping[str, Entry], identity: Mapping[str, Any], key: str) -> str:
    """The record of a tree with *entries*, built from the lock entry *identity*, *key* names."""
    source = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return manifest(entries) + f"# source {source}\n# input {key}\n"


def read_record(
    path: Path, scanned: tuple[Mapping[str, Entry], str, str] | None = None
) -> Record | None:
    """The record at *path*, or None when absent or damaged (then it proves nothing).

    *scanned*, the tree on disk as its entries, their manifest text and tree hash
    (:func:`~monorepo.sources.treehash.manifest_and_hash`), spares the parse when the
    record is exactly that manifest followed by its two lines: parsing it could only
    give those entries back (costly for a large tree, and the usual case).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if scanned is not None:
        entries, entries_text, entries_hash = scanned
        if text.startswith(entries_text):
            rest = text[len(entries_text) :]
            found = _TAIL.fullmatch(rest)
            if found is not None:
                return Record(entries, entries_hash, found[2], _source(found[1]))
            if not rest:
                return Record(entries, entries_hash, None)
    try:
        parsed = parse_manifest(text)
    except TreeHashError:
        return None
    key: str | None = None
    recorded: str | None = None
    source: Mapping[str, Any] | None = None
    for line in text.splitlines():
        if line.startswith("# input "):
            key = line.removeprefix("# input ")
        elif line.startswith("# tree-hash "):
            recorded = line.removeprefix("# tree-hash ")
        elif line.startswith("# source "):
            source = _source(line.removeprefix("# source "))
    # parse_manifest checked the entries against a recorded tree hash: no second hashing
    return Record(parsed, recorded if recorded is not None else hash_entries(parsed), key, source)


def _source(text: str | None) -> Mapping[str, Any] | None:
    """A record's ``# source`` JSON (None when absent or damaged)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
