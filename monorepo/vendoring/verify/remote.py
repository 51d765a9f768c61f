"""Check ``remote`` (opt-in): every source, downloaded again, still matches the lock."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from monorepo.errors import MonorepoError
from monorepo.project.lockfile import (
    ArchiveSource,
    LockedPackage,
    SdistSource,
    VcsSource,
)
from monorepo.sources.crates import Crate
from monorepo.vendoring.crates import locked_crates
from monorepo.vendoring.verify.context import Context, parallel
from monorepo.vendoring.verify.report import CheckResult, Item

if TYPE_CHECKING:
    from monorepo.index.client import IndexClient
    from monorepo.index.http import HttpClient


# ---------------------------------------------------------------------- check: remote


def check_remote(ctx: Context, result: CheckResult, selected: Sequence[LockedPackage]) -> None:
    from monorepo.index.client import IndexClient
    from monorepo.index.http import HttpClient
    from monorepo.index.httpcache import HttpCache

    archives = [p for p in selected if not isinstance(p.source, VcsSource)]
    gits = [p for p in selected if isinstance(p.source, VcsSource)]
    try:
        crates = list(locked_crates(selected).values())
    except MonorepoError as error:
        result.fail(Item("pylock.toml", "crates", str(error), ("pylock.toml",)))
        crates = []
    ctx.reporter.task("verify:remote", f"Downloading {len(selected)} sources", len(selected))
    with tempfile.TemporaryDirectory(prefix="monorepo-verify-") as tmp:
        indexes = sorted(
            {p.index for p in archives if isinstance(p.source, SdistSource) and p.index}
        )
        clients = {
            # Fresh, empty caches: every answer comes from the index as it is now.
            url: IndexClient(
                [url],
                http=HttpClient(cache=HttpCache(Path(tmp) / f"http-{i}"), max_connections=4),
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

                outcomes = parallel(ctx.jobs, archive, archives)
                outcomes += [git(p) for p in gits]
                outcomes += parallel(
                    ctx.jobs, lambda item: _remote_crate(item[0], item[1], http), crates
                )
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
        + (f", {len(crates)} crate{'' if len(crates) == 1 else 's'}" if crates else "")
    )


def _remote_crate(
    crate: Crate, users: Sequence[str], http: HttpClient
) -> tuple[list[Item], list[Item]]:
    """A locked crate downloaded again from its URL: its sha256 must be its checksum."""
    subject = f"crate {crate.name}"
    used = f"{crate.version} (used by {', '.join(users)})"
    digest = hashlib.sha256()
    try:
        for chunk in http.stream(crate.url):
            digest.update(chunk)
    except MonorepoError as error:
        return [Item(subject, "download", f"{used}: {error}")], []
    if digest.hexdigest() != crate.checksum:
        return [
            Item(
                subject,
                "hash-mismatch",
                f"{used}: {crate.url} now has sha256 {digest.hexdigest()}, the Cargo.lock"
                f" and the lock record {crate.checksum}: do not trust it",
            )
        ], []
    return [], []


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
