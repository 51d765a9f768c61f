"""The last source of metadata: an sdist's own build backend, asked through pyproject-hooks.

When no wheel and no trustworthy ``PKG-INFO`` says what a version depends on, the
sdist is unpacked (by the one extractor, under pull's rules) and its backend's
``prepare_metadata_for_build_wheel`` is called in a build environment made once per
requirement set and reused (:meth:`BuildBackend.python`).  The same runs for a git
checkout whose ``[project]`` table is dynamic.  Every subprocess (pip, the hooks) has its
output captured: it reaches the user only inside the error message of a failure.

:class:`BuildBackend` is a collaborator: the caller says where the environments live (the
cache directory's ``build-envs``), which indexes fill them and whether that is allowed
(``offline``); the index client is handed one.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from monorepo._core import fstree
from monorepo._core.atomic import write_text_if_changed
from monorepo._core.reporter import NullReporter, Reporter
from monorepo.errors import MetadataError
from monorepo.project.pyproject import read_build_system

__all__ = ["BuildBackend"]

_TAIL_LINES = 25


class _HookFailed(Exception):
    def __init__(self, returncode: int, output: str) -> None:
        super().__init__(f"exit status {returncode}")
        self.returncode = returncode
        self.output = output


def _tail(text: str) -> str:
    lines = text.strip().splitlines()[-_TAIL_LINES:]
    return "\n".join(lines)


def _quiet_runner(
    cmd: Sequence[str], cwd: str | None = None, extra_environ: Mapping[str, str] | None = None
) -> None:
    """Run a hook with its output captured: the library never writes to the terminal."""
    env = dict(os.environ)
    if extra_environ:
        env.update(extra_environ)
    result = subprocess.run(
        list(cmd),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    if result.returncode != 0:
        raise _HookFailed(result.returncode, result.stdout.decode("utf-8", "replace"))


def _venv_python(env_dir: Path) -> Path:
    if sys.platform == "win32":
        return env_dir / "Scripts" / "python.exe"
    return env_dir / "bin" / "python"


@dataclass(frozen=True)
class BuildBackend:
    """How build backends are run for metadata: where their environments live, from which
    indexes they are filled, and whether downloading is allowed."""

    envs: Path
    """The directory of the cached build environments (``<cache>/build-envs``)."""
    index_urls: tuple[str, ...] = ()
    """Where pip finds the build requirements (pip's own configuration when empty)."""
    offline: bool = False
    reporter: Reporter = field(default_factory=NullReporter)

    def python(self, requires: Sequence[str], *, label: str) -> Path:
        """A Python with *requires* installed, created once per requirement set and reused.

        The environment is keyed by the requirements, the indexes and the interpreter, and
        a marker file is written only after pip succeeded, so a half-built environment
        (crash, failed install) is rebuilt next time.  A file lock serialises concurrent
        builders.
        """
        # Imported here: only a build backend needs them, and they are a fifth of the
        # metadata machinery's import time, which every lock pays.
        import venv

        from filelock import FileLock

        spec = "\n".join([sys.version, *sorted(requires), "--", *self.index_urls])
        key = hashlib.sha256(spec.encode()).hexdigest()[:24]
        env_dir = self.envs / key
        marker = env_dir / ".monorepo-complete"
        self.envs.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.envs / f"{key}.lock")):
            if marker.exists():
                return _venv_python(env_dir)
            self.reporter.message(
                "info", f"creating build environment for {label}: {', '.join(requires)}"
            )
            try:
                venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
            except (OSError, subprocess.CalledProcessError) as error:
                raise MetadataError(
                    f"{label}: could not create a build environment in {env_dir}: {error}."
                ) from error
            command = [
                str(_venv_python(env_dir)),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--quiet",
            ]
            if self.offline:
                command.append("--no-index")
            elif self.index_urls:
                command += ["--index-url", self.index_urls[0]]
                for extra in self.index_urls[1:]:
                    command += ["--extra-index-url", extra]
            command += ["--", *requires]
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                check=False,
            )
            if result.returncode != 0:
                hint = (
                    "--offline forbids downloading them and no build environment with them is "
                    "cached; run once without --offline."
                    if self.offline
                    else "check that the index provides them."
                )
                raise MetadataError(
                    f"{label}: installing the build requirements {list(requires)} failed"
                    f" ({hint})\npip said:\n{_tail(result.stdout.decode('utf-8', 'replace'))}"
                )
            write_text_if_changed(marker, spec)
        return _venv_python(env_dir)

    def sdist_metadata(self, data: bytes, filename: str, *, label: str) -> bytes:
        """The ``METADATA`` an sdist's build backend computes, from a temporary unpacked copy."""
        with fstree.temporary_directory(prefix="monorepo-sdist-") as tmp:
            # Imported here: tar and zip reading, only when an sdist is read.
            from monorepo.extract import archive

            # The one extractor, with the rules and limits of pull: no second rule set.
            tree = tmp / "tree"
            archive.extract_sdist(data, tree, package=label, name=filename)
            return self.tree_metadata(tree, what=f"{label} ({filename})")

    def tree_metadata(self, source_dir: Path, *, what: str) -> bytes:
        """The ``METADATA`` a source tree's build backend writes; *what* names it in errors.

        ``prepare_metadata_for_build_wheel`` is asked first; pyproject_hooks falls back to
        ``build_wheel`` and reads the wheel's dist-info when a backend lacks that hook.
        With non-empty ``[build-system] requires`` the hook runs in a cached isolated
        environment (:meth:`python`); otherwise (an in-tree backend) with this interpreter.
        """
        from pyproject_hooks import BackendUnavailable, BuildBackendHookCaller, HookMissing

        build_system = read_build_system(source_dir, what=what)
        requires = [str(r) for r in build_system.requires]
        python = str(self.python(requires, label=what)) if requires else sys.executable
        backend = build_system.backend
        hooks = BuildBackendHookCaller(
            str(source_dir),
            backend,
            backend_path=list(build_system.backend_path) or None,
            runner=_quiet_runner,
            python_executable=python,
        )
        with tempfile.TemporaryDirectory(prefix="monorepo-meta-") as out:
            self.reporter.message("debug", f"{what}: asking build backend {backend} for metadata")
            try:
                dist_info = hooks.prepare_metadata_for_build_wheel(out)
            except _HookFailed as error:
                raise MetadataError(
                    f"{what}: the build backend {backend} failed to prepare metadata ({error}). "
                    f"Its output ends with:\n{_tail(error.output)}\n"
                    "Fix the source with an overlay, or pin a version that has a wheel."
                ) from error
            except (BackendUnavailable, HookMissing) as error:
                raise MetadataError(
                    f"{what}: the build backend {backend} is unusable "
                    f"({type(error).__name__}: {error}). Check the [build-system] table."
                ) from error
            try:
                return (Path(out) / dist_info / "METADATA").read_bytes()
            except OSError as error:
                raise MetadataError(
                    f"{what}: the build backend {backend} wrote no METADATA in {dist_info}."
                ) from error
