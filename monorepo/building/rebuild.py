"""``monorepo verify --rebuild``: build again elsewhere, later, and compare with the record.

A build record (``duni-build/<target>/build.toml``) says which wheel each package's
inputs gave.  Rebuilding in a fresh scratch directory -- another path, another time,
new build venvs, nothing reused -- and getting the same sha256 is the evidence that the
wheel is a function of its recorded inputs and nothing else.  When it is not, the
wheels are compared file by file (:mod:`monorepo.building.wheeldiff`) so the report
names what varies: a build time written into a ``.py``, a path in ``.debug_str``.

``--against FILE`` compares with another machine's record instead: then a different
sha256 comes with the inputs that differ (another compiler, another sysroot), and the
files are compared when that machine's wheels sit beside its record (``wheels/``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from monorepo._core.reporter import NullReporter, Reporter
from monorepo.building.buildenv import file_sha256
from monorepo.building.builder import BUILD_DIR, build
from monorepo.building.record import RECORD_NAME, BuildRecord, RecordEntry, read_build_record
from monorepo.building.reproducible import read_wheel
from monorepo.building.targets import choose_target
from monorepo.building.wheeldiff import FileDiff, compare_wheels
from monorepo.errors import BuildError, MonorepoError
from monorepo.project.config import load_config
from monorepo.vendoring.verify.report import CheckResult, Item

__all__ = ["PackageRebuild", "RebuildReport", "verify_rebuild"]


@dataclass(frozen=True)
class PackageRebuild:
    """One package: ``reproducible``, ``differs``, or ``failed`` (not rebuilt)."""

    dir: str
    name: str
    version: str
    status: str
    wheel: str
    expected: str
    actual: str = ""
    inputs_differ: tuple[str, ...] = ()
    files: tuple[FileDiff, ...] = ()
    reason: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "dir": self.dir,
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "wheel": self.wheel,
            "expected-sha256": self.expected,
        }
        if self.actual:
            data["actual-sha256"] = self.actual
        if self.inputs_differ:
            data["inputs-differ"] = list(self.inputs_differ)
        if self.files:
            data["files"] = [f.to_dict() for f in self.files]
        if self.reason:
            data["reason"] = self.reason
        return data


@dataclass
class RebuildReport:
    """Every compared package, sorted by directory."""

    target: str
    record: Path
    packages: list[PackageRebuild] = field(default_factory=list)
    scratch: Path | None = None
    """The scratch build directory, when it was kept."""

    @property
    def passed(self) -> bool:
        return all(p.status == "reproducible" for p in self.packages)

    def status(self, name: str) -> PackageRebuild:
        key = canonicalize_name(name)
        for p in self.packages:
            if p.dir == name or canonicalize_name(p.name) == key:
                return p
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "record": str(self.record),
            "passed": self.passed,
            "packages": [p.to_dict() for p in self.packages],
        }

    def check(self) -> CheckResult:
        """The report as ``verify``'s ``rebuild`` check: an item per package that is not
        reproducible and one per file that differs."""
        result = CheckResult("rebuild")
        same = sum(p.status == "reproducible" for p in self.packages)
        result.summary = f"{same} of {len(self.packages)} wheels reproducible"
        for p in self.packages:
            if p.status == "reproducible":
                continue
            if p.status == "failed":
                result.fail(Item(p.name, "failed", f"{p.version}: not rebuilt: {p.reason}"))
                continue
            inputs = (
                f"; its inputs differ in {', '.join(p.inputs_differ)}"
                if p.inputs_differ
                else "; same inputs"
            )
            result.fail(
                Item(
                    p.name,
                    "differs",
                    f"{p.version}: {p.wheel} rebuilt with sha256 {p.actual[:12]}…, the record"
                    f" says {p.expected[:12]}…{inputs}"
                    + ("" if p.files or p.reason else "; the wheels are not here to compare")
                    + (f"; {p.reason}" if p.reason else ""),
                    (p.wheel,),
                )
            )
            for f in p.files:
                text = f.summary() + "".join(f"\n    {line}" for line in f.detail)
                result.fail(Item(p.name, "file-differs", text, (f.path,)))
        return result


def _select(record: BuildRecord, names: Sequence[str]) -> list[RecordEntry]:
    if not names:
        return [record.packages[d] for d in sorted(record.packages)]
    chosen: list[RecordEntry] = []
    unknown: list[str] = []
    for n in names:
        found = [
            e for e in record.packages.values() if e.dir == n or e.name == canonicalize_name(n)
        ]
        if not found:
            unknown.append(n)
        chosen += [e for e in found if e not in chosen]
    if unknown:
        raise BuildError(
            f"not in the build record: {', '.join(unknown)}; `monorepo build` them first"
        )
    return sorted(chosen, key=lambda e: e.dir)


def verify_rebuild(
    project: str | os.PathLike[str] = ".",
    *,
    target: str | None = None,
    packages: Sequence[str] = (),
    against: str | os.PathLike[str] | None = None,
    jobs: int | None = None,
    reporter: Reporter | None = None,
    isolate: bool | None = None,
    keep: bool = False,
    scratch_parent: str | os.PathLike[str] | None = None,
) -> RebuildReport:
    """Rebuild *packages* (default: every package of the record) for *target* in a
    fresh scratch directory and compare each wheel with the build record, or with the
    record *against* from another machine.  The project is not written.  *keep* leaves
    the scratch build (its path is in the report); *scratch_parent* is where it is made
    (default: the system's temporary directory).
    """
    reporter = reporter if reporter is not None else NullReporter()
    config = load_config(Path(project))
    chosen = choose_target(config, target)
    path = (
        Path(against).resolve()
        if against is not None
        else config.root / BUILD_DIR / chosen.name / RECORD_NAME
    )
    recorded = read_build_record(path)
    if against is not None and recorded.target != chosen.name:
        reporter.message(
            "warning",
            f"{path} is a record of target {recorded.target!r}, compared with target"
            f" {chosen.name!r}",
        )
    entries = _select(recorded, packages)
    scratch = Path(tempfile.mkdtemp(prefix="monorepo-rebuild-", dir=scratch_parent))
    report = RebuildReport(target=chosen.name, record=path, scratch=scratch if keep else None)
    try:
        reporter.message("info", f"rebuilding {len(entries)} packages in {scratch}")
        result = build(
            config.root,
            target=chosen.name,
            packages=[e.dir for e in entries],
            jobs=jobs,
            reporter=reporter,
            isolate=isolate,
            frozen=True,
            build_root=scratch,
            build_cache=False,  # a rebuild proves something only if it really builds
        )
        failed = {p.dir: p.reason for p in result.failed if not p.host}
        fresh_path = scratch / chosen.name / RECORD_NAME
        fresh = read_build_record(fresh_path).packages if fresh_path.exists() else {}
        for e in entries:
            report.packages.append(
                _compare(e, fresh.get(e.dir), failed.get(e.dir), path.parent, result.wheels)
            )
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return report


def _compare(
    e: RecordEntry,
    new: RecordEntry | None,
    failure: str | None,
    recorded_dir: Path,
    rebuilt_dir: Path,
) -> PackageRebuild:
    base = PackageRebuild(e.dir, e.name, e.version, "failed", e.wheel, e.sha256)
    if new is None:
        return replace(base, reason=failure or "the rebuild made no wheel for it")
    if new.sha256 == e.sha256 and new.wheel == e.wheel:
        return replace(base, status="reproducible", actual=new.sha256)
    inputs = tuple(e.inputs.differences(new.inputs))
    old_wheel = recorded_dir / "wheels" / e.wheel
    files: tuple[FileDiff, ...] = ()
    reason = "" if new.wheel == e.wheel else f"the rebuilt wheel is named {new.wheel}"
    if old_wheel.is_file() and file_sha256(old_wheel) == e.sha256:
        try:
            files = tuple(
                compare_wheels(
                    read_wheel(old_wheel, package=e.name),
                    read_wheel(rebuilt_dir / new.wheel, package=e.name),
                )
            )
        except MonorepoError as error:
            reason = f"the wheels cannot be compared: {error}"
    return replace(
        base, status="differs", actual=new.sha256, inputs_differ=inputs, files=files, reason=reason
    )
