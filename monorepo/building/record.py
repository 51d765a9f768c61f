"""The build record, ``duni-build/<target>/build.toml``: each wheel, its sha256 and inputs.

It is what a build promises: built from these inputs (:class:`InputKey`), the wheel has
this sha256.  ``monorepo verify --rebuild`` rebuilds and compares against it, on this
machine or (``--against``) on another one.  The file is written after every build,
sorted, without times or absolute paths, atomically; a package built earlier and not
built this time keeps its entry while it is still in ``workspace.toml``.

:class:`KeyMaker` gathers the values the pure :mod:`~monorepo.building.inputkey` needs:
the tree hash of ``duni/<dir>``, the compiler's ``--version``, the sysroot's facts, the
build-closure wheels' hashes.  A cache of wheels keyed by inputs uses it too.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sysconfig
import threading
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import tomlkit
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from monorepo._core.atomic import write_text_if_changed
from monorepo.building.buildenv import file_sha256
from monorepo.building.inputkey import InputKey, TargetIdentity, ToolchainIdentity, sysroot_identity
from monorepo.building.plan import Package
from monorepo.building.scheduler import Scheduler
from monorepo.building.targets import Variant
from monorepo.errors import BuildError
from monorepo.sysroot.discover import facts_text
from monorepo.sysroot.info import SysrootInfo

__all__ = [
    "RECORD_NAME",
    "BuildRecord",
    "KeyMaker",
    "RecordEntry",
    "read_build_record",
    "updated_build_record",
    "write_build_record",
    "write_records",
]

RECORD_NAME = "build.toml"
_FORMAT = 1


# ------------------------------------------------------------------------ the key


class KeyMaker:
    """The input keys of one build: compilers asked and wheels hashed once each."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self._lock = threading.Lock()
        self._compilers: dict[str, ToolchainIdentity] = {}
        self._hashes: dict[Path, str] = {}
        self._sysroots: dict[Path, str] = {}  # by root

    def compiler(self, pkg: Package, variant: Variant) -> str:
        """The C compiler a build of *pkg* for *variant* runs: the package's ``CC``
        (overlay build-env), the cross compiler, ``$CC``, else Python's own."""
        if "CC" in pkg.build_env:
            cc = pkg.build_env["CC"]
        elif variant.sysroot is not None:
            cc = variant.sysroot.cross_env(variant.target.cc)["CC"]
        else:
            cc = self.environ.get("CC") or str(sysconfig.get_config_var("CC") or "cc")
        words = shlex.split(cc)
        return words[0] if words else "cc"

    def toolchain(self, program: str) -> ToolchainIdentity:
        """*program* resolved on ``PATH`` and identified by its ``--version``."""
        with self._lock:
            known = self._compilers.get(program)
        if known is not None:
            return known
        path = shutil.which(program, path=self.environ.get("PATH")) or program
        try:
            proc = subprocess.run(
                [path, "--version"],
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=60,
                env={**self.environ, "LC_ALL": "C"},
                check=False,
            )
            output = proc.stdout if proc.returncode == 0 else b"exit %d" % proc.returncode
        except (OSError, subprocess.TimeoutExpired) as error:
            output = f"not runnable: {type(error).__name__}".encode()
        identity = ToolchainIdentity.from_version_output(path, output)
        with self._lock:
            self._compilers[program] = identity
        return identity

    def wheel_sha256(self, wheel: Path) -> str:
        with self._lock:
            known = self._hashes.get(wheel)
        if known is None:
            known = file_sha256(wheel)
            with self._lock:
                self._hashes[wheel] = known
        return known

    def sysroot(self, info: SysrootInfo) -> str:
        """The identity of the sysroot's facts: its marker, or what discovery read."""
        if info.root not in self._sysroots:
            self._sysroots[info.root] = sysroot_identity(facts_text(info))
        return self._sysroots[info.root]

    def toolchain_of(self, pkg: Package, variant: Variant) -> ToolchainIdentity | None:
        """The compilers a build of *pkg* runs: none for a pure package; the C compiler;
        for a Rust extension (its lock records crates) rustc and cargo too, the C
        compiler being its linker."""
        if not (pkg.c_extension or pkg.crates):
            return None
        cc = self.toolchain(self.compiler(pkg, variant))
        if not pkg.crates:
            return cc
        parts = [cc, self.toolchain("rustc"), self.toolchain("cargo")]
        return ToolchainIdentity(
            compiler=" ".join(t.compiler for t in parts),
            version_digest=hashlib.sha256(
                "\n".join(t.version_digest for t in parts).encode()
            ).hexdigest(),
        )

    def key(
        self,
        pkg: Package,
        variant: Variant,
        tree_hash: str,
        wheels: Iterable[Path],
        *,
        config_settings: Mapping[str, str | Sequence[str]] | None = None,
    ) -> InputKey:
        """The key of *pkg* built for *variant* from the tree *tree_hash* (``duni/<dir>``
        after patches) in a venv of *wheels*.  A package without a C extension is keyed
        without a toolchain: no compiler takes part in its build."""
        target = variant.target
        return InputKey.create(
            package=str(pkg.name),
            version=str(pkg.version),
            source_tree=tree_hash,
            target=TargetIdentity(
                name=target.name,
                python=target.python,
                platform=target.platform,
                machine=target.machine,
                implementation=target.implementation,
            ),
            toolchain=self.toolchain_of(pkg, variant),
            sysroot=None if variant.sysroot is None else self.sysroot(variant.sysroot),
            build_wheels={w.name: self.wheel_sha256(w) for w in wheels},
            config_settings=config_settings,
            build_env=pkg.build_env,
        )


# --------------------------------------------------------------------- the record


@dataclass(frozen=True)
class RecordEntry:
    """One package of a build record."""

    dir: str
    name: str
    version: str
    wheel: str
    sha256: str
    inputs: InputKey


@dataclass(frozen=True)
class BuildRecord:
    """A target's build record: its packages by directory."""

    target: str
    packages: Mapping[str, RecordEntry]

    def render(self) -> str:
        """The text of ``build.toml``: the same record always gives the same bytes."""
        doc = tomlkit.document()
        doc.add(
            tomlkit.comment(
                "Written by `monorepo build`: each wheel, its sha256 and the key of its inputs."
            )
        )
        doc.add(tomlkit.comment("`monorepo verify --rebuild` rebuilds and compares against it."))
        doc.add("format", _FORMAT)
        doc.add("target", self.target)
        packages = tomlkit.table(is_super_table=True)
        for d in sorted(self.packages):
            e = self.packages[d]
            table = tomlkit.table()
            table.add("name", e.name)
            table.add("version", e.version)
            table.add("wheel", e.wheel)
            table.add("sha256", e.sha256)
            table.add("inputs", e.inputs.to_toml_table())
            packages.add(d, table)
        doc.add("packages", packages)
        return tomlkit.dumps(doc)


def read_build_record(path: Path) -> BuildRecord:
    """The record at *path*; :class:`BuildError` naming the file when it is missing or
    malformed (or its keys do not hash to their recorded digests)."""
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuildError(
            f"{path} does not exist: run `monorepo build` first (it writes the record)"
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise BuildError(f"{path} cannot be read as a build record ({error})") from None
    if data.get("format") != _FORMAT or not isinstance(data.get("packages", {}), dict):
        raise BuildError(
            f"{path} is not a build record of format {_FORMAT}; rebuild to write it again"
        )
    entries: dict[str, RecordEntry] = {}
    for d, raw in data.get("packages", {}).items():
        try:
            entries[d] = RecordEntry(
                dir=d,
                name=str(raw["name"]),
                version=str(raw["version"]),
                wheel=str(raw["wheel"]),
                sha256=str(raw["sha256"]),
                inputs=InputKey.from_toml_table(raw["inputs"], where=str(path)),
            )
        except (KeyError, TypeError) as error:
            raise BuildError(
                f"{path}: the entry of {d} lacks {error}; rebuild to write it again"
            ) from None
        _check_names(path, entries[d])
    return BuildRecord(target=str(data.get("target", "")), packages=entries)


def _check_names(path: Path, e: RecordEntry) -> None:
    """A record may come from another machine (``--against``): its names are used to find
    files, so a wheel name must be a wheel's file name and a sha256 a sha256."""
    try:
        parse_wheel_filename(e.wheel)
        plain = PurePosixPath(e.wheel).name == e.wheel and "\\" not in e.wheel
    except InvalidWheelFilename:
        plain = False
    if not plain or e.dir in ("", ".", "..") or "/" in e.dir:
        raise BuildError(
            f"{path}: the entry {e.dir!r} names the wheel {e.wheel!r}, which is not a wheel's"
            " file name; the record is damaged or was not written by monorepo"
        )
    if len(e.sha256) != 64 or any(c not in "0123456789abcdef" for c in e.sha256):
        raise BuildError(f"{path}: the entry of {e.dir} has no sha256 ({e.sha256!r})")


def write_build_record(path: Path, record: BuildRecord) -> bool:
    """Write *record* at *path* atomically; False when the file already says the same."""
    return write_text_if_changed(path, record.render())


def updated_build_record(
    path: Path, target: str, entries: Iterable[RecordEntry], keep: Iterable[str]
) -> BuildRecord:
    """The record at *path* with *entries* replaced or added, and only the directories
    in *keep* (what workspace.toml still describes) kept of the others.  An unreadable
    old record is started afresh: it only held earlier builds."""
    try:
        old = dict(read_build_record(path).packages) if path.exists() else {}
    except BuildError:
        old = {}
    still = set(keep)
    merged = {d: e for d, e in old.items() if d in still}
    merged.update({e.dir: e for e in entries})
    return BuildRecord(target=target, packages=merged)


def write_records(scheduler: Scheduler, makers: KeyMaker | None = None) -> None:
    """After a run: each variant's ``build.toml`` with the packages built or found up to
    date, keyed by what went into them."""
    maker = makers if makers is not None else KeyMaker()
    by_variant: dict[int, list[RecordEntry]] = {}
    for node, status in sorted(scheduler.status.items()):
        if status not in ("built", "skipped", "cached"):
            continue
        index, d = node
        pkg = scheduler.pkgs[d]
        wheel = scheduler.wheels[node]
        needs = sorted(scheduler.needs(node))
        key = maker.key(
            pkg,
            scheduler.variants[index],
            scheduler.tree_key(d),
            [scheduler.wheels[(0, n)] for n in needs if (0, n) in scheduler.wheels],
            config_settings=pkg.config_settings_for(scheduler.variants[index].target),
        )
        by_variant.setdefault(index, []).append(
            RecordEntry(
                dir=d,
                name=str(pkg.name),
                version=str(pkg.version),
                wheel=wheel.name,
                sha256=maker.wheel_sha256(wheel),
                inputs=key,
            )
        )
    for index, entries in sorted(by_variant.items()):
        variant = scheduler.variants[index]
        path = variant.root / RECORD_NAME
        write_build_record(
            path, updated_build_record(path, variant.target.name, entries, scheduler.pkgs)
        )
