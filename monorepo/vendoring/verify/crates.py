"""Check ``tree``, for Rust crates: each locked crate is in ``duni/.crates`` with its tree hash.

A crate that differs is rebuilt from the download cache (offline; its ``.crate`` is
there after any pull) to name the files that differ; without it, the two hashes are
reported.
"""

from __future__ import annotations

from collections.abc import Sequence

from monorepo._core.fstree import temporary_directory
from monorepo.errors import MonorepoError
from monorepo.project.lockfile import LockedPackage
from monorepo.sources.crates import CRATES_DIR, Crate, fetch_crate, materialize_crate
from monorepo.sources.store import ContentStore
from monorepo.sources.treehash import TreeHashError, diff_entries, hash_entries, scan_tree
from monorepo.vendoring.crates import locked_crates
from monorepo.vendoring.verify.context import Context
from monorepo.vendoring.verify.report import CheckResult, Item


def _offline(_: str) -> bytes:
    raise OSError("offline")


def _differences(ctx: Context, crate: Crate, actual_path: str) -> str:
    """The files that differ from a rebuilt crate tree ('' when it cannot be rebuilt)."""
    try:
        archive = fetch_crate(
            crate, store=ContentStore(ctx.cache.store), fetch=_offline, offline=True
        )
        with temporary_directory(prefix="monorepo-verify-crate-") as tmp:
            expected = materialize_crate(crate, archive, tmp / crate.dir)
        actual = scan_tree(ctx.duni / CRATES_DIR / crate.dir)
    except (MonorepoError, OSError):
        return ""
    diff = diff_entries(expected, actual)
    parts = []
    for label, paths in (
        ("modified", diff.modified),
        ("added", diff.added),
        ("removed", diff.removed),
        ("mode changed", diff.mode_changed),
        ("type changed", diff.type_changed),
    ):
        if paths:
            parts.append(f"{label} {', '.join(f'{actual_path}/{p}' for p in paths[:20])}")
    return "; ".join(parts)


def check_crates(
    ctx: Context, result: CheckResult, selected: Sequence[LockedPackage], *, everything: bool
) -> int:
    """Fill *result* with the crate findings; returns the number of crates checked."""
    try:
        wanted = locked_crates(selected)
    except MonorepoError as error:
        result.fail(Item("pylock.toml", "crates", str(error), ("pylock.toml",)))
        return 0
    root = ctx.duni / CRATES_DIR
    for d, (crate, users) in wanted.items():
        path = root / d
        shown = ctx.rel(path)
        subject = f"crate {crate.name}"
        used = f"{crate.version} (used by {', '.join(users)})"
        if path.is_symlink() or not path.is_dir():
            what = "does not exist" if not path.is_symlink() else "is a symbolic link"
            result.fail(
                Item(subject, "missing", f"{used}: {shown} {what}; run `monorepo pull`", (shown,))
            )
            continue
        try:
            actual = hash_entries(scan_tree(path))
        except TreeHashError as error:
            result.fail(Item(subject, "unreadable", f"{used}: {error}", (shown,)))
            continue
        if crate.tree_hash and actual != crate.tree_hash:
            detail = _differences(ctx, crate, shown) or (
                f"tree hash {actual}, pylock.toml records {crate.tree_hash}"
            )
            result.fail(Item(subject, "modified", f"{used}: {shown} differs: {detail}", (shown,)))
    if everything and root.is_dir() and not root.is_symlink():
        for entry in sorted(root.iterdir()):
            if entry.name not in wanted:
                shown = ctx.rel(entry)
                result.fail(
                    Item(
                        shown,
                        "unknown",
                        "no locked package's Cargo.lock names this crate; `monorepo pull`"
                        " removes it",
                        (shown,),
                    )
                )
    return len(wanted)
