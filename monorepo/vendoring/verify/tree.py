"""Check ``tree``: every locked package is in duni/ with its tree hash; differences named."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monorepo._core.fstree import temporary_directory
from monorepo.errors import MonorepoError
from monorepo.overlays.loading import locked_patches
from monorepo.project.lockfile import (
    LockedPackage,
)
from monorepo.sources.crates import CRATES_DIR
from monorepo.sources.manifest import (
    describe_source_change,
    input_key,
    read_record,
    source_identity,
)
from monorepo.sources.treehash import (
    Entry,
    TreeHashError,
    diff_entries,
    hash_entries,
    manifest_and_hash,
    scan_trees,
)
from monorepo.vendoring.state import STATE_DIR, state_problems
from monorepo.vendoring.verify.context import Context
from monorepo.vendoring.verify.crates import check_crates
from monorepo.vendoring.verify.report import CheckResult, Item
from monorepo.vendoring.workspace import GENERATED, README, render, workspace_data

# ------------------------------------------------------------------------ check: tree


@dataclass(frozen=True)
class _TreeOutcome:
    items: tuple[Item, ...] = ()
    warnings: tuple[Item, ...] = ()


def check_tree(
    ctx: Context, result: CheckResult, selected: Sequence[LockedPackage], *, everything: bool
) -> None:
    assert ctx.lock is not None
    lock = ctx.lock
    duni = ctx.duni
    if not duni.is_dir():
        result.fail(
            Item(
                ctx.rel(duni),
                "missing",
                "does not exist; run `monorepo pull`",
                (ctx.rel(duni),),
            )
        )
        return
    for path, why in state_problems(duni):
        # Records read through a planted link would be someone else's claims.
        ctx.records = False
        shown = ctx.rel(path)
        result.fail(
            Item(
                ctx.rel(duni / STATE_DIR),
                "state",
                f"{shown} {why}: pull's records are never read through a link, and pull"
                f" refuses to run until it is removed (`rm -r {shown}`)",
                (shown,),
            )
        )
    ctx.reporter.task("verify:tree", f"Hashing {len(selected)} trees", len(selected))
    # One pool hashes every file of every tree (treehash.scan_trees): a pool per package
    # inside a pool of packages would run many more threads than there are cores.
    targets = [ctx.duni / pkg.dir for pkg in selected]
    present = [i for i, t in enumerate(targets) if t.is_dir() and not t.is_symlink()]
    for _ in range(len(selected) - len(present)):
        ctx.reporter.advance("verify:tree")
    scanned = scan_trees(
        [targets[i] for i in present],
        jobs=ctx.jobs,
        progress=lambda _: ctx.reporter.advance("verify:tree"),
    )
    actual: dict[int, Mapping[str, Entry] | TreeHashError] = dict(
        zip(present, scanned, strict=True)
    )
    ctx.reporter.done("verify:tree")
    outcomes = [_check_package_tree(ctx, pkg, actual.get(i)) for i, pkg in enumerate(selected)]
    for outcome in outcomes:
        for item in outcome.items:
            result.fail(item)
        result.warnings += outcome.warnings
    result.summary = f"{len(selected)} package tree{'' if len(selected) == 1 else 's'}"
    crates = check_crates(ctx, result, selected, everything=everything)
    if crates:
        result.summary += f", {crates} crate{'' if crates == 1 else 's'}"
    if not everything:
        return
    locked = {p.dir for p in lock.packages}
    for entry in sorted(duni.iterdir(), key=lambda p: p.name):
        name = entry.name
        if name in locked or name in GENERATED or name in (STATE_DIR, CRATES_DIR):
            continue
        kind = "directory" if entry.is_dir() and not entry.is_symlink() else "file"
        result.fail(
            Item(
                ctx.rel(entry),
                "unknown",
                f"this {kind} is not in pylock.toml; remove it (`monorepo pull` removes what it"
                " created) or add the package and run `monorepo lock`",
                (ctx.rel(entry),),
            )
        )
    _check_generated(ctx, result)


def _check_package_tree(
    ctx: Context, pkg: LockedPackage, scanned: Mapping[str, Entry] | TreeHashError | None
) -> _TreeOutcome:
    """The tree check of one package, given its scanned entries (None: not a directory)."""
    target = ctx.duni / pkg.dir
    shown = ctx.dir_rel(pkg)
    subject = str(pkg.name)
    if not os.path.lexists(target):
        return _TreeOutcome(
            (
                Item(
                    subject,
                    "missing",
                    f"{pkg.version}: {shown} does not exist; run `monorepo pull`",
                    (shown,),
                ),
            )
        )
    if scanned is None:
        return _TreeOutcome(
            (Item(subject, "missing", f"{pkg.version}: {shown} is not a directory", (shown,)),)
        )
    if isinstance(scanned, TreeHashError):
        return _TreeOutcome((Item(subject, "unreadable", f"{pkg.version}: {scanned}", (shown,)),))
    actual = scanned
    actual_text, actual_hash = manifest_and_hash(actual)
    record = (
        read_record(
            ctx.duni / STATE_DIR / f"{pkg.dir}.manifest", (actual, actual_text, actual_hash)
        )
        if ctx.records
        else None
    )
    key = input_key(pkg)
    items: list[Item] = []
    if record is not None and record.key is not None and record.key != key:
        change = describe_source_change(record.source, source_identity(pkg))
        items.append(
            Item(
                subject,
                "source-changed",
                f"{pkg.version}: {shown} was pulled from another lock entry than pylock.toml"
                f" has now ({change}); check the source with `monorepo verify --remote`, then"
                " run `monorepo pull`, which downloads it again and checks it",
                (shown,),
            )
        )
    want = pkg.tree_hash
    expected: Mapping[str, Entry] | None = None
    why_not = ""
    if want is None:
        # No tree hash in the lock: trust the manifest pull wrote for this very entry.
        if record is not None and record.key == key:
            expected, want = record.entries, record.hash
        else:
            expected, why_not = _rebuild(ctx, pkg)
        if expected is None:
            warning = Item(
                subject,
                "unverified",
                f"{pkg.version}: the lock has no tree hash and {why_not}, so {shown} cannot be"
                " checked",
                (shown,),
            )
            return _TreeOutcome(tuple(items), (warning,))
        if want is None:
            want = hash_entries(expected)
    if actual_hash == want:
        return _TreeOutcome(tuple(items))
    if expected is None and record is not None and record.hash == want:
        expected = record.entries
    elif expected is None:
        expected, why_not = _rebuild(ctx, pkg)
        if expected is not None and hash_entries(expected) != want:
            rebuilt = hash_entries(expected)
            items.append(
                Item(
                    subject,
                    "tree-hash",
                    f"{pkg.version}: {shown}: the tree built from the locked source hashes to"
                    f" {rebuilt},"
                    f" not to the lock's tree-hash {want}: the lock's tree-hash, the published"
                    " file or an overlay changed since `monorepo lock`; check with `monorepo"
                    " verify --remote`",
                    (shown,),
                )
            )
            if rebuilt == actual_hash:
                return _TreeOutcome(tuple(items))
    if expected is None:
        items.append(
            Item(
                subject,
                "tree-hash",
                f"{pkg.version}: {shown} hashes to {actual_hash}, the lock records {want}; the"
                f" files that differ cannot be named: {why_not}",
                (shown,),
            )
        )
        return _TreeOutcome(tuple(items))
    diff = diff_entries(expected, actual)
    for code, paths in (
        ("modified", diff.modified),
        ("added", diff.added),
        ("removed", diff.removed),
        ("mode-changed", tuple(p for p in diff.mode_changed if p not in diff.modified)),
        ("type-changed", diff.type_changed),
    ):
        if not paths:
            continue
        full = tuple(ctx.dir_rel(pkg, p) for p in paths)
        listed = ", ".join(full[:10]) + (f" and {len(full) - 10} more" if len(full) > 10 else "")
        words = code.replace("-", " ")
        items.append(Item(subject, code, f"{pkg.version}: {words}: {listed}", full))
    if not items:
        items.append(
            Item(
                subject,
                "tree-hash",
                f"{pkg.version}: {shown} hashes to {actual_hash}, the lock records {want}",
                (shown,),
            )
        )
    return _TreeOutcome(tuple(items))


def _rebuild(ctx: Context, pkg: LockedPackage) -> tuple[Mapping[str, Entry] | None, str]:
    """The entries of *pkg*'s tree rebuilt from the cached source in a scratch directory.

    Offline by design: the tree check needs no network.  Returns (None, reason) when
    the source is not in the cache or the overlay's patches cannot be read.
    """
    from monorepo.sources.fetch import materialize_entries
    from monorepo.sources.store import ContentStore

    assert ctx.lock is not None
    try:
        patches = locked_patches([pkg], ctx.lock, base=ctx.root, cache=ctx.cache, offline=True).get(
            pkg.dir, ()
        )
        with temporary_directory(prefix="monorepo-verify-") as tmp:
            entries = materialize_entries(
                pkg,
                tmp / "tree",
                patches=patches,
                store=ContentStore(ctx.cache.store),
                cache=ctx.cache,
                offline=True,
            )
    except MonorepoError as error:
        return None, (
            "there is no trustworthy pull manifest and the tree cannot be rebuilt offline"
            f" ({error})"
        )
    return entries, ""


def _check_generated(ctx: Context, result: CheckResult) -> None:
    """duni/README.md and workspace.toml must be what pull writes for this lock and tree."""

    assert ctx.lock is not None
    readme = ctx.duni / "README.md"
    try:
        same = readme.read_text(encoding="utf-8") == README
    except (OSError, UnicodeDecodeError):
        same = False
    if not same:
        result.fail(
            Item(
                ctx.rel(readme),
                "generated",
                "is missing or not what `monorepo pull` writes; run `monorepo pull`",
                (ctx.rel(readme),),
            )
        )
    path = ctx.duni / "workspace.toml"
    shown = ctx.rel(path)
    trees = {p.dir: ctx.duni / p.dir for p in ctx.lock.packages if (ctx.duni / p.dir).is_dir()}
    try:
        want_text = render(workspace_data(ctx.lock, trees))
    except MonorepoError as error:
        result.fail(Item(shown, "workspace", f"cannot be computed: {error}", (shown,)))
        return
    try:
        have_text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        result.fail(Item(shown, "workspace", "does not exist; run `monorepo pull`", (shown,)))
        return
    except (OSError, UnicodeDecodeError) as error:
        result.fail(Item(shown, "workspace", f"cannot be read: {error}", (shown,)))
        return
    if have_text == want_text:
        return
    try:
        have = tomllib.loads(have_text)
    except tomllib.TOMLDecodeError as error:
        result.fail(Item(shown, "workspace", f"is not valid TOML ({error})", (shown,)))
        return
    differences = _toml_diff(tomllib.loads(want_text), have)
    if not differences:
        differences = ["formatting differs"]
    for difference in differences:
        result.fail(
            Item(
                shown,
                "workspace",
                f"{difference} (differs from what pull writes for pylock.toml; run"
                " `monorepo pull`)",
                (shown,),
            )
        )


def _toml_diff(want: Any, have: Any, prefix: str = "") -> list[str]:
    """Key paths whose values differ, as ``key: file has X, lock gives Y`` lines."""
    if isinstance(want, dict) and isinstance(have, dict):
        out: list[str] = []
        for key in sorted(set(want) | set(have)):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in have:
                out.append(f"{where} is missing")
            elif key not in want:
                out.append(f"{where} is not expected")
            else:
                out += _toml_diff(want[key], have[key], where)
        return out
    if want != have:
        return [f"{prefix}: the file has {have!r}, the lock gives {want!r}"]
    return []
