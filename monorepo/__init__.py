"""monorepo: lock, vendor, audit and build a whole Python dependency set from source.

The library is the product; the ``monorepo`` command is a thin layer over it.
Public entry points are imported lazily so that ``import monorepo`` (and
``monorepo --version``) stays cheap: the heavy dependencies load on first use.

>>> import monorepo
>>> result = monorepo.lock("path/to/project")          # doctest: +SKIP
>>> result.changed, len(result.document.packages)       # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from monorepo._core.version import VERSION as __version__

if TYPE_CHECKING:
    from monorepo._core.reporter import NullReporter, Reporter
    from monorepo.building.builder import build
    from monorepo.building.published import verify_published
    from monorepo.building.rebuild import verify_rebuild
    from monorepo.building.results import BuildResult
    from monorepo.errors import (
        ConfigError,
        IndexClientError,
        LockFileError,
        MonorepoError,
        OfflineError,
        ResolutionError,
        StaleLockError,
    )
    from monorepo.locking.graph import list_packages, why
    from monorepo.locking.locker import CheckResult, LockResult, check, lock
    from monorepo.project.config import ProjectConfig, load_config
    from monorepo.project.lockfile import LockDocument, LockedPackage
    from monorepo.project.lockfile import read as read_lock
    from monorepo.vendoring.pull import PullResult, pull
    from monorepo.vendoring.sbom import export_cyclonedx
    from monorepo.vendoring.verify.report import VerifyReport
    from monorepo.vendoring.verify.verifier import verify

_EXPORTS = {
    "build": "building.builder",
    "BuildResult": "building.results",
    "lock": "locking.locker",
    "check": "locking.locker",
    "LockResult": "locking.locker",
    "pull": "vendoring.pull",
    "PullResult": "vendoring.pull",
    "CheckResult": "locking.locker",
    "load_config": "project.config",
    "ProjectConfig": "project.config",
    "read_lock": "project.lockfile",
    "LockDocument": "project.lockfile",
    "LockedPackage": "project.lockfile",
    "Reporter": "_core.reporter",
    "NullReporter": "_core.reporter",
    "MonorepoError": "errors",
    "ConfigError": "errors",
    "IndexClientError": "errors",
    "OfflineError": "errors",
    "ResolutionError": "errors",
    "LockFileError": "errors",
    "StaleLockError": "errors",
    "verify": "vendoring.verify.verifier",
    "verify_rebuild": "building.rebuild",
    "verify_published": "building.published",
    "export_cyclonedx": "vendoring.sbom",
    "VerifyReport": "vendoring.verify.report",
    "list_packages": "locking.graph",
    "why": "locking.graph",
}

__all__ = [
    "BuildResult",
    "CheckResult",
    "ConfigError",
    "IndexClientError",
    "LockDocument",
    "LockFileError",
    "LockResult",
    "LockedPackage",
    "MonorepoError",
    "NullReporter",
    "OfflineError",
    "ProjectConfig",
    "PullResult",
    "Reporter",
    "ResolutionError",
    "StaleLockError",
    "VerifyReport",
    "__version__",
    "build",
    "check",
    "export_cyclonedx",
    "list_packages",
    "load_config",
    "lock",
    "pull",
    "read_lock",
    "verify",
    "verify_published",
    "verify_rebuild",
    "why",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'monorepo' has no attribute {name!r}")
    import importlib

    mod = importlib.import_module(f".{module}", __name__)
    value = getattr(mod, "read" if name == "read_lock" else name)
    globals()[name] = value
    return value
