"""The sources pass for Rust: the crates of a package's ``Cargo.lock`` files, locked.

Called on each package's patched tree (in the scratch directory of the sources pass).
Each registry crate is recorded in ``[packages.tool.monorepo] crates`` with the
checksum the ``Cargo.lock`` gives, the download URL the configured crate registry
gives, and the tree hash of its vendored directory, ``duni/.crates/<name>-<version>``:
so the crate is downloaded (and checked) at lock time like every other source, and
``verify`` can check the vendored crate against the lock.  The order is the crates'
(name, version, source): a function of the ``Cargo.lock`` alone.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from monorepo._core.fstree import temporary_directory
from monorepo.sources.crates import (
    Crate,
    CrateError,
    cargo_lock_paths,
    configured_crate_index,
    crate_url,
    download_template,
    fetch_crate,
    materialize_crate,
    no_crate_index,
    parse_cargo_lock,
)
from monorepo.sources.store import ContentStore
from monorepo.sources.treehash import hash_entries

__all__ = ["CrateLocker"]


class CrateLocker:
    """Locks crates for many packages at once: one registry lookup, each crate hashed once."""

    def __init__(
        self,
        *,
        setting: str | None,
        store: ContentStore,
        get: Callable[[str], bytes],
        fetch: Callable[[str], Iterator[bytes] | bytes],
        offline: bool,
        warn: Callable[[str], None] = lambda _message: None,
    ) -> None:
        self.setting = setting
        self.warn = warn
        self.store = store
        self.get = get
        self.fetch = fetch
        self.offline = offline
        self._lock = threading.Lock()
        self._template: str | None = None
        self._hashes: dict[str, str] = {}

    def _download_template(self, what: str, count: int) -> str:
        with self._lock:
            if self._template is None:
                index = configured_crate_index(self.setting)
                if index is None:
                    raise no_crate_index(what, count)
                self._template = download_template(index, self.get)
            return self._template

    def _tree_hash(self, crate: Crate, what: str) -> str:
        with self._lock:
            known = self._hashes.get(crate.checksum)
        if known is not None:
            return known
        archive = fetch_crate(
            crate, store=self.store, fetch=self.fetch, offline=self.offline, package=what
        )
        with temporary_directory(prefix="monorepo-crate-") as tmp:
            tree_hash = hash_entries(materialize_crate(crate, archive, tmp / crate.dir))
        with self._lock:
            self._hashes[crate.checksum] = tree_hash
        return tree_hash

    def lock(self, tree: Path, what: str) -> list[dict[str, Any]]:
        """The ``crates`` field for the package whose patched tree is *tree* ([] if none)."""
        found: dict[tuple[str, str, str], Crate] = {}
        for rel in cargo_lock_paths(tree):
            try:
                text = (tree / rel).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise CrateError(f"{what}: cannot read its {rel}: {error}") from error
            for crate in parse_cargo_lock(text, where=f"{what}: {rel}"):
                key = (crate.name, crate.version, crate.source)
                other = found.setdefault(key, crate)
                if other.checksum != crate.checksum:
                    raise CrateError(
                        f"{what}: two Cargo.lock files give {crate.label} different checksums"
                        f" ({other.checksum} and {crate.checksum})"
                    )
        crates = sorted(found.values())
        if not crates:
            return []
        by_dir: dict[str, Crate] = {}
        for crate in crates:
            other = by_dir.setdefault(crate.dir, crate)
            if other.checksum != crate.checksum:
                raise CrateError(
                    f"{what}: {crate.label} comes from two registries ({other.source} and"
                    f" {crate.source}) with different contents; only one can be vendored"
                )
        if configured_crate_index(self.setting) is None:
            # Not an error: a set whose build closure has one Rust package (through a
            # build tool, say) still locks, pulls and builds everything else.  The lock
            # records no crates for it, and its offline build fails in cargo.
            self.warn(
                f"{no_crate_index(what, len(crates))} Until then its crates are not locked"
                f" or vendored, and `monorepo build` cannot build {what} offline."
            )
            return []
        template = self._download_template(what, len(crates))
        out = []
        for crate in crates:
            located = dataclasses.replace(crate, url=crate_url(template, crate))
            located = dataclasses.replace(located, tree_hash=self._tree_hash(located, what))
            out.append(located.to_tool())
        return out
