"""Target environments: the machines a locked package set has to work on.

A lock is made for named targets rather than for the machine running ``monorepo``,
so that a laptop can lock (and later cross-build) for a board it is not running on.
Everything that depends on the environment -- which markers hold, which
dependencies apply -- is therefore evaluated against :meth:`Target.marker_environment`
and never against the host interpreter.
"""

from __future__ import annotations

import difflib
import itertools
import platform as _platform
import re
import string
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import TYPE_CHECKING

from monorepo.errors import ConfigError

if TYPE_CHECKING:
    from packaging.markers import Marker

__all__ = [
    "IMPLEMENTATIONS",
    "PLATFORMS",
    "Target",
    "host_target",
    "parse_target",
]

#: ``platform`` value -> (os_name, sys_platform, platform_system), as CPython reports them.
PLATFORMS: dict[str, tuple[str, str, str]] = {
    "linux": ("posix", "linux", "Linux"),
    "darwin": ("posix", "darwin", "Darwin"),
    "windows": ("nt", "win32", "Windows"),
}

#: ``implementation`` value -> ``platform_python_implementation``.
IMPLEMENTATIONS: dict[str, str] = {
    "cpython": "CPython",
    "pypy": "PyPy",
    "graalpy": "GraalVM",
}

_PYTHON_RE = re.compile(r"^3\.(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))?$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_REQUIRED = ("name", "python", "platform", "machine")
_OPTIONAL = ("implementation", "cc", "sysroot", "runner")
_KEYS = _REQUIRED + _OPTIONAL


@dataclass(frozen=True)
class Target:
    """One environment the lock must serve.

    ``python`` is ``"3.11"`` or ``"3.11.4"``: a lock rarely cares about the patch
    release, but markers on ``python_full_version`` must still evaluate, so a
    missing patch level counts as ``.0``.  ``cc``, ``sysroot`` and ``runner`` only
    matter to cross builds and are deliberately left out of :meth:`canonical`, so
    moving a toolchain does not make the lock stale.
    """

    name: str
    python: str
    platform: str
    machine: str
    implementation: str = "cpython"
    cc: str | None = None
    sysroot: str | None = None
    runner: str | None = None

    @property
    def python_full_version(self) -> str:
        """``python`` with a patch level, because PEP 508 markers compare against one."""
        return self.python if self.python.count(".") == 2 else f"{self.python}.0"

    @property
    def python_version(self) -> str:
        """Major.minor, the form of the ``python_version`` marker."""
        return ".".join(self.python.split(".")[:2])

    def marker_environment(self) -> dict[str, str]:
        """Every PEP 508 marker variable as this target would report it.

        packaging's ``Marker.evaluate`` fills missing variables from the *host*,
        which would silently make a Linux lock depend on the machine that ran it;
        returning all of them closes that hole.  ``platform_release`` and
        ``platform_version`` are unknowable for a target and left empty, so markers
        on them are false rather than host-dependent.
        """
        os_name, sys_platform, platform_system = PLATFORMS[self.platform]
        return {
            "implementation_name": self.implementation,
            "implementation_version": self.python_full_version,
            "os_name": os_name,
            "platform_machine": self.machine,
            "platform_python_implementation": IMPLEMENTATIONS[self.implementation],
            "platform_release": "",
            "platform_system": platform_system,
            "platform_version": "",
            "python_full_version": self.python_full_version,
            "python_version": self.python_version,
            "sys_platform": sys_platform,
        }

    def canonical(self) -> dict[str, str]:
        """The fields that decide what gets locked, for the lock's staleness inputs."""
        return {
            "name": self.name,
            "python": self.python,
            "platform": self.platform,
            "machine": self.machine,
            "implementation": self.implementation,
        }


def _host_platform(sys_platform: str) -> str:
    if sys_platform.startswith("linux"):
        return "linux"
    if sys_platform == "darwin":
        return "darwin"
    if sys_platform in ("win32", "cygwin"):
        return "windows"
    raise ConfigError(
        f"monorepo cannot describe this machine (sys.platform {sys_platform!r}) as a "
        f"target; it knows {', '.join(PLATFORMS)}. Set [tool.monorepo] targets in "
        'pyproject.toml explicitly, e.g. targets = [{ name = "linux-x86_64", '
        'python = "3.11", platform = "linux", machine = "x86_64" }].'
    )


def host_target() -> Target:
    """The running interpreter as a target: the default when none are configured.

    Only major.minor of the Python version is kept so that a patch upgrade of the
    interpreter does not make an existing lock look stale.
    """
    plat = _host_platform(sys.platform)
    machine = _platform.machine() or "unknown"
    implementation = sys.implementation.name
    if implementation not in IMPLEMENTATIONS:
        implementation = "cpython"
    return Target(
        name=f"{plat}-{machine}",
        python=f"{sys.version_info.major}.{sys.version_info.minor}",
        platform=plat,
        machine=machine,
        implementation=implementation,
    )


def describe_value(value: object) -> str:
    """Name a TOML value's type the way a user reading the file would (for messages)."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, datetime | date | time):
        return f"date/time {value.isoformat()}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    return f"{type(value).__name__} {value!r}"


def _choice(value: str, choices: list[str], what: str, where: str) -> str:
    if value in choices:
        return value
    close = difflib.get_close_matches(value.lower(), choices, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"{where}: {what} {value!r} is not supported.{hint} "
        f"Choose one of: {', '.join(repr(c) for c in choices)}."
    )


def parse_target(value: object, *, where: str) -> Target:
    """Build a :class:`Target` from one TOML inline table of ``targets``.

    *where* locates the table for messages (``"<file>: [tool.monorepo] targets[0]"``),
    because a user with four targets needs to know which one is wrong.
    """
    example = '{ name = "linux-x86_64", python = "3.11", platform = "linux", machine = "x86_64" }'
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{where}: expected a table such as {example}, got {describe_value(value)}."
        )
    unknown = sorted(str(k) for k in value if k not in _KEYS)
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, _KEYS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}: key {key!r} is unknown.{hint} Known keys: {', '.join(_KEYS)}.")
    missing = [k for k in _REQUIRED if k not in value]
    if missing:
        raise ConfigError(
            f"{where}: missing required key{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(k) for k in missing)}. A target needs name, python, "
            f"platform and machine, e.g. {example}."
        )
    fields: dict[str, str | None] = {}
    for key in _KEYS:
        raw = value.get(key)
        if raw is None:
            fields[key] = None
            continue
        if not isinstance(raw, str) or not raw.strip():
            raise ConfigError(
                f"{where}: key {key!r} must be a non-empty string, got {describe_value(raw)}."
            )
        fields[key] = raw.strip()

    name = fields["name"]
    python = fields["python"]
    plat = fields["platform"]
    machine = fields["machine"]
    assert name is not None and python is not None and plat is not None
    assert machine is not None
    if not _NAME_RE.match(name):
        raise ConfigError(
            f"{where}: name {name!r} may only contain letters, digits, '.', '_' and '-' "
            "(it names directories and lock entries); e.g. 'linux-aarch64'."
        )
    if not _PYTHON_RE.match(python):
        raise ConfigError(
            f"{where}: python {python!r} is not a Python 3 version; write major.minor "
            "such as '3.11' or major.minor.patch such as '3.11.4'."
        )
    plat = _choice(plat, list(PLATFORMS), "platform", where)
    implementation = _choice(
        fields["implementation"] or "cpython", list(IMPLEMENTATIONS), "implementation", where
    )
    runner = fields["runner"]
    if runner is not None:
        try:
            placeholders = {f for _, f, _, _ in string.Formatter().parse(runner) if f is not None}
        except ValueError as exc:
            raise ConfigError(
                f"{where}: runner {runner!r} is not a valid command template ({exc}); "
                "write literal braces as '{{' and '}}'."
            ) from exc
        bad = sorted(placeholders - {"sysroot"})
        if bad:
            raise ConfigError(
                f"{where}: runner {runner!r} uses placeholder {{{bad[0]}}}; only "
                "{sysroot} is substituted. Write literal braces as '{{' and '}}'."
            )
        if "sysroot" in placeholders and fields["sysroot"] is None:
            raise ConfigError(
                f"{where}: runner {runner!r} uses {{sysroot}} but the target has no "
                "'sysroot' key; add sysroot = \"/path/to/sysroot\" to the target."
            )
    return Target(
        name=name,
        python=python,
        platform=plat,
        machine=machine,
        implementation=implementation,
        cc=fields["cc"],
        sysroot=fields["sysroot"],
        runner=runner,
    )


def evaluate_marker(
    marker: Marker | None, environment: Mapping[str, str], extras: Iterable[str]
) -> bool:
    """Evaluate a metadata marker for a target with the candidate's extras.

    Here, beside the marker environments, not in the resolver: the freshness check of
    every ``pull`` and ``build`` needs it without loading resolvelib.
    """
    if marker is None:
        return True
    for extra in itertools.chain([""], extras):
        env = dict(environment)
        env["extra"] = extra
        if marker.evaluate(env):
            return True
    return False
