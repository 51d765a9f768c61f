"""A build on a cluster worker: inputs unpacked by content address, checked, built, sent back.

:func:`run_build` is the function a Dask task runs (:mod:`monorepo.building.cluster`
submits it).  It receives only bytes and descriptions, never a path of the client's
machine to read: the source tree as a tar whose tree hash must equal the one the client
computed, and each build-closure wheel whose sha256 must equal its name.  So a worker
needs no shared file system and no network, only what the build runs on: the same
monorepo and Python as the client, the same kind of machine, and for a cross target the
cross compiler and a sysroot with the same digest (found where the client has it or in
``MONOREPO_SYSROOTS``).  Whatever is wrong is returned as a failed build naming the
worker, never raised: an exception would make Dask retry a build that cannot succeed.

The worker's scratch directory is ``MONOREPO_WORKER_DIR`` when set (keep it to reuse
build venvs across runs), else ``monorepo/`` in the Dask worker's local directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shlex
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import filelock

from monorepo._core.atomic import write_bytes
from monorepo._core.fstree import remove_tree
from monorepo._core.isolation import network_isolation
from monorepo._core.version import VERSION
from monorepo._core.warnrelay import RELAY
from monorepo.building.buildenv import file_sha256
from monorepo.building.hooks import Built, Failed, build_one
from monorepo.building.plan import Graph, Package
from monorepo.building.targets import Variant
from monorepo.errors import MonorepoError
from monorepo.project.config import ProjectConfig
from monorepo.project.targets import host_target
from monorepo.sources.crates import CRATES_DIR
from monorepo.sources.treehash import tree_hash
from monorepo.sysroot.discover import facts_text, read_sysroot
from monorepo.sysroot.info import SysrootError, SysrootInfo

__all__ = [
    "SYSROOTS_ENV",
    "WORKER_DIR_ENV",
    "RemoteJob",
    "RemoteOutcome",
    "build_compiler",
    "compiler_identity",
    "machine_identity",
    "pack_tree",
    "run_build",
    "sysroot_digest",
    "target_resource",
]

SYSROOTS_ENV = "MONOREPO_SYSROOTS"
"""Where a worker looks for a cross target's sysroot: directories, ``os.pathsep``-separated,
each a sysroot or a directory of sysroots."""

WORKER_DIR_ENV = "MONOREPO_WORKER_DIR"
"""A worker's scratch directory (trees, build venvs), instead of Dask's local directory."""


# ------------------------------------------------------------------ identities


def target_resource(platform: str, machine: str) -> str:
    """The Dask resource a worker advertises to take a cross target's builds."""
    return f"target-{platform}-{machine}"


def machine_identity() -> tuple[str, str, str, str]:
    """What a worker must share with the client: monorepo, Python, platform, machine.

    Build backends run on the build machine's interpreter and the build-machine wheels of
    a venv came from the client's set, so a worker of another kind would build other wheels.
    """
    host = host_target()
    return (
        VERSION,
        f"{sys.version_info.major}.{sys.version_info.minor}",
        host.platform,
        host.machine,
    )


def sysroot_digest(root: Path) -> str:
    """A sysroot's identity: the sha256 of its facts -- its ``monorepo-sysroot.toml``
    (every Debian package in it with its version, and the mirror it came from) when
    ``python -m monorepo.sysroot`` made it, else what discovery reads from the tree
    (:func:`monorepo.sysroot.discover.facts_text`)."""
    return hashlib.sha256(facts_text(read_sysroot(root)).encode("utf-8")).hexdigest()


def _is_sysroot(path: Path) -> bool:
    try:
        read_sysroot(path)
    except (OSError, SysrootError):
        return False
    return True


def build_compiler(pkg: Package, variant: Variant, environ: Mapping[str, str]) -> str | None:
    """The C compiler a build of *pkg* runs, when one does (a C extension, a cross build):
    the overlay's ``CC``, the target's cross compiler, ``$CC``, else Python's own."""
    if "CC" in pkg.build_env:
        cc = pkg.build_env["CC"]
    elif variant.sysroot is not None:
        cc = variant.target.cc or f"{variant.sysroot.triplet}-gcc"
    elif pkg.c_extension:
        cc = environ.get("CC") or str(sysconfig.get_config_var("CC") or "cc")
    else:
        return None
    words = shlex.split(cc)
    return words[0] if words else None


def compiler_identity(cc: str) -> str:
    """The first line of ``cc --version``: what must match between client and worker."""
    try:
        proc = subprocess.run(
            [*shlex.split(cc), "--version"],
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except OSError:
        return ""
    lines = proc.stdout.splitlines()
    return lines[0].strip() if proc.returncode == 0 and lines else ""


# ----------------------------------------------------------------- source tree


def pack_tree(root: Path) -> bytes:
    """*root* as an uncompressed tar, the same bytes on every machine for the same tree.

    Names are sorted, times, owners and modes normalised to what the tree hash sees
    (644 or 755, symlinks, empty directories), so the tree hash of the unpacked copy is
    the tree hash of *root*: the worker checks exactly that.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        stack = [""]
        while stack:
            rel = stack.pop()
            base = root / rel if rel else root
            names = sorted(os.listdir(base))
            if rel and not names:
                tar.addfile(_info(rel, tarfile.DIRTYPE, 0o755))
            for name in reversed(names):
                child = f"{rel}/{name}" if rel else name
                path = root / child
                st = path.lstat()
                if path.is_symlink():
                    info = _info(child, tarfile.SYMTYPE, 0o777)
                    info.linkname = os.readlink(path)
                    tar.addfile(info)
                elif path.is_dir():
                    stack.append(child)
                else:
                    info = _info(child, tarfile.REGTYPE, 0o755 if st.st_mode & 0o111 else 0o644)
                    info.size = st.st_size
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
    return buffer.getvalue()


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


# ------------------------------------------------------------------- the task


@dataclass(frozen=True)
class RemoteJob:
    """What the client sends along with the content-addressed inputs."""

    config: ProjectConfig
    pkg: Package
    variant: Variant
    graph: Graph
    needs: frozenset[str]
    wheels: Mapping[str, tuple[str, str]]
    """Build-closure wheels by dir: (file name, sha256)."""
    tree: str
    isolate: bool | None
    machine: tuple[str, str, str, str]
    """The client's :func:`machine_identity`."""
    sysroot_digest: str = ""
    compiler: str = ""
    """The client's :func:`compiler_identity` of :func:`build_compiler`."""
    crates: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Rust crates the build vendors, by directory under ``duni/.crates``: tree hash."""


@dataclass(frozen=True)
class RemoteOutcome:
    """What comes back: the wheel's bytes and sha256, or why not; always the log."""

    kind: str
    """``built``, ``need-more`` or ``failed``."""
    worker: str
    log: bytes = b""
    wheel_name: str = ""
    wheel: bytes = b""
    sha256: str = ""
    dynamic: tuple[str, ...] = ()
    seconds: float = 0.0
    reason: str = ""


def run_build(
    job: RemoteJob,
    tree: bytes,
    wheels: Mapping[str, bytes],
    crates: Mapping[str, bytes] | None = None,
) -> RemoteOutcome:
    """The Dask task: build *job* from *tree*, *wheels* and *crates* (content-addressed
    bytes: tars of trees, wheels)."""
    worker = _worker_address()
    try:
        return _run(job, tree, wheels, crates or {}, worker)
    except (MonorepoError, OSError) as error:
        return RemoteOutcome("failed", worker, reason=f"on worker {worker}: {error}")


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def _scratch() -> Path:
    override = os.environ.get(WORKER_DIR_ENV)
    if override:
        return Path(override).expanduser().resolve()
    try:
        from distributed import get_worker

        return Path(get_worker().local_directory) / "monorepo"
    except (ImportError, ValueError):
        return Path(tempfile.gettempdir()) / f"monorepo-worker-{os.getuid()}"


def _failed(worker: str, reason: str) -> RemoteOutcome:
    return RemoteOutcome("failed", worker, reason=f"on worker {worker}: {reason}")


def _run(
    job: RemoteJob,
    tree: bytes,
    wheels: Mapping[str, bytes],
    crates: Mapping[str, bytes],
    worker: str,
) -> RemoteOutcome:
    mine = machine_identity()
    if mine != job.machine:
        return _failed(
            worker,
            f"this worker runs monorepo {mine[0]} on Python {mine[1]} ({mine[2]} {mine[3]})"
            f" but the client runs monorepo {job.machine[0]} on Python {job.machine[1]}"
            f" ({job.machine[2]} {job.machine[3]}); start the workers from the same"
            " installation as the client (docs/build.md, building on a cluster)",
        )
    variant = job.variant
    sysroot: SysrootInfo | None = None
    if variant.sysroot is not None:
        found = _find_sysroot(variant.sysroot.root, job.sysroot_digest)
        if isinstance(found, str):
            return _failed(worker, found)
        sysroot = found
    cc = build_compiler(job.pkg, variant, os.environ)
    if cc is not None and compiler_identity(cc) != job.compiler:
        have = compiler_identity(cc) or "not installed"
        return _failed(
            worker,
            f"the C compiler of {job.pkg.label} for {variant.target.name} ({cc}) is {have!r}"
            f" here but {job.compiler!r} on the client, so the wheel would not be the one its"
            " key promises; install the same compiler on the workers",
        )
    base = _scratch()
    source = base / "trees" / job.tree.removeprefix("sha256:")
    problem = _unpack(tree, source / job.pkg.dir, job.tree, what=f"the source of {job.pkg.label}")
    for name, digest in sorted(job.crates.items()):
        problem = problem or _unpack(
            crates[name], source / CRATES_DIR / name, digest, what=f"crate {name}"
        )
    if problem:
        return _failed(worker, problem)
    available: dict[str, Path] = {}
    for d, (name, sha) in sorted(job.wheels.items()):
        data = wheels[d]
        if hashlib.sha256(data).hexdigest() != sha:
            return _failed(worker, f"the wheel {name} arrived damaged (sha256 differs)")
        path = base / "wheels" / sha / name
        if not path.is_file():
            write_bytes(path, data)
        available[d] = path
    root = base / "builds" / variant.target.name
    local = dataclasses.replace(variant, root=root, wheels=root / "wheels", sysroot=sysroot)
    config = dataclasses.replace(job.config, duni=source)
    isolation = [] if job.isolate is False else network_isolation()
    (root / "locks").mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(root / "locks" / f"{job.pkg.dir}.lock"), RELAY.installed():
        outcome = build_one(config, job.pkg, local, job.graph, set(job.needs), available, isolation)
    log_path = local.logs / f"{job.pkg.dir}.log"
    log = log_path.read_bytes() if log_path.is_file() else b""
    if isinstance(outcome, Built):
        data = outcome.wheel.read_bytes()
        sha = file_sha256(outcome.wheel)
        outcome.wheel.unlink(missing_ok=True)
        return RemoteOutcome(
            "built",
            worker,
            log=log,
            wheel_name=outcome.wheel.name,
            wheel=data,
            sha256=sha,
            dynamic=tuple(sorted(outcome.dynamic)),
            seconds=outcome.seconds,
        )
    if isinstance(outcome, Failed):
        return RemoteOutcome(
            "failed", worker, log=log if outcome.log else b"", reason=outcome.reason
        )
    return RemoteOutcome("need-more", worker, dynamic=tuple(sorted(outcome.dynamic)))


def _unpack(tree: bytes, target: Path, digest: str, *, what: str) -> str | None:
    """Unpack the tar *tree* as *target* unless there (checked against the tree hash
    *digest* first), or say why it cannot be used."""
    from monorepo.extract.archive import extract_archive

    target.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(target) + ".lock"):
        if target.is_dir():
            return None
        staging = target.parent / f".staging-{target.name}-{os.getpid()}-{time.monotonic_ns()}"
        try:
            extract_archive(tree, staging / "t", package=what, name="tree.tar", layout="tree")
            actual = tree_hash(staging / "t")
            if actual != digest:
                return f"{what} arrived as tree {actual}, not {digest}; it was damaged on the way"
            os.rename(staging / "t", target)
        finally:
            remove_tree(staging, ignore_errors=True)
    return None


def _find_sysroot(where: Path, digest: str) -> SysrootInfo | str:
    """The sysroot with *digest*: at the client's path, else under ``MONOREPO_SYSROOTS``."""
    candidates = [where]
    for entry in filter(None, os.environ.get(SYSROOTS_ENV, "").split(os.pathsep)):
        path = Path(entry)
        candidates.append(path)
        if path.is_dir() and not _is_sysroot(path):
            candidates += sorted(p for p in path.iterdir() if p.is_dir())
    seen: list[str] = []
    for path in candidates:
        if not path.is_dir():
            continue
        try:
            if sysroot_digest(path) != digest:
                seen.append(str(path))
                continue
            return read_sysroot(path)
        except (OSError, SysrootError):
            continue
    others = f" (other sysroots there: {', '.join(seen)})" if seen else ""
    return (
        f"no sysroot with digest {digest[:16]} at {where} or in ${SYSROOTS_ENV}{others};"
        " copy the client's sysroot to the worker (same path, or a directory named by"
        f" {SYSROOTS_ENV}) or stop advertising the target on this worker"
    )
