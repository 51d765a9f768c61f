"""``monorepo verify --published``: our wheels compared with the index's, file by file.

An index serves wheels that nobody checks against the sdist beside them: PEP 740
attestations say who uploaded a file, not what it was built from.  For each runtime
package of a target whose locked version has a wheel on the index for that target,
the index's wheel is downloaded (checked against the page's sha256, opened with the
extractor's limits) and compared with the wheel ``build`` made from the vendored
sdist:

* a **pure** wheel is expected to hold the same code: any difference outside
  ``.dist-info`` fails, and a differing ``.py`` file is flagged loudly -- the index's
  wheel does not come from its sdist (or the sdist was patched by an overlay, which
  the item says);
* a **native** wheel is compiled by another toolchain, so its binaries differ by
  nature: their sizes and the dynamic symbols added or missing are reported as
  warnings, while a differing ``.py`` file still fails;
* ``.dist-info`` differences (RECORD, the WHEEL generator, our SBOM) are warnings.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from packaging.utils import canonicalize_name, parse_wheel_filename

from monorepo._core.reporter import NullReporter, Reporter
from monorepo.building.buildenv import file_sha256
from monorepo.building.builder import BUILD_DIR
from monorepo.building.record import RECORD_NAME, BuildRecord, read_build_record
from monorepo.building.reproducible import WheelContents, read_wheel
from monorepo.building.targets import choose_target
from monorepo.building.wheeldiff import FileDiff, compare_wheels
from monorepo.errors import BuildError, MonorepoError
from monorepo.project import lockfile
from monorepo.project.config import load_config
from monorepo.project.indexurl import resolve_index_url
from monorepo.project.lockfile import LockedPackage
from monorepo.resolve.finder import target_tags
from monorepo.vendoring.verify.report import CheckResult, Item

__all__ = ["PublishedComparison", "PublishedReport", "verify_published"]


@dataclass(frozen=True)
class PublishedComparison:
    """One package: ``same`` (code identical), ``differs`` (a pure wheel's code, or any
    ``.py``), ``native`` (binaries differ, as expected), ``no-wheel`` (none on the index
    for the target), ``not-built`` (we have no wheel of it), ``error``."""

    name: str
    version: str
    status: str
    ours: str = ""
    theirs: str = ""
    pure: bool = False
    files: tuple[FileDiff, ...] = ()
    patched: bool = False
    reason: str = ""

    @property
    def code(self) -> tuple[FileDiff, ...]:
        return tuple(f for f in self.files if f.area == "code")

    @property
    def python_files(self) -> tuple[FileDiff, ...]:
        return tuple(f for f in self.code if f.path.endswith(".py"))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "pure": self.pure,
        }
        for key, value in (("ours", self.ours), ("theirs", self.theirs), ("reason", self.reason)):
            if value:
                data[key] = value
        if self.patched:
            data["patched"] = True
        if self.files:
            data["files"] = [f.to_dict() for f in self.files]
        return data


@dataclass
class PublishedReport:
    target: str
    packages: list[PublishedComparison] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not any(p.status in ("differs", "error") for p in self.packages)

    def status(self, name: str) -> PublishedComparison:
        for p in self.packages:
            if p.name == canonicalize_name(name):
                return p
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "passed": self.passed,
            "packages": [p.to_dict() for p in self.packages],
        }

    def check(self) -> CheckResult:
        """The report as ``verify``'s ``published`` check."""
        result = CheckResult("published")
        compared = [p for p in self.packages if p.status in ("same", "differs", "native")]
        same = sum(p.status == "same" for p in compared)
        result.summary = (
            f"{len(compared)} wheels compared with the index's, {same} with the same code"
        )
        for p in self.packages:
            label = f"{p.version}: {p.ours} vs the index's {p.theirs}"
            if p.status == "error":
                result.fail(Item(p.name, "error", f"{p.version}: {p.reason}"))
            elif p.status == "differs":
                why = (
                    " (an overlay patches this package, which explains differing code)"
                    if p.patched
                    else ": the index's wheel does not come from its sdist"
                )
                if p.python_files:
                    names = ", ".join(f.path for f in p.python_files[:10])
                    result.fail(
                        Item(
                            p.name,
                            "python-differs",
                            f"!! {label}: Python code differs in {names}{why}",
                        )
                    )
                else:
                    result.fail(Item(p.name, "code-differs", f"{label}: code differs{why}"))
                for f in p.code:
                    text = f.summary() + "".join(f"\n    {line}" for line in f.detail)
                    result.fail(Item(p.name, "file-differs", text, (f.path,)))
            elif p.status == "native":
                for f in p.code:
                    result.warnings.append(Item(p.name, "native-differs", f.summary(), (f.path,)))
            if p.status in ("same", "differs", "native"):
                for f in p.files:
                    if f.area == "metadata":
                        result.warnings.append(
                            Item(p.name, "metadata-differs", f.summary(), (f.path,))
                        )
        return result


def _pure(filename: str) -> bool:
    try:
        tags = parse_wheel_filename(filename)[3]
    except ValueError:
        return False
    return all(t.abi == "none" and t.platform == "any" for t in tags)


def _renames(ours: WheelContents, theirs: WheelContents) -> dict[str, str]:
    """Their ``.dist-info``/``.data`` paths spelled as ours (``PyYAML-6.0.2`` vs ``pyyaml-6.0.2``)."""
    mine, other = ours.dist_info, theirs.dist_info
    out: dict[str, str] = {}
    if mine == other:
        return out
    for path in theirs.files:
        first, _, rest = path.partition("/")
        if first == other:
            out[path] = f"{mine}/{rest}"
        elif first == other.removesuffix(".dist-info") + ".data":
            out[path] = f"{mine.removesuffix('.dist-info')}.data/{rest}"
    return out


def verify_published(
    project: str | os.PathLike[str] = ".",
    *,
    target: str | None = None,
    packages: Sequence[str] = (),
    index_url: str | None = None,
    reporter: Reporter | None = None,
) -> PublishedReport:
    """Compare each runtime package's wheel in the build record of *target* with the
    index's wheel of the same version for that target (see the module docstring)."""
    from monorepo.index.client import IndexClient
    from monorepo.index.http import HttpClient
    from monorepo.index.httpcache import HttpCache

    reporter = reporter if reporter is not None else NullReporter()
    config = load_config(Path(project))
    chosen = choose_target(config, target)
    lock = lockfile.read(config.root / lockfile.LOCK_NAME)
    record_path = config.root / BUILD_DIR / chosen.name / RECORD_NAME
    record = read_build_record(record_path)
    selected = [
        p
        for p in lock.packages
        if p.role == "runtime" and (not p.targets or chosen.name in p.targets)
    ]
    if packages:
        wanted = {canonicalize_name(n) for n in packages}
        unknown = wanted - {p.name for p in selected}
        if unknown:
            raise BuildError(
                f"not a runtime package of target {chosen.name}: {', '.join(sorted(unknown))}"
            )
        selected = [p for p in selected if p.name in wanted]
    primary = resolve_index_url(config, flag=index_url)[0]
    tags = target_tags(chosen)
    report = PublishedReport(chosen.name)
    clients: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="monorepo-published-") as tmp:
        try:
            for i, p in enumerate(sorted(selected, key=lambda x: x.name)):
                url = index_url or p.index or primary
                if url not in clients:
                    clients[url] = IndexClient(
                        [url],
                        http=HttpClient(
                            cache=HttpCache(Path(tmp) / f"http-{i}"), reporter=reporter
                        ),
                        max_workers=4,
                    )
                report.packages.append(
                    _compare_one(p, record, record_path.parent / "wheels", clients[url], tags)
                )
        finally:
            for client in clients.values():
                client.close()
    return report


def _compare_one(
    p: LockedPackage, record: BuildRecord, wheels: Path, client: Any, tags: frozenset[Any]
) -> PublishedComparison:
    base = PublishedComparison(
        str(p.name), str(p.version), "error", patched=bool(p.tool.get("patches"))
    )
    entry = record.packages.get(p.dir)
    if entry is None or not (wheels / entry.wheel).is_file():
        return _replace(
            base, status="not-built", reason="not in the build record; run `monorepo build`"
        )
    ours_path = wheels / entry.wheel
    if file_sha256(ours_path) != entry.sha256:
        return _replace(
            base, reason=f"{ours_path} is not the wheel the build record names; rebuild"
        )
    try:
        files = [
            f
            for f in client.project_files(str(p.name))
            if f.kind == "wheel" and f.version == p.version and f.tags & tags
        ]
    except MonorepoError as error:
        return _replace(base, reason=f"the index cannot be read: {error}")
    if not files:
        return _replace(
            base,
            status="no-wheel",
            ours=entry.wheel,
            reason="no wheel on the index for this target",
        )
    chosen = sorted(files, key=lambda f: (not _pure(f.filename), f.filename))[0]
    try:
        data = client.fetch(chosen.url, sha256=chosen.sha256, size=chosen.size)
        theirs = read_wheel(data, package=str(p.name), name=chosen.filename)
        ours = read_wheel(ours_path, package=str(p.name))
        diffs = compare_wheels(
            ours, theirs, names=("ours", "index"), renames=_renames(ours, theirs)
        )
    except MonorepoError as error:
        return _replace(base, ours=entry.wheel, theirs=chosen.filename, reason=str(error))
    diffs = [f for f in diffs if not _our_addition(f, ours)]
    pure = _pure(chosen.filename) and _pure(entry.wheel)
    code = [f for f in diffs if f.area == "code"]
    if not code:
        status = "same"
    elif pure or any(f.path.endswith(".py") for f in code):
        status = "differs"
    else:
        status = "native"
    return _replace(
        base, status=status, ours=entry.wheel, theirs=chosen.filename, pure=pure, files=tuple(diffs)
    )


def _our_addition(f: FileDiff, ours: WheelContents) -> bool:
    """Our SBOM (PEP 770) is not a difference of the index's wheel."""
    parts = PurePosixPath(f.path).parts
    return (
        f.change == "removed"
        and len(parts) >= 3
        and parts[0] == ours.dist_info
        and parts[1] == "sboms"
    )


def _replace(base: PublishedComparison, **changes: Any) -> PublishedComparison:
    from dataclasses import replace

    return replace(base, **changes)
