"""``monorepo lock``: from a project's configuration to its pylock.toml.

This module is the edge where configuration, the index client and the lock file meet:
it reads the project and the existing lock, starts the index client (:func:`open_index`),
decides whether the last resolution can be reused (:mod:`monorepo.locking.speed.reuse`),
has :mod:`monorepo.locking.document` resolve and merge otherwise, and writes the file
atomically.  The cache directory is decided here, once, and passed down.

It is light on purpose.  The first index pages are asked for before the resolver,
finder, lock format and overlays are imported (:func:`lock` imports them after its
prefetch): those imports are a fifth of a second, which the index workers spend
downloading and parsing pages instead of waiting for their first request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from monorepo._core.paths import CacheDir
from monorepo._core.reporter import NullReporter, Reporter
from monorepo._core.speed import workerproc
from monorepo._core.speed.switches import enabled
from monorepo._core.version import VERSION as __version__
from monorepo.errors import LockFileError
from monorepo.locking.speed import reuse, warmstart
from monorepo.locking.speed.rendering import rendered
from monorepo.project.config import ProjectConfig, load_config
from monorepo.project.indexurl import resolve_index_urls

if TYPE_CHECKING:
    from monorepo.index.client import IndexClient
    from monorepo.overlays.rules import OverlaySet
    from monorepo.project.lockfile import LockDocument, LockedPackage


@dataclass(frozen=True)
class LockResult:
    """What :func:`lock` did."""

    path: Path
    document: LockDocument
    changed: bool
    #: name -> (old version or None, new version or None) for what changed
    changes: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)


def read_existing(path: Path, reporter: Reporter) -> tuple[str, LockDocument] | None:
    """The lock on disk (text and document); None when absent or unreadable (with a warning)."""
    from monorepo.project.lockfile import parse

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return text, parse(text, path=path)
    except LockFileError as exc:
        reporter.message("warning", f"ignoring the existing lock: {exc}")
        return None


def lock(
    project: Path | str = ".",
    *,
    upgrade: bool = False,
    upgrade_packages: Sequence[str] = (),
    offline: bool = False,
    index_url: str | None = None,
    reporter: Reporter | None = None,
    write: bool = True,
    exclude_newer: datetime | None = None,
    cache_dir: Path | str | None = None,
    prereleases: str | None = None,
    extra_index_urls: Sequence[str] = (),
) -> LockResult:
    """Resolve the project at *project* for all its targets and write pylock.toml.

    Runtime versions of an existing lock are preferred (minimal updates); *upgrade*
    releases all of them, *upgrade_packages* only the named ones.  The build closure is
    chosen afresh from the runtime set (:mod:`monorepo.locking.buildclosure`).  With
    ``write=False`` nothing is written (``verify --resolve`` uses that).
    *exclude_newer* replaces the configured cut-off for this run (``verify
    --resolve`` pins a lock without one to its newest upload time), *prereleases*
    (``if-necessary``, ``allow``, ``disallow``) the configured policy, and
    *extra_index_urls* are read after the configured indexes: a lock made with them
    records them, so ``check`` finds it stale unless given the same.  *cache_dir* is the
    cache directory (default: ``MONOREPO_CACHE_DIR``, else the user cache directory).
    On any failure the existing lock is left untouched.
    """
    reporter = reporter or NullReporter()
    cache = CacheDir.at(cache_dir)
    config = overridden(
        load_config(Path(project)),
        exclude_newer=exclude_newer,
        prereleases=prereleases,
        extra_index_urls=extra_index_urls,
    )
    choice = resolve_index_urls(config, flag=index_url)
    for note in choice.skipped:
        reporter.message("warning", note)
    index_urls = choice.urls
    with open_index(index_urls, cache=cache, offline=offline, reporter=reporter) as client:
        # Every page this lock will probably read, asked for at once, before the heavy
        # half of locking is even imported (see locking.speed.warmstart and this module's doc).
        client.prefetch(_likely_pages(config, cache))
        from monorepo.overlays.loading import project_overlays
        from monorepo.project.lockfile import LOCK_NAME, write_atomic

        path = config.root / LOCK_NAME
        on_disk = read_existing(path, reporter)
        existing = on_disk[1] if on_disk is not None else None
        if existing is not None:
            client.prefetch(p.name for p in existing.packages)
        # Only runtime versions are preferred: the build closure is a function of the
        # runtime set and the index (locking.buildclosure), never of the previous lock.
        preferred: dict[NormalizedName, Version] = {}
        if existing is not None and not upgrade:
            released = {canonicalize_name(n) for n in upgrade_packages}
            for p in existing.packages:
                if p.name not in released and p.role == "runtime":
                    preferred.setdefault(p.name, p.version)
        overlays = project_overlays(config, existing, upgrade=upgrade, cache=cache, offline=offline)
        # Audits (write=False) always resolve; git sources can move without any page changing.
        key = None
        if write and not config.sources and enabled("lock-reuse"):
            key = _memo_key(config, index_urls, overlays, preferred)
        reused = _reuse(key, client, path, reporter, cache) if key is not None else None
        if reused is not None:
            text, document = reused
        else:
            # Imported only now: a relock whose pages are all unchanged never needs it.
            from monorepo.locking.document import resolve_document

            document = resolve_document(
                config, client, index_urls, overlays, preferred, offline, reporter, cache
            )
            text = rendered(document, on_disk, root=cache.rendered)
            if key is not None and all(_from_index(p) for p in document.packages):
                reuse.store(key, reuse.Memo(pages=client.pages_read(), text=text), root=cache.locks)
    changed = write_atomic(path, text) if write else False
    if write and enabled("warm-start"):
        warmstart.remember(config.root, (p.name for p in document.packages), cache=cache.warmstart)
    return LockResult(
        path=path, document=document, changed=changed, changes=diff_versions(existing, document)
    )


def overridden(
    config: ProjectConfig,
    *,
    exclude_newer: datetime | None = None,
    prereleases: str | None = None,
    extra_index_urls: Sequence[str] = (),
) -> ProjectConfig:
    """*config* with the settings a caller gave for one run (the command line's flags)."""
    from monorepo.errors import UsageError
    from monorepo.project.indexurl import normalize_index_url

    if exclude_newer is not None:
        if exclude_newer.tzinfo is None:
            raise UsageError(
                f"exclude_newer={exclude_newer.isoformat()} has no time zone; give an aware"
                " datetime (UTC is what pyproject.toml's dates mean)"
            )
        config = dataclasses.replace(config, exclude_newer=exclude_newer)
    if prereleases is not None:
        if prereleases not in ("if-necessary", "allow", "disallow"):
            raise UsageError(
                f"prereleases={prereleases!r}: use 'if-necessary', 'allow' or 'disallow'"
            )
        config = dataclasses.replace(config, prereleases=prereleases)  # type: ignore[arg-type]
    if extra_index_urls:
        extra = tuple(
            normalize_index_url(url, base=config.root, where="--extra-index-url")
            for url in extra_index_urls
        )
        urls = tuple(dict.fromkeys((*config.extra_index_urls, *extra)))
        config = dataclasses.replace(config, extra_index_urls=urls)
    return config


def open_index(
    index_urls: Sequence[str], *, cache: CacheDir, offline: bool, reporter: Reporter
) -> IndexClient:
    """The index client of a lock, its collaborators made from the one cache directory.

    Other cores read and parse pages while this process resolves
    (:mod:`monorepo.index.speed.worker`); each speed-only cache can be switched off
    (:mod:`monorepo._core.speed.switches`) without changing the result.
    """
    from monorepo.index.backend import BuildBackend
    from monorepo.index.client import IndexClient
    from monorepo.index.http import HttpClient
    from monorepo.index.httpcache import HttpCache
    from monorepo.index.speed.metadatacache import MetadataCache
    from monorepo.index.speed.pagecache import PageCache

    return IndexClient(
        index_urls,
        http=HttpClient(cache=HttpCache(cache.http), offline=offline, reporter=reporter),
        page_cache=PageCache(cache.pages) if enabled("page-cache") else None,
        metadata_cache=MetadataCache(cache.metadata) if enabled("metadata-cache") else None,
        backend=BuildBackend(cache.build_envs, tuple(index_urls), offline, reporter),
        workers=workerproc.index_workers(),
        reporter=reporter,
    )


def _memo_key(
    config: ProjectConfig,
    index_urls: Sequence[str],
    overlays: OverlaySet,
    preferred: Mapping[NormalizedName, Version],
) -> str:
    """Everything besides the index pages that decides this lock (see ``locking.speed.reuse``)."""
    from monorepo.locking.freshness import canonical_inputs
    from monorepo.project.lockfile import RENDERER
    from monorepo.sources.crates import configured_crate_index

    return reuse.memo_key(
        {
            "monorepo": __version__,
            "renderer": RENDERER,
            "root": str(config.root),
            "inputs": canonical_inputs(config, index_urls, overlays.canonical()),
            "exclude-newer": config.exclude_newer.isoformat() if config.exclude_newer else None,
            "preferred": sorted((str(n), str(v)) for n, v in preferred.items()),
            "build-host": _build_host() if config.build_dependencies else None,
            # the crates' download URLs come from it (and it may come from the environment)
            "crate-index": configured_crate_index(config.crate_index),
        }
    )


def _build_host() -> dict[str, str]:
    from monorepo.locking.buildclosure import build_host

    return build_host().canonical()


def _from_index(pkg: LockedPackage) -> bool:
    """Whether all *pkg* is comes from index pages (no git, no direct or overlay URL)."""
    from monorepo.project.lockfile import SdistSource

    return bool(pkg.index) and type(pkg.source) is SdistSource


def _reuse(
    key: str, client: IndexClient, path: Path, reporter: Reporter, cache: CacheDir
) -> tuple[str, LockDocument] | None:
    """The remembered lock for *key* when every page it read is unchanged, else None."""
    from monorepo.project.lockfile import parse

    memo = reuse.load(key, root=cache.locks)
    if memo is None or not client.pages_unchanged(memo.pages):
        return None
    try:
        document = parse(memo.text, path=path)
    except LockFileError:
        return None
    reporter.message(
        "debug",
        f"the inputs and the {len(memo.pages)} index pages of the last lock are unchanged:"
        " its resolution is reused",
    )
    return memo.text, document


def _likely_pages(config: ProjectConfig, cache: CacheDir) -> list[str]:
    """The project pages a lock of *config* will probably read, most certain first.

    The root requirements that apply to some target, then the packages the last lock of
    this project wrote (``warmstart``): a hint only.  :func:`lock` adds the packages of
    the existing lock once it has read it.
    """
    envs = [dict(t.marker_environment(), extra="") for t in config.targets]
    requirements = [
        *config.dependencies,
        *(r for reqs in config.optional_dependencies.values() for r in reqs),
        *(r for reqs in config.dependency_groups.values() for r in reqs),
    ]
    names: list[str] = [
        canonicalize_name(r.name)
        for r in requirements
        if r.marker is None or any(r.marker.evaluate(e) for e in envs)
    ]
    if enabled("warm-start"):
        names += warmstart.remembered(config.root, cache=cache.warmstart)
    return list(dict.fromkeys(names))


def diff_versions(
    old: LockDocument | None, new: LockDocument
) -> dict[str, tuple[str | None, str | None]]:
    """package -> (old versions, new versions) for every package whose versions differ."""

    def versions(doc: LockDocument | None) -> dict[str, str]:
        out: dict[str, list[str]] = {}
        for p in doc.packages if doc else ():
            out.setdefault(p.name, []).append(str(p.version))
        return {k: ", ".join(sorted(v)) for k, v in out.items()}

    before, after = versions(old), versions(new)
    return {
        name: (before.get(name), after.get(name))
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    }


@dataclass(frozen=True)
class CheckResult:
    """What :func:`check` found: ``fresh`` or the reasons the lock is stale."""

    path: Path
    fresh: bool
    reasons: tuple[str, ...]


def check(
    project: Path | str = ".",
    *,
    index_url: str | None = None,
    cache_dir: Path | str | None = None,
    exclude_newer: datetime | None = None,
    prereleases: str | None = None,
    extra_index_urls: Sequence[str] = (),
) -> CheckResult:
    """Whether pylock.toml is fresh for the project, without touching the network.

    The same semantic rule as uv's ``lock --check`` (see :mod:`monorepo.locking.freshness`).
    A missing or unreadable lock is stale, not an error.  *cache_dir*: see :func:`lock`
    (git overlays are read from their cached mirrors).  *exclude_newer*, *prereleases*
    and *extra_index_urls*: the settings a lock was made with, as :func:`lock` takes them.
    """
    from monorepo.locking.freshness import current_reasons
    from monorepo.project.lockfile import LOCK_NAME, parse

    config = overridden(
        load_config(Path(project)),
        exclude_newer=exclude_newer,
        prereleases=prereleases,
        extra_index_urls=extra_index_urls,
    )
    resolve_index_urls(config, flag=index_url)  # no usable index: an error, lock or not
    path = config.root / LOCK_NAME
    try:
        existing = parse(path.read_text(encoding="utf-8"), path=path)
    except FileNotFoundError:
        return CheckResult(path, False, (f"{path} does not exist",))
    except LockFileError as exc:
        return CheckResult(path, False, (str(exc),))
    reasons = current_reasons(config, existing, index_url=index_url, cache=CacheDir.at(cache_dir))
    return CheckResult(path, not reasons, tuple(reasons))
