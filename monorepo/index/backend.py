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
from monorepo._core.isolation import network_isolation, offline_environ
from monorepo._core.reporter import NullReporter, Reporter
from monorepo._core.warnrelay import RELAY
from monorepo.errors import MetadataError
from monorepo.project.pyproject import BuildSystem, read_build_system

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


def _run_captured(cmd: Sequence[str], cwd: str | None, env: Mapping[str, str]) -> None:
    """Run *cmd* with its output captured; a failure raises with that output."""
    result = subprocess.run(
        list(cmd),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    if result.returncode != 0:
        raise _HookFailed(result.returncode, result.stdout.decode("utf-8", "replace"))


def _quiet_runner(
    cmd: Sequence[str], cwd: str | None = None, extra_environ: Mapping[str, str] | None = None
) -> None:
    """Run a hook with its output captured: the library never writes to the terminal."""
    _run_captured(cmd, cwd, {**os.environ, **(extra_environ or {})})


def _offline_runner(
    cmd: Sequence[str], cwd: str | None = None, extra_environ: Mapping[str, str] | None = None
) -> None:
    """Run a hook as ``monorepo build`` does: captured, offline, in a network namespace."""
    env = offline_environ(os.environ)
    _run_captured([*network_isolation(), *cmd], cwd, {**env, **(extra_environ or {})})


def _has_pip() -> bool:
    """Whether this interpreter's pip can fill another environment (``--python``, pip 22.3+)."""
    try:
        from pip import __version__
    except ImportError:
        return False
    major, _, rest = __version__.partition(".")
    minor = rest.partition(".")[0]
    return major.isdigit() and minor.isdigit() and (int(major), int(minor)) >= (22, 3)


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

        spec = "\n".join(["env 2", sys.version, *sorted(requires), "--", *self.index_urls])
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
            # An empty environment filled by this interpreter's pip (``--python``) when it
            # has one: faster than ensurepip, and without the setuptools ensurepip brings
            # along, which would satisfy ``setuptools>=42`` with a version the build never
            # uses (and whose backend asks for ``wheel``).
            own_pip = _has_pip()
            try:
                venv.EnvBuilder(with_pip=not own_pip, clear=True).create(env_dir)
            except (OSError, subprocess.CalledProcessError) as error:
                raise MetadataError(
                    f"{label}: could not create a build environment in {env_dir}: {error}."
                ) from error
            pip = (
                [sys.executable, "-m", "pip", "--python", str(_venv_python(env_dir))]
                if own_pip
                else [str(_venv_python(env_dir)), "-m", "pip"]
            )
            command = [
                *pip,
                "install",
                "--upgrade",
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
            notes: list[str] = []
            try:
                with RELAY.installed(), RELAY.collecting(notes):
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
            finally:
                for note in notes:
                    self.reporter.message("debug", f"{what}: {backend} warned: {note}")
            try:
                return (Path(out) / dist_info / "METADATA").read_bytes()
            except OSError as error:
                raise MetadataError(
                    f"{what}: the build backend {backend} wrote no METADATA in {dist_info}."
                ) from error

    def build_requirements(
        self, source_dir: Path, build: BuildSystem, *, what: str, identity: str
    ) -> tuple[str, ...] | None:
        """What the backend's ``get_requires_for_build_wheel`` adds to *build*'s requirements.

        Asked the way ``monorepo build`` asks it: in an environment holding the static
        requirements (:meth:`python`), offline and in a network namespace when the system
        allows one (:mod:`monorepo._core.isolation`), so the answer is the one the build
        will get.  The answer is remembered per tree (*identity*, its tree hash), backend, requirements, interpreter
        and ``PATH`` (meson-python's depends on the programs found there).  Returns the
        requirements not already among the static ones, sorted; None (with a warning)
        when the hook fails: the lock then holds the static ones only, and the build
        names what is missing.
        """
        import json

        from packaging.requirements import InvalidRequirement, Requirement
        from pyproject_hooks import BackendUnavailable, BuildBackendHookCaller, HookMissing

        requires = sorted(str(r) for r in build.requires)
        spec = json.dumps(
            [
                "requires 2",
                identity,
                build.backend,
                list(build.backend_path),
                requires,
                sys.version,
                os.environ.get("PATH", ""),
                list(self.index_urls),
            ]
        )
        memo = self.envs / "requires" / f"{hashlib.sha256(spec.encode()).hexdigest()[:32]}.json"
        try:
            return tuple(json.loads(memo.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            pass
        python = str(self.python(requires, label=what)) if requires else sys.executable
        hooks = BuildBackendHookCaller(
            str(source_dir),
            build.backend,
            backend_path=list(build.backend_path) or None,
            runner=_offline_runner,
            python_executable=python,
        )
        notes: list[str] = []
        try:
            with RELAY.installed(), RELAY.collecting(notes):
                asked = hooks.get_requires_for_build_wheel({})
        except _HookFailed as error:
            self.reporter.message(
                "warning",
                f"{what}: asking the build backend {build.backend} for its build requirements"
                f" failed ({error}); locking its static ones only. Its output ends with:\n"
                f"{_tail(error.output)}",
            )
            return None
        except (BackendUnavailable, HookMissing) as error:
            self.reporter.message(
                "warning",
                f"{what}: the build backend {build.backend} cannot be asked for its build"
                f" requirements ({type(error).__name__}); locking its static ones only",
            )
            return None
        finally:
            for note in notes:
                self.reporter.message("debug", f"{what}: {build.backend} warned: {note}")
        static = {str(r) for r in build.requires}
        extra: set[str] = set()
        for text in asked:
            try:
                req = str(Requirement(text))
            except InvalidRequirement as error:
                raise MetadataError(
                    f"{what}: the build backend {build.backend} asked for {text!r}, which is not"
                    f" a PEP 508 requirement ({error}); give the package an overlay rule with"
                    " build-requires."
                ) from None
            if req not in static:
                extra.add(req)
        found = tuple(sorted(extra))
        write_text_if_changed(memo, json.dumps(list(found)))
        return found
