"""Check ``resolve`` (opt-in): resolving again from the lock's inputs gives the same lock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from packaging.utils import canonicalize_name

from monorepo.errors import MonorepoError
from monorepo.project.lockfile import (
    LockDocument,
    SdistSource,
    Source,
    VcsSource,
)
from monorepo.vendoring.verify.context import Context
from monorepo.vendoring.verify.report import CheckResult, Item

# --------------------------------------------------------------------- check: resolve


def check_resolve(
    ctx: Context, result: CheckResult, names: Sequence[str], index_url: str | None
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
            cache_dir=ctx.cache.root,
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
