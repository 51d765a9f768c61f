"""``duni/.crates``: the Rust crates every locked package's ``Cargo.lock`` needs, vendored.

One directory per crate, ``duni/.crates/<name>-<version>/``, shared by every package
that locks it, in the layout of ``cargo vendor``: the ``.crate`` extracted and its
``.cargo-checksum.json``.  Shared rather than under each package's directory because
Rust extensions share most of their crates (pyo3, its macros, libc ...): one copy, one
download, one directory that a cargo source replacement points at; and a package's own
tree stays exactly its sdist (its tree hash is the sdist's, patches applied).  The
leading dot keeps the directory apart from package directories, whose names are
normalised project names and never start with one.

The rules follow pull's for packages: a crate directory whose tree hash is the lock's is
left alone; otherwise it is built beside (``.crates/.tmp-*``), checked against the
lock's tree hash, and renamed into place, so there is never a half-extracted crate.
A directory with other content is refused unless forced (naming the files that
differ): it was edited.  Directories of crates no longer locked are removed on a full
pull; they are generated, nothing but pull writes them.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from monorepo._core.fstree import remove_tree
from monorepo._core.reporter import Reporter
from monorepo.errors import LockFileError, PullError
from monorepo.project.lockfile import LockedPackage
from monorepo.sources.crates import (
    CRATES_DIR,
    Crate,
    CrateError,
    crates_from_tool,
    fetch_crate,
    materialize_crate,
)
from monorepo.sources.fetch import STAGING_PREFIX
from monorepo.sources.store import ContentStore
from monorepo.sources.treehash import Entry, TreeHashError, diff_entries, hash_entries, scan_tree

__all__ = ["CrateSync", "locked_crates", "sync_crates"]


@dataclass
class CrateSync:
    """What a crate sync did, by directory name under ``duni/.crates``."""

    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def locked_crates(packages: Iterable[LockedPackage]) -> dict[str, tuple[Crate, list[str]]]:
    """Every crate the *packages* lock, by directory, with the packages that use it."""
    out: dict[str, tuple[Crate, list[str]]] = {}
    for pkg in packages:
        what = f"{pkg.name} {pkg.version}"
        for crate in crates_from_tool(pkg.tool, what=what):
            known = out.get(crate.dir)
            if known is None:
                out[crate.dir] = (crate, [what])
                continue
            if (known[0].checksum, known[0].tree_hash) != (crate.checksum, crate.tree_hash):
                raise LockFileError(
                    f"pylock.toml: {crate.label} is locked twice with different checksums or"
                    f" tree hashes ({', '.join(known[1])} and {what}); run `monorepo lock`"
                )
            known[1].append(what)
    return dict(sorted(out.items()))


def _crates_root(duni: Path) -> Path:
    """``duni/.crates``, made if missing; refused when it is a link or not a directory."""
    root = duni / CRATES_DIR
    try:
        mode = os.lstat(root).st_mode
    except FileNotFoundError:
        root.mkdir(parents=True)
        return root
    if not stat.S_ISDIR(mode):
        what = "a symbolic link" if stat.S_ISLNK(mode) else "not a directory"
        raise PullError(
            f"{root} is {what}: pull writes the vendored crates there and never through a"
            f" link; remove it (`rm {root}`) and pull again"
        )
    return root


def sync_crates(
    duni: Path,
    packages: Iterable[LockedPackage],
    *,
    store: ContentStore,
    fetch: Callable[[str], Iterator[bytes] | bytes],
    offline: bool,
    force: bool,
    remove_unlocked: bool,
    reporter: Reporter,
    jobs: int = 8,
) -> CrateSync:
    """Make ``duni/.crates`` hold exactly the locked crates (see the module docstring)."""
    wanted = locked_crates(packages)
    result = CrateSync()
    if not wanted and not os.path.lexists(duni / CRATES_DIR):
        return result
    root = _crates_root(duni)
    for entry in root.iterdir():
        if entry.name.startswith(STAGING_PREFIX):
            remove_tree(entry)
    reporter.task("crates", f"Vendoring {len(wanted)} crates", len(wanted))
    refusals: list[str] = []

    def one(item: tuple[str, tuple[Crate, list[str]]]) -> str:
        _, (crate, users) = item
        try:
            return _sync_one(root, crate, ", ".join(users), store, fetch, offline, force, refusals)
        finally:
            reporter.advance("crates")

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="crates") as pool:
        outcomes = list(pool.map(one, wanted.items()))
    reporter.done("crates")
    for d, outcome in zip(wanted, outcomes, strict=True):
        if outcome == "updated":
            result.updated.append(d)
        elif outcome == "unchanged":
            result.unchanged.append(d)
    if refusals:
        raise PullError(
            "duni/.crates has changes that pull would overwrite:\n  "
            + "\n  ".join(sorted(refusals))
            + "\nVendored crates are generated from the lock: keep a change as an overlay"
            " patch of the package instead, or run `monorepo pull --force` to overwrite it."
        )
    if remove_unlocked:
        for entry in sorted(root.iterdir()):
            if entry.name not in wanted:
                aside = root / f"{STAGING_PREFIX}{entry.name}-old-{secrets.token_hex(6)}"
                os.rename(entry, aside)
                remove_tree(aside)
                result.removed.append(entry.name)
        if not wanted:
            root.rmdir()
    return result


def _sync_one(
    root: Path,
    crate: Crate,
    users: str,
    store: ContentStore,
    fetch: Callable[[str], Iterator[bytes] | bytes],
    offline: bool,
    force: bool,
    refusals: list[str],
) -> str:
    target = root / crate.dir
    current = _scan(target)
    if current is not None and hash_entries(current) == crate.tree_hash:
        return "unchanged"
    archive = fetch_crate(crate, store=store, fetch=fetch, offline=offline, package=users)
    staging = root / f"{STAGING_PREFIX}{crate.dir}-new-{secrets.token_hex(6)}"
    aside = root / f"{STAGING_PREFIX}{crate.dir}-old-{secrets.token_hex(6)}"
    try:
        entries = materialize_crate(crate, archive, staging)
        new_hash = hash_entries(entries)
        if crate.tree_hash and new_hash != crate.tree_hash:
            raise CrateError(
                f"{crate.label} (used by {users}): its vendored tree has tree hash {new_hash},"
                f" but pylock.toml records {crate.tree_hash}; run `monorepo lock` (and review"
                " the change) before pulling"
            )
        exists = os.path.lexists(target)
        if exists and not force:
            refusals.append(_edited(crate, target, current, entries))
            return "refused"
        if exists:
            os.rename(target, aside)
        os.rename(staging, target)
        return "updated"
    finally:
        for leftover in (staging, aside):
            if os.path.lexists(leftover):
                remove_tree(leftover)


def _scan(target: Path) -> dict[str, Entry] | None:
    if target.is_symlink() or not target.is_dir():
        return None
    try:
        return dict(scan_tree(target))
    except TreeHashError:
        return None


def _edited(
    crate: Crate, target: Path, current: Mapping[str, Entry] | None, entries: Mapping[str, Entry]
) -> str:
    if current is None:
        return f"duni/{CRATES_DIR}/{crate.dir} ({crate.label}) is not a directory pull can read"
    diff = diff_entries(entries, current)
    changed = [*diff.modified, *diff.added, *diff.removed, *diff.mode_changed, *diff.type_changed]
    shown = ", ".join(changed[:10]) + (
        f" and {len(changed) - 10} more" if len(changed) > 10 else ""
    )
    return f"duni/{CRATES_DIR}/{crate.dir} ({crate.label}) was edited: {shown or target.name}"
