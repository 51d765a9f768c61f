"""Finding the project a command runs on, upward from the working directory, as uv does.

A ``pyproject.toml`` counts only when it has a ``[project]`` or ``[tool.monorepo]``
table: a bare one (a tool's settings file in a subdirectory, a build-system stub) is
passed over, so running ``monorepo lock`` from ``src/pkg/`` still finds the project at
the top.  The search stops at the file-system root; only the nearest fitting file counts.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from monorepo.errors import ConfigError, UsageError


def find_project(start: str | os.PathLike[str] | None = None) -> Path:
    """The nearest directory at or above *start* (default: the working directory) whose
    pyproject.toml has a ``[project]`` or ``[tool.monorepo]`` table.

    Raises :class:`~monorepo.errors.UsageError` (exit 2) when there is none, and
    :class:`~monorepo.errors.ConfigError` when the nearest pyproject.toml is not TOML
    (a broken file is reported, not silently skipped in favour of a parent).
    """
    here = Path(os.path.abspath(start if start is not None else os.getcwd()))
    for directory in (here, *here.parents):
        candidate = directory / "pyproject.toml"
        if _is_project(candidate):
            return directory
    raise UsageError(
        f"no pyproject.toml with a [project] or [tool.monorepo] table in {here} or any"
        " directory above it. Run the command inside a project, or name one with"
        " --project DIR.",
        path=here,
        hint="pass --project DIR",
    )


def _is_project(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
        return False
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid TOML ({exc}). Fix the file, or name another project with"
            " --project DIR.",
            path=path,
        ) from exc
    tool = data.get("tool")
    return "project" in data or (isinstance(tool, dict) and "monorepo" in tool)
