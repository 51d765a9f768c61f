"""Making a sysroot: download what the closure names, unpack it in a staging directory, rename.

A second run with the same request finds ``monorepo-sysroot.toml`` and does nothing (not
even network access); ``refresh=True`` re-reads the mirror and rebuilds if a version
changed.  See :mod:`monorepo.sysroot` for the steps.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from monorepo._core.atomic import write_bytes
from monorepo._core.fstree import remove_tree
from monorepo._core.paths import CacheDir
from monorepo._core.reporter import NullReporter, Reporter
from monorepo.errors import HashMismatchError, IndexClientError
from monorepo.sysroot.apt import (
    OPTIONAL_ROOTS,
    Closure,
    DebPackage,
    debian_mirror,
    parse_packages,
    parse_release,
    resolve_closure,
    root_packages,
)
from monorepo.sysroot.deb import DebWriter, decompress_member, fix_ld_scripts, unpack_deb
from monorepo.sysroot.discover import describe, read_sysroot
from monorepo.sysroot.info import (
    ARCHES,
    TOML_NAME,
    Arch,
    SysrootError,
    SysrootInfo,
    read_marker,
    render,
)

__all__ = ["DEFAULT_KEYRING", "download_debs", "make_sysroot"]

DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
_CHUNK = 1 << 16


#: (names change between releases, e.g. ``libssl3`` became ``libssl3t64``).
# --------------------------------------------------------------------------- making


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verify(data: bytes, sha256: str, size: int | None, what: str) -> None:
    if size is not None and len(data) != size:
        raise HashMismatchError(
            f"{what}: expected {size} bytes, got {len(data)}; the mirror is inconsistent"
            " (mid-sync?) -- try again later or another mirror"
        )
    if _sha256(data) != sha256:
        raise HashMismatchError(
            f"{what}: sha256 {_sha256(data)} does not match {sha256} from the signed index;"
            " try again later or another mirror"
        )


def _atomic_write(path: Path, data: bytes) -> None:
    write_bytes(path, data)


class _Fetcher:
    """Downloads from the mirror with :class:`~monorepo.index.http.HttpClient` (retries, file://)."""

    def __init__(self, mirror: str, reporter: Reporter) -> None:
        from monorepo.index.http import HttpClient

        self.mirror = mirror
        self.client = HttpClient(reporter=reporter)

    def get(self, rel: str, *, not_found_ok: bool = False) -> bytes | None:
        url = f"{self.mirror}/{rel}"
        try:
            response = self.client.get(url, not_found_ok=not_found_ok)
        except IndexClientError as e:
            raise SysrootError(f"cannot download {rel} from the Debian mirror: {e}") from e
        if response.status == 404:
            return None
        return response.body

    def stream(self, rel: str) -> bytes:
        try:
            return b"".join(self.client.stream(f"{self.mirror}/{rel}", chunk_size=_CHUNK))
        except IndexClientError as e:
            raise SysrootError(f"cannot download {rel} from the Debian mirror: {e}") from e

    def close(self) -> None:
        self.client.close()


def _check_signature(inrelease: bytes, keyring: Path | None, reporter: Reporter) -> None:
    gpgv = shutil.which("gpgv")
    if keyring is None or gpgv is None or not keyring.exists():
        reporter.message(
            "warning",
            "the Release file's signature is not checked (gpgv or the Debian archive"
            " keyring is missing); only its SHA256 list protects the download",
        )
        return
    with tempfile.NamedTemporaryFile(suffix=".InRelease") as tmp:
        tmp.write(inrelease)
        tmp.flush()
        result = subprocess.run(
            [gpgv, "--keyring", str(keyring), tmp.name],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise SysrootError(
            f"the mirror's InRelease signature does not verify against {keyring}:"
            f" {result.stderr.strip()[-400:]}; use a genuine Debian mirror, or pass"
            " --keyring for a mirror signed with another key"
        )
    reporter.message("debug", f"InRelease signature verified with {keyring}")


def _load_index(
    fetch: _Fetcher, suite: str, arch: str, cache: Path, keyring: Path | None, reporter: Reporter
) -> dict[str, DebPackage]:
    reporter.message("info", f"reading the {suite} release file")
    inrelease = fetch.get(f"dists/{suite}/InRelease", not_found_ok=True)
    if inrelease is not None:
        _check_signature(inrelease, keyring, reporter)
        text = inrelease
    else:
        plain = fetch.get(f"dists/{suite}/Release", not_found_ok=True)
        if plain is None:
            raise SysrootError(
                f"the mirror has no dists/{suite}/InRelease or Release: is '{suite}' a Debian"
                " suite this mirror carries, and is the mirror URL the directory holding"
                " dists/?"
            )
        reporter.message("warning", f"dists/{suite} has no InRelease; its signature is not checked")
        text = plain
    release = parse_release(text.decode("utf-8", "replace"))
    if suite not in (release.suite, release.codename):
        raise SysrootError(
            f"dists/{suite}/Release describes suite '{release.suite}' ({release.codename});"
            " the mirror is misconfigured"
        )
    for suffix in (".xz", ".gz", ""):
        rel = f"main/binary-{arch}/Packages{suffix}"
        if rel not in release.sha256:
            continue
        sha256, size = release.sha256[rel]
        cached = cache / "indices" / f"{sha256}-Packages{suffix}"
        if cached.exists():
            blob = cached.read_bytes()
        else:
            reporter.message("info", f"downloading {rel}")
            got = fetch.get(f"dists/{suite}/{rel}", not_found_ok=True)
            if got is None:
                continue
            _verify(got, sha256, size, f"dists/{suite}/{rel}")
            _atomic_write(cached, got)
            blob = got
        raw = decompress_member(f"Packages{suffix}", blob, rel)
        return parse_packages(raw.decode("utf-8", "replace"))
    raise SysrootError(
        f"dists/{suite}/Release lists no main/binary-{arch}/Packages index: does the suite"
        f" carry architecture '{arch}'?"
    )


def _download_debs(
    fetch: _Fetcher, packages: Sequence[DebPackage], cache: Path, reporter: Reporter, jobs: int
) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    todo: list[DebPackage] = []
    for package in packages:
        if not package.filename or not re.fullmatch(r"[0-9a-f]{64}", package.sha256):
            raise SysrootError(f"{package.name}: the Packages index gives no Filename or SHA256")
        path = cache / "debs" / f"{package.sha256}-{posixpath.basename(package.filename)}"
        paths[package.name] = path
        if not path.exists():
            todo.append(package)
    reporter.message(
        "info", f"downloading {len(todo)} packages ({len(packages) - len(todo)} cached)"
    )
    reporter.task("debs", "Downloading .debs", total=len(todo))

    def one(package: DebPackage) -> None:
        data = fetch.stream(package.filename)
        _verify(data, package.sha256, package.size or None, package.filename)
        _atomic_write(paths[package.name], data)
        reporter.advance("debs")

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for future in [pool.submit(one, p) for p in todo]:
            future.result()
    reporter.done("debs")
    return paths


def _mirror_id(mirror: str) -> str:
    """A digest of the mirror URL: the toml records which mirror without naming it."""
    return _sha256(mirror.encode())[:16]


def _matches(info: SysrootInfo, arch: str, suite: str, python: str, extra: Sequence[str]) -> bool:
    return (
        info.arch == arch
        and info.suite == suite
        and info.python == python
        and set(extra) <= set(info.extra_packages)
        and info.interpreter_path.exists()
    )


def _existing(dest: Path) -> SysrootInfo | None:
    """The sysroot this command made at *dest* before, if any; refuse anything else there."""
    marker = read_marker(dest)
    if marker is not None:
        return marker
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
        return None
    try:
        found = read_sysroot(dest)
    except SysrootError:
        found = None
    if found is not None:
        raise SysrootError(
            f"{dest} holds a sysroot this command did not make (CPython {found.python} for"
            f" {found.triplet}): monorepo build uses it as it is, but will not replace it."
            " Add system libraries to it with the tools that made it, or choose a new"
            " directory"
        )
    raise SysrootError(
        f"{dest} exists and is not a sysroot (no {TOML_NAME}, no CPython); choose an empty"
        " or new directory, or remove it"
    )


def make_sysroot(
    dest: Path,
    *,
    arch: str | None = None,
    suite: str | None = None,
    mirror: str | None = None,
    python: str | None = None,
    extra_packages: Sequence[str] = (),
    reporter: Reporter | None = None,
    refresh: bool = False,
    keyring: Path | None = DEFAULT_KEYRING,
    jobs: int = 8,
    cache_dir: Path | str | None = None,
) -> SysrootInfo:
    """Make (or keep, or add to) a Debian sysroot for CPython *python* on *arch* at *dest*.

    *arch*, *suite* and *python* default to those of the sysroot already at *dest*, else
    ``arm64``, ``bookworm`` and ``3.11``.  The *extra_packages* are added to those an
    earlier run installed (the marker records them), so re-running with other
    ``--package`` choices, or with ``--lock``, never drops what was there.  A sysroot
    already holding everything asked for is returned as is without network access,
    unless *refresh*: then the mirror is read again and the tree rebuilt only if a
    package version changed.  *dest* may be absent, empty, or an earlier sysroot of
    this command; anything else is refused.  Raises :class:`SysrootError` (and
    :class:`~monorepo.errors.HashMismatchError` for a download that does not match the
    signed index).  Indexes and ``.deb`` files are kept in *cache_dir*'s ``debian``
    (default: ``MONOREPO_CACHE_DIR``, else the user cache).
    """
    from filelock import FileLock

    reporter = reporter or NullReporter()
    if arch is not None and arch not in ARCHES:
        raise SysrootError(
            f"architecture '{arch}' is not supported; choose one of {', '.join(ARCHES)}"
        )
    if python is not None and not re.fullmatch(r"3\.[0-9]+", python):
        raise SysrootError(f"python '{python}' must be a major.minor version such as 3.11")
    dest = dest.absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.parent / f".{dest.name}.lock")):
        existing = _existing(dest)
        arch = arch or (existing.arch if existing else "arm64")
        suite = suite or (existing.suite if existing else "bookworm")
        python = python or (existing.python if existing else "3.11")
        kept = existing.extra_packages if existing else ()
        extra = sorted({*kept, *extra_packages})
        if existing is not None and not refresh and _matches(existing, arch, suite, python, extra):
            reporter.message("info", f"{dest} is up to date ({len(existing.packages)} packages)")
            return existing
        if kept:
            reporter.message("info", f"keeping the packages added before: {', '.join(kept)}")
        url = (mirror or debian_mirror(suite)).rstrip("/")
        cache = CacheDir.at(cache_dir).debian
        fetch = _Fetcher(url, reporter)
        try:
            index = _load_index(fetch, suite, arch, cache, keyring, reporter)
            closure = resolve_closure(
                index,
                [*root_packages(python), *extra],
                optional_roots=[n for n in OPTIONAL_ROOTS if n not in extra],
            )
            absent = [n for n in OPTIONAL_ROOTS if n not in index]
            if absent:
                reporter.message("warning", f"{suite}/{arch} has no {', '.join(absent)}; left out")
            for group in closure.missing:
                reporter.message("debug", f"no package satisfies '{group}'; left out")
            versions = {p.name: p.version for p in closure.packages}
            reporter.message(
                "info",
                f"{len(closure.packages)} packages for python{python} on {arch}"
                f" ({len(closure.skipped)} tools left out: {', '.join(closure.skipped)})",
            )
            if (
                existing is not None
                and _matches(existing, arch, suite, python, extra)
                and existing.packages == versions
            ):
                reporter.message("info", f"{dest} is up to date")
                return existing
            debs = _download_debs(fetch, closure.packages, cache, reporter, jobs)
        finally:
            fetch.close()
        return _assemble(
            dest,
            closure,
            debs,
            arch=ARCHES[arch],
            suite=suite,
            python=python,
            mirror_id=_mirror_id(url),
            extra=extra,
            reporter=reporter,
        )


def download_debs(
    names: Sequence[str],
    *,
    arch: str = "arm64",
    suite: str = "bookworm",
    mirror: str | None = None,
    keyring: Path | None = DEFAULT_KEYRING,
    reporter: Reporter | None = None,
    jobs: int = 8,
    cache_dir: Path | str | None = None,
) -> dict[str, Path]:
    """Download the named Debian packages (not their dependencies), checked against the
    signed index, into the cache; their paths by name.  For unpacking by other means."""
    reporter = reporter or NullReporter()
    url = (mirror or debian_mirror(suite)).rstrip("/")
    cache = CacheDir.at(cache_dir).debian
    fetch = _Fetcher(url, reporter)
    try:
        index = _load_index(fetch, suite, arch, cache, keyring, reporter)
        unknown = sorted(n for n in names if n not in index)
        if unknown:
            raise SysrootError(f"{suite}/{arch} has no package {', '.join(unknown)}")
        return _download_debs(fetch, [index[n] for n in names], cache, reporter, jobs)
    finally:
        fetch.close()


def _assemble(
    dest: Path,
    closure: Closure,
    debs: Mapping[str, Path],
    *,
    arch: Arch,
    suite: str,
    python: str,
    mirror_id: str,
    extra: Sequence[str],
    reporter: Reporter,
) -> SysrootInfo:
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
    except OSError as e:
        raise SysrootError(f"cannot create a staging directory beside {dest}: {e}") from e
    try:
        os.chmod(staging, 0o755)
        writer = DebWriter(staging)
        reporter.task("unpack", "Unpacking", total=len(closure.packages))
        for package in closure.packages:
            try:
                deb = debs[package.name].read_bytes()
            except OSError as e:
                raise SysrootError(f"{package.name}: cannot read the cached .deb ({e})") from e
            unpack_deb(deb, staging, package=package.name, writer=writer)
            reporter.advance("unpack")
        reporter.done("unpack")
        fixed = fix_ld_scripts(staging, (f"usr/lib/{arch.triplet}", "usr/lib"))
        reporter.message("debug", f"linker scripts made relative: {', '.join(fixed)}")
        for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            if (staging / "usr" / top).is_dir() and not os.path.lexists(staging / top):
                os.symlink(f"usr/{top}", staging / top)
        info = describe(
            staging,
            arch=arch,
            suite=suite,
            python=python,
            packages={p.name: p.version for p in closure.packages},
            skipped=closure.skipped,
            mirror_id=mirror_id,
            extra=extra,
        )
        (staging / TOML_NAME).write_text(render(info), encoding="utf-8")
        _replace(staging, dest)
    except OSError as e:
        remove_tree(staging, ignore_errors=True)
        raise SysrootError(f"cannot write the sysroot at {dest}: {e}") from e
    except BaseException:
        remove_tree(staging, ignore_errors=True)
        raise
    reporter.message("info", f"sysroot ready at {dest}")
    return read_sysroot(dest)


def _replace(staging: Path, dest: Path) -> None:
    """Put *staging* at *dest*, removing an older sysroot there only once it is aside."""
    if os.path.lexists(dest):
        trash = Path(tempfile.mkdtemp(prefix=f".old-{dest.name}-", dir=dest.parent))
        os.rename(dest, trash / "old")
        os.rename(staging, dest)
        remove_tree(trash, ignore_errors=True)
    else:
        os.rename(staging, dest)
