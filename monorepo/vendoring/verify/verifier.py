"""``monorepo verify``: audit a project's lock and vendored tree, and say exactly what is wrong.

Four checks, each reported by name with the items that failed it (DESIGN.md section 7):

``lock``
    pylock.toml is valid PEP 751 with complete ``[tool.monorepo]`` tables, every
    package has a source hash (sha256 or commit id), and the lock is fresh against
    pyproject.toml and the overlays (the rule of ``lock --check``); each overlay
    patch the lock records still has the recorded sha256.
``tree``
    every locked package is in ``duni/<dir>`` with the lock's tree hash.  For a
    mismatch the expected per-file entries come from pull's manifest when it is
    trustworthy (its entries hash to the lock's tree hash), otherwise from a tree
    rebuilt from the cached source, so each modified, added, removed, mode- or
    type-changed path is named.  Unknown entries in ``duni/`` and a
    ``workspace.toml`` that differs from what pull would write are reported.  No
    network: without a trustworthy manifest and with an empty cache the check
    still fails by hash, it just cannot name the files.
``remote`` (opt-in)
    every archive is downloaded again from the locked URL, bypassing every cache,
    and must have the locked size and sha256; the index page is read afresh to
    compare its current sha256 for the file and to warn about yanked releases.
    A git source's commit must still exist in a fresh clone.
``resolve`` (opt-in)
    resolving again from the lock's inputs alone (no preference for the locked
    versions) with the lock's exclude-newer, or the newest upload time of a locked
    file when it has none, must give the same versions and sources.

Verify never writes to the project, the lock or ``duni/``: rebuilt trees, fresh
clones and index pages live in temporary directories.  The result is a
:class:`VerifyReport`; its :meth:`~VerifyReport.to_dict` is the ``--json`` form,
whose schema (``"schema": 1``) docs/audits.md documents.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from packaging.utils import canonicalize_name

from monorepo._core.paths import CacheDir
from monorepo._core.reporter import NullReporter, Reporter
from monorepo.errors import LockFileError
from monorepo.project.config import load_config
from monorepo.project.lockfile import (
    LockDocument,
    LockedPackage,
)
from monorepo.vendoring.verify.context import Context
from monorepo.vendoring.verify.lock import check_lock
from monorepo.vendoring.verify.remote import check_remote
from monorepo.vendoring.verify.report import CheckResult, Item, VerifyReport
from monorepo.vendoring.verify.resolve import check_resolve
from monorepo.vendoring.verify.tree import check_tree

__all__ = ["CHECKS", "verify"]

CHECKS = ("lock", "tree", "remote", "resolve")
"""Check names, in the order they run and are reported."""


def _select(lock: LockDocument, names: Sequence[str]) -> list[LockedPackage]:
    """The locked packages named (by name or dir); all of them when none is."""
    if not names:
        return list(lock.packages)
    chosen: list[LockedPackage] = []
    missing: list[str] = []
    for name in names:
        found = [p for p in lock.packages if p.name == canonicalize_name(name) or p.dir == name]
        if not found:
            missing.append(name)
        chosen += [p for p in found if p not in chosen]
    if missing:
        raise LockFileError(
            f"not in pylock.toml: {', '.join(missing)}; verify checks locked packages (see"
            " `monorepo list`)"
        )
    return chosen


# --------------------------------------------------------------------------- public


def verify(
    project: Path | str = ".",
    *,
    packages: Sequence[str] = (),
    remote: bool = False,
    resolve: bool = False,
    index_url: str | None = None,
    jobs: int | None = None,
    reporter: Reporter | None = None,
    cache_dir: Path | str | None = None,
) -> VerifyReport:
    """Audit *project*'s lock and ``duni/`` (see the module docstring for the checks).

    *packages* limits the tree, remote and resolve checks to those locked names or
    dirs (then unknown directories and workspace.toml are not checked).  *remote*
    and *resolve* add the network checks.  Nothing in the project is written.
    *cache_dir* is the cache directory the sources and git mirrors are read from
    (default: ``MONOREPO_CACHE_DIR``, else the user cache directory).
    Raises :class:`~monorepo.errors.MonorepoError` only for input errors (no
    pyproject.toml, a package name that is not locked); everything else is a
    failed check in the report.
    """
    reporter = reporter if reporter is not None else NullReporter()
    config = load_config(Path(project))
    workers = jobs if jobs is not None else min(8, (os.cpu_count() or 1) * 2)
    if workers < 1:
        raise LockFileError(f"--jobs must be at least 1, not {workers}")
    ctx = Context(config, reporter, workers, CacheDir.at(cache_dir))
    names = [
        n
        for n in CHECKS
        if n in ("lock", "tree") or (n == "remote" and remote) or (n == "resolve" and resolve)
    ]
    results = {n: CheckResult(n) for n in names}
    check_lock(ctx, results["lock"], index_url)
    if ctx.lock is None:
        for name in names[1:]:
            results[name].passed = False
            results[name].skipped = True
            results[name].items.append(
                Item("pylock.toml", "skipped", "not run: pylock.toml is missing or invalid")
            )
        return VerifyReport(config.root, [results[n] for n in names])
    selected = _select(ctx.lock, packages)
    check_tree(ctx, results["tree"], selected, everything=not packages)
    if remote:
        check_remote(ctx, results["remote"], selected)
    if resolve:
        check_resolve(ctx, results["resolve"], packages, index_url)
    return VerifyReport(config.root, [results[n] for n in names])
