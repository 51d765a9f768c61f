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
        BuildError,
        ConfigError,
        DiskFullError,
        ExtractError,
        HashMismatchError,
        IndexClientError,
        LockFileError,
        MetadataError,
        MonorepoError,
        OfflineError,
        OverlayError,
        PullError,
        ResolutionError,
        StaleLockError,
        StorageError,
        TooSlowError,
        UsageError,
    )
    from monorepo.locking.document import NoSdistError
    from monorepo.locking.export import export_requirements
    from monorepo.locking.graph import TargetTree, TreeNode, list_packages, tree, why
    from monorepo.locking.locker import CheckResult, LockResult, check, lock
    from monorepo.project.config import ProjectConfig, load_config
    from monorepo.project.discover import find_project
    from monorepo.project.lockfile import LockDocument, LockedPackage
    from monorepo.project.lockfile import read as read_lock
    from monorepo.sources.git import GitError
    from monorepo.sources.treehash import TreeHashError
    from monorepo.sysroot.info import SysrootError
    from monorepo.vendoring.dryrun import plan_pull
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
    "UsageError": "errors",
    "MetadataError": "errors",
    "HashMismatchError": "errors",
    "ExtractError": "errors",
    "OverlayError": "errors",
    "PullError": "errors",
    "BuildError": "errors",
    "StorageError": "errors",
    "DiskFullError": "errors",
    "TooSlowError": "errors",
    "NoSdistError": "locking.document",
    "GitError": "sources.git",
    "TreeHashError": "sources.treehash",
    "SysrootError": "sysroot.info",
    "find_project": "project.discover",
    "tree": "locking.graph",
    "TreeNode": "locking.graph",
    "TargetTree": "locking.graph",
    "export_requirements": "locking.export",
    "plan_pull": "vendoring.dryrun",
    "verify": "vendoring.verify.verifier",
    "verify_rebuild": "building.rebuild",
    "verify_published": "building.published",
    "export_cyclonedx": "vendoring.sbom",
    "VerifyReport": "vendoring.verify.report",
    "list_packages": "locking.graph",
    "why": "locking.graph",
}

__all__ = [
    "BuildError",
    "BuildResult",
    "CheckResult",
    "ConfigError",
    "DiskFullError",
    "ExtractError",
    "GitError",
    "HashMismatchError",
    "IndexClientError",
    "LockDocument",
    "LockFileError",
    "LockResult",
    "LockedPackage",
    "MetadataError",
    "MonorepoError",
    "NoSdistError",
    "NullReporter",
    "OfflineError",
    "OverlayError",
    "ProjectConfig",
    "PullError",
    "PullResult",
    "Reporter",
    "ResolutionError",
    "StaleLockError",
    "StorageError",
    "SysrootError",
    "TargetTree",
    "TooSlowError",
    "TreeHashError",
    "TreeNode",
    "UsageError",
    "VerifyReport",
    "__version__",
    "build",
    "check",
    "export_cyclonedx",
    "export_requirements",
    "find_project",
    "list_packages",
    "load_config",
    "lock",
    "plan_pull",
    "pull",
    "read_lock",
    "tree",
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
