"""What verify reports: each check's findings, as text and as JSON (schema in docs/audits.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = 1
"""Version of the ``--json`` document; bumped on any incompatible change."""


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
