"""A source tree's ``[build-system]`` (PEP 517/518), as the lock and the builder need it.

Pure apart from reading one file: the table is validated here once, so the lock
records exactly what the builder will later use, and an overlay's
``build-requires`` replaces the requirements before anything is resolved.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from monorepo.errors import MetadataError

#: PEP 518: a project without [build-system] is built with setuptools' legacy backend
DEFAULT_BACKEND = "setuptools.build_meta:__legacy__"
DEFAULT_REQUIRES = ("setuptools>=40.8.0",)


@dataclass(frozen=True)
class BuildSystem:
    """What building a source tree needs."""

    backend: str
    requires: tuple[Requirement, ...]
    backend_path: tuple[str, ...] = ()

    def to_tool(self) -> dict[str, Any]:
        """The lock's per-package fields for this build system."""
        tool: dict[str, Any] = {
            "build-backend": self.backend,
            "build-requires": sorted(str(r) for r in self.requires),
        }
        if self.backend_path:
            tool["backend-path"] = list(self.backend_path)
        return tool


def read_build_system(
    tree: Path, *, what: str, override: Sequence[Requirement] | None = None
) -> BuildSystem:
    """The build system of the tree at *tree* (PEP 518 defaults when absent).

    *override* (an overlay rule's ``build-requires``) replaces the requirements.
    """
    path = tree / "pyproject.toml"
    table: dict[str, Any] = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise MetadataError(
                f"{what}: pyproject.toml is not valid TOML ({exc}); fix it with an overlay patch."
            ) from None
        raw = data.get("build-system", {})
        if not isinstance(raw, dict):
            raise MetadataError(
                f"{what}: [build-system] in pyproject.toml is not a table; fix it with an overlay patch."
            )
        table = raw
    if not table:
        backend, requires_raw, backend_path = DEFAULT_BACKEND, list(DEFAULT_REQUIRES), []
    else:
        backend = table.get("build-backend") or DEFAULT_BACKEND
        requires_raw = table.get("requires", list(DEFAULT_REQUIRES))
        backend_path = table.get("backend-path", [])
    if (
        not isinstance(backend, str)
        or not isinstance(requires_raw, list)
        or not isinstance(backend_path, list)
    ):
        raise MetadataError(
            f"{what}: [build-system] in pyproject.toml has a wrong type (build-backend must be a "
            "string, requires and backend-path lists); fix it with an overlay patch."
        )
    if override is not None:
        requires = tuple(override)
    else:
        try:
            requires = tuple(Requirement(str(r)) for r in requires_raw)
        except InvalidRequirement as exc:
            raise MetadataError(
                f"{what}: [build-system] requires has an invalid requirement ({exc}); replace it with an "
                "overlay rule's build-requires."
            ) from None
    return BuildSystem(
        backend=backend, requires=requires, backend_path=tuple(str(p) for p in backend_path)
    )
