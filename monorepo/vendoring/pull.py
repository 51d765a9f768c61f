"""``monorepo pull``: bring ``duni/`` in line with pylock.toml, one package at a time, atomically.

Each locked source becomes ``duni/<dir>/`` (fetched, extracted or exported, patched:
see :mod:`monorepo.sources`).  Pull is incremental, never half-done, and never
silently destroys work, so it keeps a record of what it wrote:

``duni/.monorepo/<dir>.manifest``
    the per-file manifest (:func:`monorepo.sources.treehash.manifest`) of the tree pull last
    placed at ``duni/<dir>``, plus a ``# source`` line (the source's URL, size and
    sha256, or git URL and commit) and an ``# input`` line, a digest of the lock entry
    it was built from (that source and the patch hashes).
``duni/.monorepo/<dir>.pending``
    the manifest of a tree pull is about to rename into place (exists only while
    that happens, or after a run was killed in the middle of it).
``duni/.monorepo/<dir>.stat`` and ``<dir>.facts``
    caches keyed by what they describe: file stamps (so an unchanged file is not read
    again) and, under the tree hash, the facts workspace.toml takes from the tree.
``duni/.monorepo/lock``
    a file lock: two pulls of the same project serialise instead of interleaving.
    The extraction workers inherit it, so it stays taken until every process of a
    pull is gone, even a killed one's.
``duni/.monorepo/.gitignore``
    ``*``: the records describe this checkout, they are not to be committed.

None of these is ever reached through a symbolic link: duni/ is committed, so a
branch could plant ``duni/.monorepo`` (or a file in it) as a link to elsewhere.
Pull refuses to run until it is removed (:func:`state_problems`).

Rules, per locked package:

* **Up to date** when the manifest's input is this lock entry (the same source URL,
  size and sha256, or commit, and patches) and ``duni/<dir>`` hashes to the lock's
  ``tree-hash`` (to the manifest's when the lock has none).  Such a directory is not
  touched.  The source identity is checked whatever the tree hash says: when the
  lock names another source than the one vendored (or there is no record of it),
  the source is fetched again, a cached file only if it was downloaded from that
  very URL, and must match the lock, so an edited hash, size or URL fails with a
  hash mismatch instead of being recorded as describing the tree already there.
* Otherwise the tree is built beside it (``duni/.tmp-<dir>-new-*``).  If the lock
  records a tree hash and the new tree differs, pull stops: the upstream source or
  an overlay changed since ``lock``.  If the existing directory already has the new
  content it is adopted (only the manifest is written).
* A directory is **pull's own** when its content equals a manifest pull wrote:
  ``<dir>.manifest``, or ``<dir>.pending`` (which proves a run was killed after
  renaming that very tree into place).  Pull replaces or removes only its own
  directories.  A directory with a manifest but other content was **edited
  locally**; one without any record **was not created by pull**.  Both are refused,
  naming the edited files, unless ``force=True``.
* Replacement: write ``<dir>.pending``, rename the old directory aside
  (``.tmp-<dir>-old-*``), rename the new one in, rename ``.pending`` to
  ``.manifest``, delete the old one.  A SIGKILL at any point leaves either the old
  tree with its manifest, no tree (rebuilt next time), or the new tree with a
  ``.pending`` that matches it; the next pull deletes every ``.tmp-*`` left behind
  at its start and finishes the job.
* Directories the lock no longer names are removed when they are pull's own,
  refused when edited (unless forced), and left alone with a warning when pull
  never created them.  (Only when pulling every package; a partial pull removes
  nothing.)

``duni/README.md`` and ``duni/workspace.toml`` are regenerated after a successful
pull and rewritten only when their content changes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from packaging.utils import canonicalize_name

from monorepo._core.atomic import write_text_if_changed
from monorepo._core.fstree import Stamp, remove_tree
from monorepo._core.paths import CacheDir
from monorepo._core.reporter import NullReporter, Reporter
from monorepo.errors import HashMismatchError, LockFileError, PullError
from monorepo.extract.speed.pool import ExtractorPool
from monorepo.overlays.loading import locked_patches
from monorepo.project import lockfile
from monorepo.project.config import load_config
from monorepo.project.lockfile import (
    LockDocument,
    LockedPackage,
)
from monorepo.sources.fetch import STAGING_PREFIX, Fetch, materialize_entries
from monorepo.sources.manifest import (
    describe_source_change,
    input_key,
    read_record,
    record_text,
    source_identity,
)
from monorepo.sources.patches import Patch
from monorepo.sources.store import ContentStore
from monorepo.sources.treehash import (
    Entry,
    TreeHashError,
    diff_entries,
    hash_entries,
    scan_tree,
)
from monorepo.vendoring.crates import sync_crates
from monorepo.vendoring.speed.downloads import (
    DOWNLOADS,
    download_ahead,
    largest_first,
    ready_in_order,
)
from monorepo.vendoring.speed.facts import tree_facts
from monorepo.vendoring.speed.placement import spread_package_trees
from monorepo.vendoring.speed.stamps import read_stamps, write_stamps
from monorepo.vendoring.state import (
    STATE_DIR,
    STATE_GITIGNORE,
    clean_leftovers,
    exclusive,
    state_dir,
    write_failed,
)
from monorepo.vendoring.workspace import (
    GENERATED,
    README,
    TreeFacts,
    render,
    workspace_data,
)

__all__ = ["PullResult", "pull"]

_MAX_LISTED = 20


@dataclass
class PullResult:
    """What a pull did, by directory name under ``duni``."""

    duni: Path
    updated: list[str] = field(default_factory=list)
    """Directories written: new ones and changed ones."""
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: crate directories under ``duni/.crates`` (see :mod:`monorepo.vendoring.crates`)
    crates_updated: list[str] = field(default_factory=list)
    crates_removed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    """The directories of :attr:`updated` that did not exist before (a first pull's all)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        data = asdict(self)
        data["duni"] = str(self.duni)
        return data


@dataclass(frozen=True)
class _Outcome:
    status: Literal["updated", "unchanged", "refused"]
    refusal: str = ""
    tree_hash: str | None = None
    """The tree hash of duni/<dir> as this run found or made it (not for refusals)."""
    entries: Mapping[str, Entry] | None = None
    """The entries of that tree."""
    new: bool = False
    """An ``updated`` directory that did not exist before."""


# ------------------------------------------------------------------ small file helpers


def _write_atomic(path: Path, text: str) -> bool:
    """Write *text* through a ``.tmp-`` file and a rename; False when already equal."""
    return write_text_if_changed(path, text, prefix=f"{STAGING_PREFIX}{path.name}-")


def _describe_diff(recorded: Mapping[str, Entry], current: Mapping[str, Entry]) -> str:
    diff = diff_entries(recorded, current)
    parts: list[str] = []
    listed = 0
    for label, paths in (
        ("modified", diff.modified),
        ("added", diff.added),
        ("removed", diff.removed),
        ("mode changed", tuple(p for p in diff.mode_changed if p not in diff.modified)),
        ("type changed", diff.type_changed),
    ):
        if not paths:
            continue
        room = max(0, _MAX_LISTED - listed)
        shown = list(paths[:room])
        listed += len(shown)
        more = f" and {len(paths) - len(shown)} more" if len(paths) > len(shown) else ""
        parts.append(f"{label} {', '.join(shown)}{more}" if shown else f"{label}: {len(paths)}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- pulling


def _check_dirs(lock: LockDocument) -> None:
    seen: dict[str, LockedPackage] = {}
    for pkg in lock.packages:
        d = pkg.dir
        if (
            not d
            or d in (".", "..")
            or d.startswith(".")
            or "/" in d
            or "\\" in d
            or "\0" in d
            or d in GENERATED
        ):
            raise LockFileError(
                f"pylock.toml: {pkg.name} {pkg.version} has dir {d!r}, which is not a plain"
                " directory name pull may use in duni/; run `monorepo lock` to regenerate it"
            )
        if d in seen:
            raise LockFileError(
                f"pylock.toml: {seen[d].name} {seen[d].version} and {pkg.name} {pkg.version}"
                f" both use dir {d!r}; run `monorepo lock` to regenerate the lock"
            )
        seen[d] = pkg


def _select(lock: LockDocument, names: Sequence[str]) -> list[LockedPackage]:
    if not names:
        return list(lock.packages)
    wanted = {canonicalize_name(n): n for n in names}
    wanted_dirs = set(names)
    chosen = [p for p in lock.packages if p.name in wanted or p.dir in wanted_dirs]
    found = {p.name for p in chosen} | {p.dir for p in chosen}
    missing = sorted(n for key, n in wanted.items() if key not in found and n not in found)
    if missing:
        raise PullError(
            f"not in pylock.toml: {', '.join(missing)}; pull names locked packages (add them"
            " to pyproject.toml and run `monorepo lock` first)"
        )
    return chosen


class _Puller:
    def __init__(
        self,
        duni: Path,
        *,
        store: ContentStore,
        cache: CacheDir,
        fetch: Fetch,
        offline: bool,
        force: bool,
        patches: Mapping[str, tuple[Patch, ...]],
        extractor: ExtractorPool | None = None,
        downloads: Mapping[str, Future[Path]] | None = None,
    ) -> None:
        self.duni = duni
        self.extractor = extractor
        self.downloads = downloads if downloads is not None else {}
        self.state = duni / STATE_DIR
        self.store = store
        self.cache = cache
        self.fetch = fetch
        self.offline = offline
        self.force = force
        self.patches = patches
        self._checking = threading.Lock()

    def _paths(self, d: str) -> tuple[Path, Path, Path]:
        return self.duni / d, self.state / f"{d}.manifest", self.state / f"{d}.pending"

    def _scan(self, target: Path) -> tuple[bool, dict[str, Entry] | None]:
        """(exists, entries); entries None when the path is not a hashable directory.

        A stat cache (``duni/.monorepo/<dir>.stat``) spares re-reading files whose size,
        mtime, inode and ctime are unchanged, so a no-op pull reads no file content.
        """
        if not os.path.lexists(target):
            return False, None
        if target.is_symlink() or not target.is_dir():
            return True, None
        stamps = read_stamps(self._stamp_path(target.name))
        before = dict(stamps)
        try:
            entries = scan_tree(target, stamps=stamps)
        except TreeHashError:
            return True, None
        if stamps != before:
            write_stamps(self._stamp_path(target.name), stamps)
        return True, entries

    def _stamp_path(self, d: str) -> Path:
        return self.state / f"{d}.stat"

    def facts(
        self,
        d: str,
        tree: Path,
        tree_hash: str | None,
        entries: Mapping[str, Entry] | None = None,
    ) -> TreeFacts:
        """workspace.toml's facts of duni/<d> (kept in ``<d>.facts``: see ``speed.facts``)."""
        return tree_facts(self.state / f"{d}.facts", tree, tree_hash, entries)

    def sync(self, pkg: LockedPackage) -> _Outcome:
        d = pkg.dir
        target, manifest_path, pending_path = self._paths(d)
        patches = self.patches.get(d, ())
        identity = source_identity(pkg)
        key = input_key(pkg)
        # Checking a tree is Python under the GIL (a stat and a few objects per file,
        # the manifest parsed, entries hashed): threads doing it at once only fight over
        # the GIL (a no-op pull of the data set: 3.0 s with 8 threads, 1.8 s with 1), so
        # one checks at a time while the others download, extract and write.
        with self._checking:
            recorded = read_record(manifest_path)
            exists, current = self._scan(target)
            current_hash = hash_entries(current) if current is not None else None

            pending = read_record(pending_path)
            if pending is not None and current_hash == pending.hash:
                os.replace(pending_path, manifest_path)  # the killed run's tree is in place
                recorded = pending
            elif os.path.lexists(pending_path):
                pending_path.unlink()

            want = pkg.tree_hash
            # A tree is up to date only as what this very lock entry gave: the record
            # must name the entry's source (URL, size, sha256 or commit) and patches,
            # whatever the tree hash says.  Otherwise the source is fetched again
            # below and must match the lock, so an edited lock is never taken as
            # describing the tree that is there.
            if (
                current is not None
                and recorded is not None
                and recorded.key == key
                and current_hash == (want if want is not None else recorded.hash)
            ):
                if recorded.hash != current_hash or recorded.source != identity:
                    _write_atomic(manifest_path, record_text(current, identity, key))
                return _Outcome("unchanged", tree_hash=current_hash, entries=current)

            own = not exists or (recorded is not None and recorded.hash == current_hash)
            if exists and not own and not self.force and recorded is not None:
                if current is None:
                    detail = "it is no longer a directory pull can read"
                else:
                    detail = _describe_diff(recorded.entries, current)
                return _Outcome(
                    "refused", f"duni/{d} ({pkg.name} {pkg.version}) was edited: {detail}"
                )

        token = secrets.token_hex(6)
        staging = self.duni / f"{STAGING_PREFIX}{d}-new-{token}"
        download = self.downloads.get(d)
        aside = self.duni / f"{STAGING_PREFIX}{d}-old-{token}"
        stamps: dict[str, tuple[Stamp, str]] = {}
        try:
            try:
                entries = materialize_entries(
                    pkg,
                    staging,
                    patches=patches,
                    store=self.store,
                    cache=self.cache,
                    fetch=self.fetch,
                    offline=self.offline,
                    stamps=stamps,
                    extractor=self.extractor,
                    fetched=download.result if download is not None else None,
                    same_origin=True,
                )
            except HashMismatchError as error:
                if recorded is None or recorded.source == identity:
                    raise
                change = describe_source_change(recorded.source, identity)
                raise HashMismatchError(
                    f"duni/{d} was pulled from another source than pylock.toml now names for"
                    f" {pkg.name} {pkg.version} ({change}), so that source was downloaded"
                    f" again to check it, and it does not match: {error}"
                ) from error
            new_hash = hash_entries(entries)
            if want is not None and new_hash != want:
                raise PullError(
                    f"{pkg.name} {pkg.version}: the tree built from its locked source has tree"
                    f" hash {new_hash}, but pylock.toml records {want}: the upstream source or"
                    " an overlay changed since the lock was written; run `monorepo lock`"
                    " (and review the change) before pulling"
                )
            if current_hash == new_hash:
                _write_atomic(manifest_path, record_text(entries, identity, key))
                return _Outcome("unchanged", tree_hash=new_hash, entries=entries)
            if exists and not own and not self.force:
                return _Outcome(
                    "refused",
                    f"duni/{d} ({pkg.name} {pkg.version}) was not created by monorepo pull"
                    " (no record of it in duni/.monorepo) and differs from the locked source",
                )
            _write_atomic(pending_path, record_text(entries, identity, key))
            if exists:
                os.rename(target, aside)
            os.rename(staging, target)
            os.replace(pending_path, manifest_path)
            write_stamps(self._stamp_path(d), stamps)  # a rename keeps every stamp
            if exists:
                remove_tree(aside)
            return _Outcome("updated", tree_hash=new_hash, entries=entries, new=not exists)
        except OSError as error:
            what = f"{pkg.name} {pkg.version}: cannot replace duni/{d}"
            raise write_failed(error, self.duni, what) from error
        finally:
            if os.path.lexists(staging):
                remove_tree(staging)

    def remove_unlocked(self, locked: set[str], result: PullResult) -> list[str]:
        """Delete pull's own directories the lock no longer names; returns refusals."""
        refusals: list[str] = []
        for entry in sorted(self.duni.iterdir()):
            name = entry.name
            if name.startswith(".") or name in locked or name in GENERATED:
                continue
            if not entry.is_dir() or entry.is_symlink():
                continue
            _, manifest_path, pending_path = self._paths(name)
            _, current = self._scan(entry)
            current_hash = hash_entries(current) if current is not None else None
            records = [r for r in (read_record(manifest_path), read_record(pending_path)) if r]
            if not records:
                warning = (
                    f"duni/{name} is not in the lock and was not created by monorepo pull;"
                    " left alone (delete it if it is not needed)"
                )
                result.warnings.append(warning)
                continue
            own = any(r.hash == current_hash for r in records)
            if not own and not self.force:
                detail = (
                    _describe_diff(records[0].entries, current)
                    if current is not None
                    else "it is no longer a directory pull can read"
                )
                refusals.append(f"duni/{name} (no longer locked) was edited: {detail}")
                continue
            aside = self.duni / f"{STAGING_PREFIX}{name}-old-{secrets.token_hex(6)}"
            os.rename(entry, aside)
            manifest_path.unlink(missing_ok=True)
            pending_path.unlink(missing_ok=True)
            self._stamp_path(name).unlink(missing_ok=True)
            (self.state / f"{name}.facts").unlink(missing_ok=True)
            remove_tree(aside)
            result.removed.append(name)
        # Records of directories that are gone and no longer locked.
        for record in sorted(self.state.iterdir()):
            stem, dot, suffix = record.name.rpartition(".")
            if (
                dot
                and suffix in ("manifest", "pending", "stat", "facts")
                and stem not in locked
                and not os.path.lexists(self.duni / stem)
            ):
                record.unlink(missing_ok=True)
        return refusals


def pull(
    project: str | os.PathLike[str] = ".",
    *,
    packages: Sequence[str] = (),
    offline: bool = False,
    force: bool = False,
    jobs: int | None = None,
    frozen: bool = False,
    reporter: Reporter | None = None,
    fetch: Callable[[str], Iterator[bytes] | bytes] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> PullResult:
    """Make ``duni/`` match pylock.toml (see the module docstring for the rules).

    *packages* limits the pull to those locked names (nothing is removed then).
    *offline* uses only the download cache and cached git mirrors.  *force*
    overwrites local edits and directories pull did not create.  *jobs* is the
    number of packages extracted and hashed at once (default ``min(8, 2 * cpus)``);
    sixteen sources (or *jobs*, if more) download at once, ahead of them.  *frozen*
    pulls from the lock as it is; otherwise a lock that no longer fits pyproject.toml
    (the reasons ``lock --check`` gives) raises :class:`~monorepo.errors.StaleLockError`
    before anything is touched, like uv's ``--locked``.  *fetch* replaces the HTTP
    download (tests, embedding).  *cache_dir* is the cache directory (default:
    ``MONOREPO_CACHE_DIR``, else the user cache directory): its download store, git
    mirrors and overlay exports.
    Raises :class:`~monorepo.errors.MonorepoError` subclasses; packages that were
    brought up to date before an error stay so.
    """
    reporter = reporter if reporter is not None else NullReporter()
    cache = CacheDir.at(cache_dir)
    config = load_config(Path(project))
    lock = lockfile.read(config.root / lockfile.LOCK_NAME)
    if not frozen:
        from monorepo.locking.freshness import require_fresh  # loads the resolver's markers

        require_fresh(config, lock, command="pull", cache=cache, offline=offline)
    _check_dirs(lock)
    selected = _select(lock, packages)
    duni = config.duni
    state = state_dir(duni)
    spread_package_trees(duni)
    workers = jobs if jobs is not None else min(8, (os.cpu_count() or 1) * 2)
    if workers < 1:
        raise PullError(f"--jobs must be at least 1, not {workers}")
    result = PullResult(duni=duni)

    with exclusive(state / "lock", reporter) as lock_fd, contextlib.ExitStack() as stack:
        store = ContentStore(cache.store)
        clean_leftovers(duni, state, store)
        _write_atomic(state / ".gitignore", STATE_GITIGNORE)
        patches = locked_patches(selected, lock, base=config.root, cache=cache, offline=offline)
        if fetch is None:
            from monorepo.index.http import HttpClient

            client = stack.enter_context(HttpClient(offline=offline, reporter=reporter))
            fetch = client.stream
        # Extraction is mostly Python under the GIL: worker processes, one per core,
        # unpack the sdists while this process's threads fetch, hash and check trees.
        # Small ones too: this process's GIL is the scarce thing (a download's chunks,
        # every tree's walk), and a round trip to a worker costs about a millisecond
        # (web set, 53 sdists: 1.6 -> 1.3 s warm, 2.2 -> 1.9 s cold).
        extractor = stack.enter_context(
            ExtractorPool(
                min(workers, os.cpu_count() or 1),
                min_size=0,
                inherit_fds=() if lock_fd is None else (lock_fd,),
            )
        )
        downloads = download_ahead(
            selected,
            duni,
            stack,
            store=store,
            cache=cache,
            fetch=fetch,
            offline=offline,
            jobs=max(DOWNLOADS, workers),
        )
        if downloads:
            extractor.prestart()
        puller = _Puller(
            duni,
            store=store,
            cache=cache,
            fetch=fetch,
            offline=offline,
            force=force,
            patches=patches,
            extractor=extractor,
            downloads=downloads,
        )
        reporter.task("pull", f"Pulling {len(selected)} packages into {duni.name}/", len(selected))
        outcomes: dict[str, _Outcome] = {}
        facts: dict[str, TreeFacts] = {}
        errors: list[tuple[LockedPackage, Exception]] = []

        def run(pkg: LockedPackage) -> None:
            key = f"pull:{pkg.dir}"  # one per package, from the pull thread doing it
            reporter.task(key, f"{pkg.name} {pkg.version}: pulling into {duni.name}/{pkg.dir}")
            try:
                outcome = outcomes[pkg.dir] = puller.sync(pkg)
                if outcome.tree_hash is not None:
                    # Here rather than after the last package: a fresh tree's facts
                    # (pyproject.toml parsed, sources looked for) take a few ms each,
                    # done meanwhile other packages extract (data set: 0.15 s of tail).
                    facts[pkg.dir] = puller.facts(
                        pkg.dir, duni / pkg.dir, outcome.tree_hash, outcome.entries
                    )
            except Exception as exc:  # collected, re-raised below in lock order
                errors.append((pkg, exc))
            finally:
                reporter.done(key)
                reporter.advance("pull")

        ready = ready_in_order(largest_first(selected), downloads)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pull") as pool:
            list(pool.map(lambda _: run(ready()), selected))
        reporter.done("pull")

        refusals: list[str] = []
        for pkg in selected:
            outcome = outcomes.get(pkg.dir)
            if outcome is None:
                continue
            if outcome.status == "updated":
                result.updated.append(pkg.dir)
                if outcome.new:
                    result.added.append(pkg.dir)
                reporter.message("debug", f"updated duni/{pkg.dir} ({pkg.name} {pkg.version})")
            elif outcome.status == "unchanged":
                result.unchanged.append(pkg.dir)
            else:
                refusals.append(outcome.refusal)
        if errors:
            order = {p.dir: i for i, p in enumerate(selected)}
            errors.sort(key=lambda item: order[item[0].dir])
            for pkg, other in errors[1:]:
                reporter.message("warning", f"{pkg.name} {pkg.version}: {other}")
            pkg, first = errors[0]
            if isinstance(first, OSError):  # a record in duni/.monorepo could not be written
                raise write_failed(first, duni, f"{pkg.name} {pkg.version}") from first
            raise first
        if not packages:
            refusals += puller.remove_unlocked({p.dir for p in lock.packages}, result)
        if refusals:
            raise PullError(
                "duni/ has changes that pull would overwrite:\n  "
                + "\n  ".join(refusals)
                + "\nKeep a change as an overlay patch (then `monorepo lock`), move it out of"
                " duni/, or run `monorepo pull --force` to overwrite it."
            )
        synced = sync_crates(
            duni,
            selected,
            store=store,
            fetch=fetch,
            offline=offline,
            force=force,
            remove_unlocked=not packages,
            reporter=reporter,
            jobs=max(DOWNLOADS, workers),
        )
        result.crates_updated, result.crates_removed = synced.updated, synced.removed
        trees = {p.dir: duni / p.dir for p in lock.packages if (duni / p.dir).is_dir()}
        workspace = render(
            workspace_data(
                lock, trees, facts=lambda d, t: facts[d] if d in facts else puller.facts(d, t, None)
            )
        )
        try:
            _write_atomic(duni / "README.md", README)
            _write_atomic(duni / "workspace.toml", workspace)
        except OSError as error:
            raise write_failed(error, duni, "cannot write duni/workspace.toml") from error
    for warning in result.warnings:
        reporter.message("warning", warning)
    return result
