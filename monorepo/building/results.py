"""What a build reports: per package its wheel, or why it failed and the end of its log."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TAIL_LINES = 25


# ---------------------------------------------------------------------- results


@dataclass(frozen=True)
class PackageResult:
    """One package's outcome: its wheel when built or skipped, the reason when failed."""

    dir: str
    name: str
    version: str
    wheel: Path | None = None
    log: Path | None = None
    seconds: float = 0.0
    reason: str = ""
    tail: tuple[str, ...] = ()
    host: bool = False
    """Built for the build machine (a build requirement of a cross build)."""

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}" + (" (host)" if self.host else "")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"dir": self.dir, "name": self.name, "version": self.version}
        if self.host:
            data["host"] = True
        if self.wheel is not None:
            data["wheel"] = str(self.wheel)
        if self.log is not None:
            data["log"] = str(self.log)
        if self.seconds:
            data["seconds"] = round(self.seconds, 2)
        if self.reason:
            data["reason"] = self.reason
            data["tail"] = list(self.tail)
        return data


@dataclass
class BuildResult:
    """What a build did: packages built, skipped as up to date, and failed."""

    target: str
    wheels: Path
    logs: Path
    built: list[PackageResult] = field(default_factory=list)
    skipped: list[PackageResult] = field(default_factory=list)
    cached: list[PackageResult] = field(default_factory=list)
    """Taken from the build cache (built before, with the same inputs)."""
    failed: list[PackageResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "target": self.target,
            "wheels": str(self.wheels),
            "logs": str(self.logs),
            "ok": self.ok,
            "built": [p.to_dict() for p in self.built],
            "skipped": [p.to_dict() for p in self.skipped],
            "cached": [p.to_dict() for p in self.cached],
            "failed": [p.to_dict() for p in self.failed],
            "warnings": list(self.warnings),
        }


def log_tail(path: Path | None) -> tuple[str, ...]:
    if path is None:
        return ()
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ()
    return tuple(lines[-_TAIL_LINES:])
