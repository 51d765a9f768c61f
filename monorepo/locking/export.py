"""``monorepo export --format requirements-txt``: the lock as plain pip reads it.

One target's runtime set, one pinned line per package with the sha256 of the source
the lock names, so ``pip install --require-hashes --no-binary :all: -r FILE`` installs
exactly what ``monorepo`` vendored (pip's hash checking mode refuses any other file).
Markers are not written: the target was already chosen, and the lock's markers use
PEP 751 variables (``extras``, ``dependency_groups``) that requirements files lack.
Build-only packages are left out (pip builds in its own isolated environments); a
comment at the end names them.  The output is a function of the lock: same lock, same
bytes.
"""

from __future__ import annotations

from pathlib import Path

from monorepo.errors import LockFileError
from monorepo.project import lockfile
from monorepo.project.config import load_config
from monorepo.project.lockfile import ArchiveSource, LockDocument, SdistSource, VcsSource

__all__ = ["export_requirements", "requirements_txt"]


def requirements_txt(doc: LockDocument, target: str) -> str:
    """The requirements file of *doc*'s runtime packages locked for *target*."""
    lines = [
        "# Exported by `monorepo export --format requirements-txt` from pylock.toml",
        f"# target: {target}",
        "# install: pip install --require-hashes --no-binary :all: -r <this file>",
    ]
    build_only: list[str] = []
    for pkg in doc.packages:
        if pkg.role == "build":
            build_only.append(f"{pkg.name}=={pkg.version}")
            continue
        if pkg.targets and target not in pkg.targets:
            continue
        source = pkg.source
        if isinstance(source, VcsSource):
            sub = f"#subdirectory={source.subdirectory}" if source.subdirectory else ""
            lines.append(f"{pkg.name} @ git+{source.url}@{source.commit}{sub}")
        elif isinstance(source, SdistSource) and pkg.index:
            lines.append(f"{pkg.name}=={pkg.version} \\\n    --hash=sha256:{source.sha256}")
        elif isinstance(source, SdistSource | ArchiveSource):
            lines.append(f"{pkg.name} @ {source.url} \\\n    --hash=sha256:{source.sha256}")
    if build_only:
        lines.append("# build-only packages (not installed): " + ", ".join(build_only))
    return "\n".join(lines) + "\n"


def export_requirements(project: Path | str = ".", *, target: str | None = None) -> str:
    """*project*'s pylock.toml as a requirements file for *target* (default: the first).

    Raises :class:`~monorepo.errors.LockFileError` when there is no lock, or (exit 2)
    for a target the project does not have.
    """
    config = load_config(Path(project))
    doc = lockfile.read(config.root / lockfile.LOCK_NAME)
    names = [t.name for t in config.targets]
    chosen = target if target is not None else names[0]
    if chosen not in names:
        raise LockFileError(
            f"no target {chosen!r} in {config.pyproject}: its targets are {', '.join(names)}",
            path=config.pyproject,
            exit_code=2,
        )
    return requirements_txt(doc, chosen)
