"""``monorepo pull --dry-run``: what a pull would change in ``duni/``, changing nothing.

It applies pull's rule for "up to date" without fetching anything: a directory is
unchanged when pull's record of it names this very lock entry (:func:`input_key`) and
the tree on disk still has the recorded tree hash (the lock's, when it records one).
A directory that does not exist would be added; one whose record names another entry
would be replaced; one edited since pull wrote it (or not written by pull) would be
refused without ``--force``, which the plan says in ``warnings``; a directory of pull's
that the lock no longer names would be removed.  Nothing is downloaded, written or
locked, so the plan can be made while another pull runs (it may then be out of date).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from packaging.utils import canonicalize_name

from monorepo._core.paths import CacheDir
from monorepo.errors import PullError
from monorepo.project import lockfile
from monorepo.project.config import load_config
from monorepo.project.lockfile import LockDocument, LockedPackage
from monorepo.sources.manifest import input_key, read_record
from monorepo.sources.treehash import TreeHashError, hash_entries, scan_tree
from monorepo.vendoring.pull import PullResult
from monorepo.vendoring.state import STATE_DIR
from monorepo.vendoring.workspace import GENERATED


def plan_pull(
    project: str | os.PathLike[str] = ".",
    *,
    packages: Sequence[str] = (),
    force: bool = False,
    frozen: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> PullResult:
    """The :class:`PullResult` a :func:`~monorepo.vendoring.pull.pull` with these
    arguments would return (``added``, ``updated``, ``unchanged``, ``removed``), made
    without changing anything; ``warnings`` names directories the pull would refuse to
    overwrite (local edits) unless *force*.  A stale lock raises
    :class:`~monorepo.errors.StaleLockError` as the pull would, unless *frozen*."""
    config = load_config(Path(project))
    lock = lockfile.read(config.root / lockfile.LOCK_NAME)
    if not frozen:
        from monorepo.locking.freshness import require_fresh

        require_fresh(config, lock, command="pull", cache=CacheDir.at(cache_dir), offline=True)
    duni = config.duni
    result = PullResult(duni=duni)
    state = duni / STATE_DIR
    for pkg in _selected(lock, packages):
        target = duni / pkg.dir
        if not os.path.lexists(target):
            result.updated.append(pkg.dir)
            result.added.append(pkg.dir)
            continue
        record = read_record(state / f"{pkg.dir}.manifest")
        current = _tree_hash(target)
        want = pkg.tree_hash if pkg.tree_hash is not None else (record.hash if record else None)
        if record is not None and record.key == input_key(pkg) and current == want:
            result.unchanged.append(pkg.dir)
            continue
        result.updated.append(pkg.dir)
        if not force and (record is None or record.hash != current):
            result.warnings.append(
                f"duni/{pkg.dir} ({pkg.name} {pkg.version}) was edited or not made by pull:"
                " `monorepo pull` would refuse to overwrite it without --force"
            )
    if not packages and duni.is_dir():
        locked = {p.dir for p in lock.packages}
        for entry in sorted(duni.iterdir()):
            name = entry.name
            if name.startswith(".") or name in locked or name in GENERATED:
                continue
            mine = (state / f"{name}.manifest").exists()  # pull removes only its own
            if entry.is_dir() and not entry.is_symlink() and mine:
                result.removed.append(name)
    return result


def _tree_hash(target: Path) -> str | None:
    if target.is_symlink() or not target.is_dir():
        return None
    try:
        return hash_entries(scan_tree(target))
    except TreeHashError:
        return None


def _selected(lock: LockDocument, names: Sequence[str]) -> list[LockedPackage]:
    if not names:
        return list(lock.packages)
    wanted = {canonicalize_name(n) for n in names} | set(names)
    chosen = [p for p in lock.packages if p.name in wanted or p.dir in wanted]
    found = {p.name for p in chosen} | {p.dir for p in chosen}
    missing = sorted(n for n in names if n not in found and canonicalize_name(n) not in found)
    if missing:
        raise PullError(
            f"not in pylock.toml: {', '.join(missing)}; pull names locked packages",
            exit_code=2,
        )
    return chosen
