"""A build environment: a venv holding the wheels one build needs, all built from duni/.

``monorepo build`` never downloads a wheel, and no pip is involved: the venv is made
with ``python -m venv --without-pip`` from the host interpreter, and every wheel
that goes into it was built by us from ``duni/`` and is installed by the
``installer`` library running in *our* process (the venv itself starts empty).

The venv is persistent (``duni-build/<target>/envs/<dir>``) so a rebuild does not
reinstall everything: ``monorepo-installed.json`` in it records which wheel (by
sha256) each distribution was installed from; :meth:`BuildEnv.sync` removes what
is no longer wanted, and installing a different wheel of the same distribution
first removes the old one's files (from its ``RECORD``).  A venv made by another
interpreter is recreated.

Offline guard
-------------
The venv's site-packages holds a ``.pth`` file importing a tiny module that, when
``MONOREPO_BUILD_OFFLINE`` names a file, installs an audit hook (PEP 578): any
Python in the build that connects a non-Unix socket or resolves a host name gets
an immediate ``OSError`` *and* the attempt is appended to that file, so the
builder fails the build even when a backend catches the error and carries on.
Non-Python programs are kept off the network by the builder (a network namespace
or a dead proxy; see :mod:`monorepo.building.builder`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
from packaging.utils import canonicalize_name, parse_wheel_filename

from monorepo._core.atomic import write_text_if_changed
from monorepo.errors import BuildError

__all__ = ["OFFLINE_ENV", "BuildEnv"]

OFFLINE_ENV = "MONOREPO_BUILD_OFFLINE"
"""Environment variable naming the file where blocked network attempts are recorded."""

_STATE = "monorepo-installed.json"
_GUARD_MODULE = "_monorepo_offline"
_GUARD_PTH = "_monorepo_offline.pth"
_GUARD_SOURCE = f'''\
"""Installed by monorepo build: refuse network access while {OFFLINE_ENV} is set."""

import os
import sys

_LOG = os.environ.get("{OFFLINE_ENV}")
_EVENTS = frozenset(
    (
        "socket.connect",
        "socket.sendto",
        "socket.sendmsg",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
    )
)


def _hook(event, args):
    if event not in _EVENTS:
        return
    if event.startswith("socket.connect") or event.startswith("socket.send"):
        family = getattr(args[0], "family", None)
        if family is not None and int(family) == 1:  # AF_UNIX stays on this machine
            return
        target = args[1] if len(args) > 1 else None
    else:
        target = args[0] if args else None
    message = "network access is disabled during monorepo build (%s %r)" % (event, target)
    try:
        with open(_LOG, "a", encoding="utf-8") as fh:
            fh.write("%s pid %d: %s\\n" % (message, os.getpid(), " ".join(sys.argv)[:200]))
    except OSError:
        pass
    raise OSError(101, message)


if _LOG:
    sys.addaudithook(_hook)
'''


def file_sha256(path: Path) -> str:
    """sha256 hex of a file (a wheel), read in large blocks by hashlib itself."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class BuildEnv:
    """One venv at *root* made from the interpreter *python* (default: this one)."""

    def __init__(self, root: Path, *, python: str | None = None) -> None:
        self.root = root
        self.base_python = python or sys.executable
        self._scheme: dict[str, str] | None = None

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    # ------------------------------------------------------------------ state

    def _state_path(self) -> Path:
        return self.root / _STATE

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self._state_path().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_state(self, data: Mapping[str, Any]) -> None:
        write_text_if_changed(self._state_path(), json.dumps(data, indent=2, sort_keys=True) + "\n")

    def installed(self) -> dict[str, str]:
        """Distribution name -> sha256 of the wheel it was installed from."""
        packages = self._read_state().get("packages", {})
        return {str(k): str(v) for k, v in packages.items()} if isinstance(packages, dict) else {}

    # --------------------------------------------------------------- creation

    def ensure(self) -> bool:
        """Create the venv unless a usable one made by the same interpreter exists.

        Returns True when it was (re)created, i.e. starts empty.
        """
        state = self._read_state()
        if (
            self.python.exists()
            and (self.root / "pyvenv.cfg").is_file()
            and state.get("python") == self.base_python
        ):
            self._install_guard()
            return False
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [self.base_python, "-m", "venv", "--without-pip", str(self.root)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise BuildError(
                f"cannot create the build environment {self.root} with {self.base_python}:"
                f" {proc.stderr.strip() or proc.stdout.strip()}; check that the interpreter has"
                " its venv module (Debian: apt-get install python3-venv)"
            )
        self._scheme = None
        self._write_state({"python": self.base_python, "packages": {}})
        self._install_guard()
        return True

    def scheme(self) -> dict[str, str]:
        """The venv's install scheme, as ``installer`` wants it (asked of the venv's Python)."""
        if self._scheme is None:
            code = (
                "import json, sys, sysconfig; p = sysconfig.get_paths();"
                " print(json.dumps([p, '%d.%d' % sys.version_info[:2]]))"
            )
            proc = subprocess.run(
                [str(self.python), "-I", "-c", code], capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                raise BuildError(
                    f"the build environment {self.root} does not run ({proc.stderr.strip()});"
                    f" delete {self.root} and build again"
                )
            paths, version = json.loads(proc.stdout)
            self._scheme = {
                "purelib": paths["purelib"],
                "platlib": paths["platlib"],
                "headers": str(Path(paths["include"]) / "site" / f"python{version}"),
                "scripts": paths["scripts"],
                "data": paths["data"],
            }
        return self._scheme

    def _install_guard(self) -> None:
        site = Path(self.scheme()["purelib"])
        site.mkdir(parents=True, exist_ok=True)
        write_text_if_changed(site / f"{_GUARD_MODULE}.py", _GUARD_SOURCE)
        write_text_if_changed(site / _GUARD_PTH, f"import {_GUARD_MODULE}\n")

    # ----------------------------------------------------------- installation

    def install(self, wheel: Path) -> bool:
        """Install *wheel* (replacing another wheel of the same distribution).

        Returns False when this very wheel is already installed.
        """
        name = canonicalize_name(parse_wheel_filename(wheel.name)[0])
        digest = file_sha256(wheel)
        state = self._read_state()
        packages: dict[str, str] = dict(state.get("packages", {}))
        if packages.get(name) == digest:
            return False
        self.uninstall(name)
        destination = SchemeDictionaryDestination(
            self.scheme(),
            interpreter=str(self.python),
            script_kind="posix",
            bytecode_optimization_levels=(),
        )
        try:
            with WheelFile.open(wheel) as source:
                install(source, destination, {"INSTALLER": b"monorepo\n"})
        except Exception as error:  # installer raises several unrelated types
            raise BuildError(
                f"cannot install {wheel.name} into the build environment {self.root}: {error}"
            ) from error
        packages[name] = digest
        state["packages"] = packages
        self._write_state(state)
        return True

    def sync(self, wheels: Sequence[Path]) -> None:
        """Make the venv hold exactly *wheels*: others are uninstalled, missing ones installed."""
        wanted = {canonicalize_name(parse_wheel_filename(w.name)[0]): w for w in wheels}
        for name in sorted(set(self.installed()) - wanted.keys()):
            self.uninstall(name)
        for name in sorted(wanted):
            self.install(wanted[name])

    def uninstall(self, name: str) -> None:
        """Remove every file the installed distribution *name* recorded (if installed)."""
        wanted = canonicalize_name(name)
        scheme = self.scheme()
        for site in dict.fromkeys((scheme["purelib"], scheme["platlib"])):
            base = Path(site)
            if not base.is_dir():
                continue
            for info in base.glob("*.dist-info"):
                if canonicalize_name(info.name.split("-", 1)[0]) != wanted:
                    continue
                self._remove_recorded(base, info)
        state = self._read_state()
        packages = dict(state.get("packages", {}))
        if packages.pop(wanted, None) is not None:
            state["packages"] = packages
            self._write_state(state)

    def _remove_recorded(self, site: Path, info: Path) -> None:
        root = self.root.resolve()
        dirs: set[Path] = set()
        try:
            with (info / "RECORD").open(newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
        except OSError:
            rows = []
        for row in rows:
            if not row:
                continue
            path = (site / row[0]).resolve()
            if not path.is_relative_to(root):
                continue
            path.unlink(missing_ok=True)
            dirs.add(path.parent)
        shutil.rmtree(info, ignore_errors=True)
        for directory in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            while directory != site and directory.is_relative_to(site):
                try:
                    pycache = directory / "__pycache__"
                    if pycache.is_dir():
                        shutil.rmtree(pycache)
                    directory.rmdir()
                except OSError:
                    break
                directory = directory.parent

    def environ(self, base: Mapping[str, str]) -> dict[str, str]:
        """*base* with the venv activated (PATH, VIRTUAL_ENV) and no outside Python paths."""
        env = {k: v for k, v in base.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["VIRTUAL_ENV"] = str(self.root)
        env["PATH"] = os.pathsep.join([str(self.bin), base.get("PATH", os.defpath)])
        env["PYTHONNOUSERSITE"] = "1"
        return env
