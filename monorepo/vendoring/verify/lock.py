"""Check ``lock``: pylock.toml is well formed, complete and fresh; its patches unchanged."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

from monorepo.errors import LockFileError, MonorepoError
from monorepo.project import lockfile
from monorepo.project.lockfile import (
    ArchiveSource,
    LockDocument,
    LockedPackage,
    SdistSource,
    VcsSource,
)
from monorepo.vendoring.verify.context import Context, label
from monorepo.vendoring.verify.report import CheckResult, Item
from monorepo.vendoring.workspace import GENERATED

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TREE_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")


# ------------------------------------------------------------------------ check: lock


def check_lock(ctx: Context, result: CheckResult, index_url: str | None) -> None:
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
                    f"{pkg.version}: dir {pkg.dir!r} is also the dir of {label(other)}",
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
    if not isinstance(d, str) or not d or d.startswith(".") or "/" in d or d in GENERATED:
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


def _check_fresh(
    ctx: Context, doc: LockDocument, result: CheckResult, index_url: str | None
) -> None:
    from monorepo.locking.freshness import canonical_inputs, stale_reasons
    from monorepo.overlays.loading import project_overlays
    from monorepo.project.indexurl import resolve_index_urls

    try:
        overlays = project_overlays(ctx.config, doc, upgrade=False, cache=ctx.cache)
        urls = resolve_index_urls(ctx.config, flag=index_url).urls
        inputs = canonical_inputs(ctx.config, urls, overlays.canonical())
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
