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

import hashlib
import json
import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from packaging.utils import canonicalize_name

from monorepo._core.fstree import temporary_directory
from monorepo._core.reporter import NullReporter, Reporter
from monorepo.errors import LockFileError, MonorepoError
from monorepo.project import lockfile
from monorepo.project.config import ProjectConfig, load_config
from monorepo.project.lockfile import (
    ArchiveSource,
    LockDocument,
    LockedPackage,
    SdistSource,
    Source,
    VcsSource,
)
from monorepo.sources.treehash import (
    Entry,
    TreeHashError,
    _manifest_and_hash,
    diff_entries,
    hash_entries,
    parse_manifest,
    scan_trees,
)

if TYPE_CHECKING:
    from monorepo.index.client import IndexClient
    from monorepo.index.http import HttpClient

__all__ = ["CHECKS", "SCHEMA", "CheckResult", "Item", "VerifyReport", "text_lines", "verify"]

SCHEMA = 1
"""Version of the ``--json`` document; bumped on any incompatible change."""
CHECKS = ("lock", "tree", "remote", "resolve")
"""Check names, in the order they run and are reported."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TREE_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_STATE_DIR = ".monorepo"
_RECORD_TAIL = re.compile(r"(?:# source (.*)\n)?# input ([0-9a-f]{64})\n")
_GENERATED = ("README.md", "workspace.toml")
_T = TypeVar("_T")
_R = TypeVar("_R")


# ----------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Item:
    """One finding: what it is about, a stable code, a sentence, and the paths involved.

    *subject* is a package name, or a file for findings about no package
    (``pylock.toml``, ``duni/workspace.toml``).  *paths* are POSIX paths relative
    to the project directory (``duni/lib/lib/__init__.py``).
    """

    subject: str
    code: str
    message: str
    paths: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "code": self.code,
            "message": self.message,
            "paths": list(self.paths),
        }


@dataclass
class CheckResult:
    """The outcome of one check: failed items make it fail, warnings do not."""

    name: str
    passed: bool = True
    items: list[Item] = field(default_factory=list)
    warnings: list[Item] = field(default_factory=list)
    skipped: bool = False
    """The check could not run (the lock is unreadable); then ``passed`` is False."""
    summary: str = ""
    """One line on what was checked (``"3 packages"``)."""

    def fail(self, item: Item) -> None:
        self.items.append(item)
        self.passed = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "skipped": self.skipped,
            "summary": self.summary,
            "items": [i.to_dict() for i in self.items],
            "warnings": [w.to_dict() for w in self.warnings],
        }


@dataclass
class VerifyReport:
    """Every check that ran, in :data:`CHECKS` order; ``passed`` when all of them passed."""

    project: Path
    checks: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def check(self, name: str) -> CheckResult:
        """The result of check *name* (KeyError when it did not run)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document (schema 1, see docs/audits.md)."""
        return {
            "schema": SCHEMA,
            "project": str(self.project),
            "passed": self.passed,
            "checks": [c.to_dict() for c in self.checks],
        }


# ---------------------------------------------------------------------------- helpers


class _Ctx:
    """What every check needs: the config, the lock (when readable), paths and options."""

    def __init__(self, config: ProjectConfig, reporter: Reporter, jobs: int) -> None:
        self.config = config
        self.root = config.root
        self.duni = config.duni
        self.reporter = reporter
        self.jobs = jobs
        self.lock: LockDocument | None = None
        self.records = True
        """Whether pull's records in duni/.monorepo may be read (not through a link)."""

    def rel(self, path: Path) -> str:
        """*path* relative to the project, POSIX form, for messages and ``paths``."""
        return Path(os.path.relpath(path, self.root)).as_posix()

    def dir_rel(self, pkg: LockedPackage, inner: str = "") -> str:
        base = self.rel(self.duni / pkg.dir)
        return f"{base}/{inner}" if inner else base


def _label(pkg: LockedPackage) -> str:
    return f"{pkg.name} {pkg.version}"


def _describe_source(source: Source) -> str:
    if isinstance(source, VcsSource):
        return f"{source.url}@{source.commit}"
    return source.url


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


def _parallel(jobs: int, function: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    if len(items) <= 1 or jobs <= 1:
        return [function(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(jobs, len(items)), thread_name_prefix="verify") as p:
        return list(p.map(function, items))


# ------------------------------------------------------------------------ check: lock


def _check_lock(ctx: _Ctx, result: CheckResult, index_url: str | None) -> None:
    path = ctx.root / lockfile.LOCK_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        result.fail(
            Item(
                "pylock.toml",
                "missing",
                "does not exist; run `monorepo lock` (and `monorepo pull`)",
                ("pylock.toml",),
            )
        )
        return
    except (OSError, UnicodeDecodeError) as error:
        result.fail(Item("pylock.toml", "invalid", f"cannot be read: {error}", ("pylock.toml",)))
        return
    try:
        doc = lockfile.parse(text, path=Path(lockfile.LOCK_NAME))
    except LockFileError as error:
        result.fail(Item("pylock.toml", "invalid", str(error), ("pylock.toml",)))
        return
    ctx.lock = doc
    result.summary = f"{len(doc.packages)} packages"
    build_deps = doc.inputs.get("build-dependencies", True) is not False
    seen_dirs: dict[str, LockedPackage] = {}
    for pkg in doc.packages:
        for problem in _incomplete(pkg, need_tree_hash=build_deps):
            result.fail(Item(str(pkg.name), "incomplete", f"{pkg.version}: {problem}"))
        if isinstance(pkg.source, SdistSource | ArchiveSource) and pkg.source.size is None:
            # PEP 751 makes the size optional and a PEP 503 HTML page gives none; the
            # sha256 is the identity, the size only caps a download early.
            result.warnings.append(
                Item(
                    str(pkg.name),
                    "no-size",
                    f"{pkg.version}: the lock records no size for {pkg.source.url} (the index"
                    " gave none), so a download of it is checked by sha256 alone",
                )
            )
        other = seen_dirs.setdefault(pkg.dir, pkg)
        if other is not pkg:
            result.fail(
                Item(
                    str(pkg.name),
                    "incomplete",
                    f"{pkg.version}: dir {pkg.dir!r} is also the dir of {_label(other)}",
                )
            )
    _check_fresh(ctx, doc, result, index_url)


def _incomplete(pkg: LockedPackage, *, need_tree_hash: bool) -> list[str]:
    """What the lock entry lacks that pull, build or verify relies on."""
    out: list[str] = []
    tool = pkg.tool
    source = pkg.source
    if isinstance(source, VcsSource):
        if not _COMMIT.match(source.commit):
            out.append(f"vcs commit-id {source.commit!r} is not a full commit id")
    elif not _SHA256.match(source.sha256):
        out.append(f"source hash {source.sha256!r} is not a sha256 hex digest")
    d = tool.get("dir")
    if not isinstance(d, str) or not d or d.startswith(".") or "/" in d or d in _GENERATED:
        out.append(f"[packages.tool.monorepo] dir {d!r} is missing or not a plain directory name")
    if tool.get("role") not in ("runtime", "build"):
        out.append(
            f"[packages.tool.monorepo] role {tool.get('role')!r} is not 'runtime' or 'build'"
        )
    elif tool.get("role") == "runtime" and not tool.get("targets"):
        out.append("[packages.tool.monorepo] targets is missing for a runtime package")
    tree_hash = tool.get("tree-hash")
    if tree_hash is None:
        if need_tree_hash:
            out.append("[packages.tool.monorepo] tree-hash is missing")
    elif not isinstance(tree_hash, str) or not _TREE_HASH.match(tree_hash):
        out.append(f"[packages.tool.monorepo] tree-hash {tree_hash!r} is not sha256:<hex>")
    if need_tree_hash:
        for key in ("build-backend", "build-requires"):
            if key not in tool:
                out.append(f"[packages.tool.monorepo] {key} is missing")
    patches = tool.get("patches", ())
    if patches and not isinstance(tool.get("overlay"), Mapping):
        out.append("[packages.tool.monorepo] has patches but no overlay table")
    for patch in patches if isinstance(patches, list | tuple) else ["?"]:
        if (
            not isinstance(patch, Mapping)
            or not patch.get("path")
            or not _SHA256.match(str(patch.get("sha256", "")))
        ):
            out.append(f"patch entry {patch!r} needs a path and a sha256")
    overlay = tool.get("overlay")
    if overlay is not None and (
        not isinstance(overlay, Mapping) or not overlay.get("name") or not overlay.get("commit")
    ):
        out.append(f"overlay table {overlay!r} needs a name and a commit")
    return out


def _check_fresh(ctx: _Ctx, doc: LockDocument, result: CheckResult, index_url: str | None) -> None:
    from monorepo.locking.freshness import canonical_inputs, stale_reasons
    from monorepo.overlays.rules import project_overlays
    from monorepo.project.config import resolve_index_url

    try:
        overlays = project_overlays(ctx.config, doc, upgrade=False)
        primary, _ = resolve_index_url(ctx.config, flag=index_url)
        inputs = canonical_inputs(
            ctx.config, [primary, *ctx.config.extra_index_urls], overlays.canonical()
        )
        reasons = stale_reasons(ctx.config, doc, inputs)
    except MonorepoError as error:
        result.fail(Item("pyproject.toml", "stale", f"cannot check freshness: {error}"))
        return
    for reason in reasons:
        subject = "overlays" if reason.startswith("the overlays") else "pyproject.toml"
        paths = () if subject == "overlays" else ("pyproject.toml",)
        result.fail(Item(subject, "stale", f"{reason}; run `monorepo lock`", paths))
    by_name = {o.name: o for o in overlays.overlays}
    for pkg in doc.packages:
        meta = pkg.tool.get("overlay")
        if not isinstance(meta, Mapping) or not pkg.tool.get("patches"):
            continue
        overlay = by_name.get(str(meta.get("name")))
        if overlay is None:
            result.fail(
                Item(
                    str(pkg.name),
                    "patch-changed",
                    f"{pkg.version}: its patches come from overlay {meta.get('name')!r}, which"
                    " the project no longer uses; run `monorepo lock`",
                )
            )
            continue
        for entry in pkg.tool["patches"]:
            if not isinstance(entry, Mapping):
                continue
            rel = str(entry.get("path", ""))
            file = overlay.root / rel
            shown = ctx.rel(file) if overlay.commit is None else f"{overlay.spec}:{rel}"
            try:
                actual: str | None = hashlib.sha256(file.read_bytes()).hexdigest()
            except OSError:
                actual = None
            if actual == entry.get("sha256"):
                continue
            what = "is missing" if actual is None else f"has sha256 {actual}"
            result.fail(
                Item(
                    str(pkg.name),
                    "patch-changed",
                    f"{pkg.version}: patch {shown} of overlay {overlay.name!r} {what}, the lock"
                    f" records {entry.get('sha256')}; review it and run `monorepo lock`",
                    (shown,),
                )
            )


# ------------------------------------------------------------------------ check: tree


@dataclass(frozen=True)
class _TreeOutcome:
    items: tuple[Item, ...] = ()
    warnings: tuple[Item, ...] = ()


def _check_tree(
    ctx: _Ctx, result: CheckResult, selected: Sequence[LockedPackage], *, everything: bool
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
    from monorepo.vendor.pull import state_problems

    for path, why in state_problems(duni):
        # Records read through a planted link would be someone else's claims.
        ctx.records = False
        shown = ctx.rel(path)
        result.fail(
            Item(
                ctx.rel(duni / _STATE_DIR),
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
    if not everything:
        return
    locked = {p.dir for p in lock.packages}
    for entry in sorted(duni.iterdir(), key=lambda p: p.name):
        name = entry.name
        if name in locked or name in _GENERATED or name == _STATE_DIR:
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
    ctx: _Ctx, pkg: LockedPackage, scanned: Mapping[str, Entry] | TreeHashError | None
) -> _TreeOutcome:
    """The tree check of one package, given its scanned entries (None: not a directory)."""
    from monorepo.sources.patches import Patch
    from monorepo.vendor.pull import _input_key, describe_source_change, source_identity

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
    actual_text, actual_hash = _manifest_and_hash(actual)
    record = (
        _read_manifest(
            ctx.duni / _STATE_DIR / f"{pkg.dir}.manifest", (actual, actual_text, actual_hash)
        )
        if ctx.records
        else None
    )
    patches = [
        Patch(path=str(p.get("path")), sha256=str(p.get("sha256", "")).lower(), text=b"")
        for p in pkg.tool.get("patches", ())
        if isinstance(p, Mapping)
    ]
    key = _input_key(pkg, patches)
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


@dataclass(frozen=True)
class _Manifest:
    """The manifest pull wrote beside duni/ for a tree: its entries, hash and lock entry key."""

    entries: Mapping[str, Entry]
    hash: str
    key: str | None
    source: Mapping[str, Any] | None = None
    """The source identity pull recorded (:func:`monorepo.puller.source_identity`)."""


def _read_manifest(path: Path, scanned: tuple[Mapping[str, Entry], str, str]) -> _Manifest | None:
    """The manifest at *path* as pull reads it, or None when absent or damaged.

    The same reading as pull's (``puller._read_record``), keeping the hash that
    :func:`parse_manifest` checked the entries against rather than hashing them again.
    *scanned* is the tree on disk: its entries, their :func:`manifest` text and tree
    hash.  When pull's manifest is that text followed by its ``# input`` line, parsing
    it could only give those entries back, so the parse (costly for a large tree) is
    skipped.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    actual, actual_text, actual_hash = scanned
    if text.startswith(actual_text):
        rest = text[len(actual_text) :]
        found = _RECORD_TAIL.fullmatch(rest)
        if found is not None:
            return _Manifest(actual, actual_hash, found[2], _source(found[1]))
        if not rest:
            return _Manifest(actual, actual_hash, None)
    try:
        entries = parse_manifest(text)
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
    return _Manifest(
        entries, recorded if recorded is not None else hash_entries(entries), key, source
    )


def _source(text: str | None) -> Mapping[str, Any] | None:
    """A record's ``# source`` JSON (None when absent or damaged)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _rebuild(ctx: _Ctx, pkg: LockedPackage) -> tuple[Mapping[str, Entry] | None, str]:
    """The entries of *pkg*'s tree rebuilt from the cached source in a scratch directory.

    Offline by design: the tree check needs no network.  Returns (None, reason) when
    the source is not in the cache or the overlay's patches cannot be read.
    """
    from monorepo.sources.fetch import materialize_entries
    from monorepo.sources.store import ContentStore
    from monorepo.vendor.pull import _patches_for

    assert ctx.lock is not None
    try:
        patches = _patches_for([pkg], ctx.lock, base=ctx.root, offline=True).get(pkg.dir, ())
        with temporary_directory(prefix="monorepo-verify-") as tmp:
            entries = materialize_entries(
                pkg, tmp / "tree", patches=patches, store=ContentStore(), offline=True
            )
    except MonorepoError as error:
        return None, (
            "there is no trustworthy pull manifest and the tree cannot be rebuilt offline"
            f" ({error})"
        )
    return entries, ""


def _check_generated(ctx: _Ctx, result: CheckResult) -> None:
    """duni/README.md and workspace.toml must be what pull writes for this lock and tree."""
    from monorepo.vendor.pull import README
    from monorepo.vendor.workspace import render, workspace_data

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


# ---------------------------------------------------------------------- check: remote


def _check_remote(ctx: _Ctx, result: CheckResult, selected: Sequence[LockedPackage]) -> None:
    from monorepo.index.client import IndexClient
    from monorepo.index.http import HttpClient

    archives = [p for p in selected if not isinstance(p.source, VcsSource)]
    gits = [p for p in selected if isinstance(p.source, VcsSource)]
    ctx.reporter.task("verify:remote", f"Downloading {len(selected)} sources", len(selected))
    with tempfile.TemporaryDirectory(prefix="monorepo-verify-") as tmp:
        indexes = sorted(
            {p.index for p in archives if isinstance(p.source, SdistSource) and p.index}
        )
        clients = {
            url: IndexClient(
                [url],
                cache_dir=Path(tmp) / f"http-{i}",
                metadata_cache_dir=Path(tmp) / f"meta-{i}",
                max_workers=4,
            )
            for i, url in enumerate(indexes)
        }
        try:
            with HttpClient(cache=None, reporter=ctx.reporter) as http:

                def archive(pkg: LockedPackage) -> tuple[list[Item], list[Item]]:
                    try:
                        return _remote_archive(pkg, http, clients)
                    finally:
                        ctx.reporter.advance("verify:remote")

                def git(pkg: LockedPackage) -> tuple[list[Item], list[Item]]:
                    try:
                        return _remote_git(pkg, Path(tmp))
                    finally:
                        ctx.reporter.advance("verify:remote")

                outcomes = _parallel(ctx.jobs, archive, archives)
                outcomes += [git(p) for p in gits]
        finally:
            for client in clients.values():
                client.close()
    ctx.reporter.done("verify:remote")
    for items, warnings in outcomes:
        for item in items:
            result.fail(item)
        result.warnings += warnings
    result.summary = (
        f"{len(archives)} download{'' if len(archives) == 1 else 's'},"
        f" {len(gits)} git commit{'' if len(gits) == 1 else 's'}"
    )


def _remote_archive(
    pkg: LockedPackage, http: HttpClient, clients: Mapping[str, IndexClient]
) -> tuple[list[Item], list[Item]]:
    source = pkg.source
    assert isinstance(source, SdistSource | ArchiveSource)
    subject = str(pkg.name)
    items: list[Item] = []
    warnings: list[Item] = []
    digest = hashlib.sha256()
    size = 0
    try:
        for chunk in http.stream(source.url):
            digest.update(chunk)
            size += len(chunk)
    except MonorepoError as error:
        items.append(Item(subject, "download", f"{pkg.version}: {error}"))
    else:
        actual = digest.hexdigest()
        if actual != source.sha256.lower() or (source.size is not None and size != source.size):
            items.append(
                Item(
                    subject,
                    "hash-mismatch",
                    f"{pkg.version}: {source.url} now has sha256 {actual} and size {size}, the"
                    f" lock records sha256 {source.sha256} and size {source.size}: the file was"
                    " changed where it is published (or the lock was edited); do not trust it",
                )
            )
    if isinstance(source, SdistSource) and pkg.index is not None and pkg.index in clients:
        try:
            files = clients[pkg.index].project_files(pkg.name)
        except MonorepoError as error:
            items.append(Item(subject, "index", f"{pkg.version}: cannot read the index: {error}"))
            return items, warnings
        listed = [f for f in files if f.filename == source.filename]
        if not listed:
            items.append(
                Item(
                    subject,
                    "index",
                    f"{pkg.version}: the index {pkg.index} no longer lists {source.filename}",
                )
            )
            return items, warnings
        dist = listed[0]
        if dist.sha256 is not None and dist.sha256.lower() != source.sha256.lower():
            items.append(
                Item(
                    subject,
                    "index-hash",
                    f"{pkg.version}: the index now gives sha256 {dist.sha256} for"
                    f" {source.filename}, the lock records {source.sha256}",
                )
            )
        if dist.yanked is not None:
            reason = f" ({dist.yanked})" if dist.yanked else ""
            warnings.append(
                Item(
                    subject,
                    "yanked",
                    f"{pkg.version}: {source.filename} is yanked on the index{reason}; consider"
                    " another version",
                )
            )
    return items, warnings


def _remote_git(pkg: LockedPackage, tmp: Path) -> tuple[list[Item], list[Item]]:
    import pygit2

    from monorepo.sources.git import limit_waits

    source = pkg.source
    assert isinstance(source, VcsSource)
    dest = tmp / f"git-{pkg.dir}"
    limit_waits()
    try:
        repo = pygit2.clone_repository(source.url, str(dest), bare=True)
    except pygit2.GitError as error:
        return [
            Item(str(pkg.name), "download", f"{pkg.version}: cannot clone {source.url}: {error}")
        ], []
    try:
        found = isinstance(repo[source.commit], pygit2.Commit)
    except (KeyError, ValueError):
        found = False
    if not found:
        return [
            Item(
                str(pkg.name),
                "hash-mismatch",
                f"{pkg.version}: {source.url} no longer has commit {source.commit}",
            )
        ], []
    return [], []


# --------------------------------------------------------------------- check: resolve


def _check_resolve(
    ctx: _Ctx, result: CheckResult, names: Sequence[str], index_url: str | None
) -> None:
    from monorepo.locking.locker import lock

    assert ctx.lock is not None
    doc = ctx.lock
    cutoff, how = _cutoff(doc)
    result.summary = (
        f"exclude-newer {cutoff.strftime('%Y-%m-%dT%H:%M:%SZ')} ({how})"
        if cutoff
        else "no exclude-newer"
    )
    if cutoff is None:
        result.warnings.append(
            Item(
                "pylock.toml",
                "no-cutoff",
                "neither the lock's exclude-newer nor an upload time is known; releases"
                " published since the lock may show up as differences",
            )
        )
    try:
        again = lock(
            ctx.root,
            upgrade_packages=sorted({str(p.name) for p in doc.packages}),
            index_url=index_url,
            reporter=ctx.reporter,
            write=False,
            exclude_newer=cutoff,
        )
    except MonorepoError as error:
        result.fail(Item("pylock.toml", "resolve", f"resolving again failed: {error}"))
        return
    wanted = {canonicalize_name(n) for n in names}
    for line in _differences(doc, again.document):
        if wanted and canonicalize_name(line.subject) not in wanted:
            continue
        result.fail(line)


def _cutoff(doc: LockDocument) -> tuple[datetime | None, str]:
    value = doc.inputs.get("exclude-newer")
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC), "the lock's"
    if isinstance(value, str) and value:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)), "the lock's"
    times = [
        p.source.upload_time
        for p in doc.packages
        if isinstance(p.source, SdistSource) and p.source.upload_time is not None
    ]
    if not times:
        return None, ""
    latest = max(t if t.tzinfo else t.replace(tzinfo=UTC) for t in times)
    return latest, "the newest upload time in the lock"


def _source_id(source: Source) -> str:
    if isinstance(source, VcsSource):
        return f"git {source.url} {source.commit}"
    return f"{source.url} sha256 {source.sha256}"


def _differences(old: LockDocument, new: LockDocument) -> list[Item]:
    """``name: locked -> new`` for every package whose versions or sources differ."""

    def table(doc: LockDocument) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for p in doc.packages:
            out.setdefault(str(p.name), {})[str(p.version)] = _source_id(p.source)
        return out

    before, after = table(old), table(new)
    items: list[Item] = []
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name, {}), after.get(name, {})
        if set(a) != set(b):
            old_v = ", ".join(sorted(a)) or "(absent)"
            new_v = ", ".join(sorted(b)) or "(absent)"
            items.append(
                Item(
                    name,
                    "version",
                    f"{old_v} -> {new_v} (resolving again from the lock's inputs gives another"
                    " version)",
                )
            )
            continue
        for version in sorted(a):
            if a[version] != b[version]:
                items.append(
                    Item(
                        name,
                        "source",
                        f"{version}: source {a[version]} -> {b[version]}",
                    )
                )
    return items


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
) -> VerifyReport:
    """Audit *project*'s lock and ``duni/`` (see the module docstring for the checks).

    *packages* limits the tree, remote and resolve checks to those locked names or
    dirs (then unknown directories and workspace.toml are not checked).  *remote*
    and *resolve* add the network checks.  Nothing in the project is written.
    Raises :class:`~monorepo.errors.MonorepoError` only for input errors (no
    pyproject.toml, a package name that is not locked); everything else is a
    failed check in the report.
    """
    reporter = reporter if reporter is not None else NullReporter()
    config = load_config(Path(project))
    workers = jobs if jobs is not None else min(8, (os.cpu_count() or 1) * 2)
    if workers < 1:
        raise LockFileError(f"--jobs must be at least 1, not {workers}")
    ctx = _Ctx(config, reporter, workers)
    names = [
        n
        for n in CHECKS
        if n in ("lock", "tree") or (n == "remote" and remote) or (n == "resolve" and resolve)
    ]
    results = {n: CheckResult(n) for n in names}
    _check_lock(ctx, results["lock"], index_url)
    if ctx.lock is None:
        for name in names[1:]:
            results[name].passed = False
            results[name].skipped = True
            results[name].items.append(
                Item("pylock.toml", "skipped", "not run: pylock.toml is missing or invalid")
            )
        return VerifyReport(config.root, [results[n] for n in names])
    selected = _select(ctx.lock, packages)
    _check_tree(ctx, results["tree"], selected, everything=not packages)
    if remote:
        _check_remote(ctx, results["remote"], selected)
    if resolve:
        _check_resolve(ctx, results["resolve"], packages, index_url)
    return VerifyReport(config.root, [results[n] for n in names])


def text_lines(report: VerifyReport) -> list[str]:
    """The readable summary ``monorepo verify`` prints: a line per check, per failure, per warning.

    Failures read ``FAIL <check>: <subject>: <message>`` and warnings ``warning <check>: ...``,
    so ``grep ^FAIL`` lists exactly what failed, each line naming the package or file.
    """
    out: list[str] = []
    for check in report.checks:
        state = "skipped" if check.skipped else "passed" if check.passed else "FAILED"
        out.append(f"{check.name}: {state}" + (f" ({check.summary})" if check.summary else ""))
        out += [f"FAIL {check.name}: {item}" for item in check.items if not check.skipped]
        out += [f"warning {check.name}: {item}" for item in check.warnings]
    problems = sum(len(c.items) for c in report.checks if not c.skipped)
    if report.passed:
        out.append("verify: all checks passed")
    else:
        out.append(f"verify: FAILED ({problems} problem{'s' if problems != 1 else ''})")
    return out
