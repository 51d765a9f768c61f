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

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .builder import BuildResult, build
    from .config import ProjectConfig, load_config
    from .errors import (
        ConfigError,
        IndexClientError,
        LockFileError,
        MonorepoError,
        OfflineError,
        ResolutionError,
        StaleLockError,
    )
    from .graph import list_packages, why
    from .locker import CheckResult, LockResult, check, lock
    from .lockfile import LockDocument, LockedPackage
    from .lockfile import read as read_lock
    from .puller import PullResult, pull
    from .reporter import NullReporter, Reporter
    from .verifier import VerifyReport, verify

_EXPORTS = {
    "build": "builder",
    "BuildResult": "builder",
    "lock": "locker",
    "check": "locker",
    "LockResult": "locker",
    "pull": "puller",
    "PullResult": "puller",
    "CheckResult": "locker",
    "load_config": "config",
    "ProjectConfig": "config",
    "read_lock": "lockfile",
    "LockDocument": "lockfile",
    "LockedPackage": "lockfile",
    "Reporter": "reporter",
    "NullReporter": "reporter",
    "MonorepoError": "errors",
    "ConfigError": "errors",
    "IndexClientError": "errors",
    "OfflineError": "errors",
    "ResolutionError": "errors",
    "LockFileError": "errors",
    "StaleLockError": "errors",
    "verify": "verifier",
    "VerifyReport": "verifier",
    "list_packages": "graph",
    "why": "graph",
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
    "list_packages",
    "load_config",
    "lock",
    "pull",
    "read_lock",
    "verify",
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
