"""Core metadata of a distribution file, obtained as cheaply as the index allows.

The resolver needs ``Requires-Dist`` and ``Requires-Python`` for every candidate it
considers.  :func:`release_metadata` looks at all the files of one version and takes the
first source that is trustworthy, cheapest first (DESIGN.md section 3):

1. a wheel's PEP 658 ``<url>.metadata`` file, when the page declares one (a few KB);
2. the persistent :class:`MetadataCache`: what an earlier run learned about any of the
   files, keyed by the file's sha256 (files are immutable, so the answer is too);
3. a wheel's ``*.dist-info/METADATA`` read with HTTP byte ranges
   (:mod:`monorepo.lazywheel`): the very bytes a PEP 658 file would hold, for indexes that
   publish none, at the cost of two or three small requests.  A target-compatible wheel,
   else the smallest wheel, since ``Requires-Dist`` uses markers and every wheel of a
   version carries the same list;
4. an sdist's ``PKG-INFO``, trusted only when Metadata-Version >= 2.2 and neither
   ``Requires-Dist`` nor ``Requires-Python`` is ``Dynamic`` (PEP 643).  After the wheel:
   it needs the whole sdist, tens of megabytes for some projects (a cold lock of 117
   packages spent most of its 10 s downloading sdists for this);
5. the sdist's build backend, ``prepare_metadata_for_build_wheel`` through
   ``pyproject_hooks`` in an isolated, cached build environment.

Whatever 3-5 produce is stored in the cache, so a second run (and ``--offline``) asks
nothing.  Every subprocess (pip, the hooks) has its output captured: it reaches the user
only inside the error message of a failure.

Parsing is deliberately tolerant: real metadata carries odd licences, classifiers and
URLs, and none of that matters for resolution, so an invalid field is dropped.  Only an
unparsable ``Requires-Dist`` is an error, because resolving without it would be wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from packaging.metadata import Metadata, RawMetadata, parse_email
from packaging.tags import Tag
from packaging.version import InvalidVersion, Version

from monorepo._core import fstree, paths
from monorepo._core.reporter import NullReporter, Reporter
from monorepo.errors import MetadataError, OfflineError
from monorepo.index import lazywheel
from monorepo.index.speed.metadatacache import MetadataCache as MetadataCache  # its home before

if TYPE_CHECKING:
    from monorepo.index.pages import DistFile

#: PEP 517's fallback when an sdist has no ``[build-system]`` table.
DEFAULT_BUILD_SYSTEM: dict[str, Any] = {
    "requires": ["setuptools>=40.8.0"],
    "build-backend": "setuptools.build_meta:__legacy__",
}

_TAIL_LINES = 25


class Fetch(Protocol):
    def __call__(self, url: str, *, sha256: str | None = None, size: int | None = None) -> bytes:
        """The body of *url*, checked against the hash and size when given."""


# --------------------------------------------------------------------------- pure parsing


def _probe(raw: RawMetadata, key: str) -> bool:
    """Whether field *key* of *raw* converts without error (checked in isolation)."""
    trial: dict[str, Any] = {"metadata_version": "2.4", "name": "probe", "version": "0"}
    trial[key] = raw[key]  # type: ignore[literal-required]
    try:
        getattr(Metadata.from_raw(trial, validate=False), key)  # type: ignore[arg-type]
    except Exception:
        return False
    return True


def parse_metadata(data: bytes | str, *, source: str) -> Metadata:
    """Core metadata from ``METADATA``/``PKG-INFO`` text, dropping fields that do not parse.

    *source* names the file for the error message.  Raises :class:`MetadataError` when
    ``Requires-Dist`` (or the required name/version) cannot be parsed.
    """
    raw, _unparsed = parse_email(data)
    if "name" in raw and "version" in raw and "metadata_version" in raw:
        # The common case, every field well-formed: convert each once.  Anything odd
        # takes the careful path below, which converts each field in isolation first.
        with contextlib.suppress(Exception):
            metadata = Metadata.from_raw(raw, validate=False)
            for key in raw:
                getattr(metadata, key)  # convert now: later reads cannot fail
            return metadata
    cleaned: dict[str, Any] = {}
    for key in raw:
        if _probe(raw, key):
            cleaned[key] = raw[key]  # type: ignore[literal-required]
        elif key in ("requires_dist", "name", "version"):
            bad = raw[key]  # type: ignore[literal-required]
            raise MetadataError(
                f"{source}: the {key.replace('_', '-').title()} field cannot be parsed "
                f"({bad!r}). The distribution's metadata is broken; pin another version, "
                "or fix its metadata with an overlay."
            )
    cleaned["metadata_version"] = raw.get("metadata_version", "2.4")
    if not _probe(cleaned, "metadata_version"):  # type: ignore[arg-type]
        # An unknown (future) version: the fields we read are the same in all versions.
        cleaned["metadata_version"] = "2.4"
    for key in ("name", "version"):
        if key not in cleaned:
            raise MetadataError(
                f"{source}: the {key.title()} field is missing. The distribution's metadata "
                "is broken; pin another version, or fix its metadata with an overlay."
            )
    metadata = Metadata.from_raw(cleaned, validate=False)  # type: ignore[arg-type]
    for key in cleaned:
        getattr(metadata, key)  # convert now: later reads cannot fail
    return metadata


def _version_at_least(text: str, minimum: str) -> bool:
    try:
        return Version(text) >= Version(minimum)
    except InvalidVersion:
        return False


def metadata_from_pkg_info(text: bytes | str, *, source: str = "PKG-INFO") -> Metadata | None:
    """Metadata from an sdist's ``PKG-INFO`` if PEP 643 lets us trust it, else None.

    Before Metadata-Version 2.2 a ``PKG-INFO`` says nothing about whether a build would
    compute different dependencies, so only 2.2+ files without dynamic ``Requires-Dist`` /
    ``Requires-Python`` stand in for the build backend.
    """
    raw, _unparsed = parse_email(text)
    if not _version_at_least(raw.get("metadata_version", "0"), "2.2"):
        return None
    dynamic = {field.strip().lower() for field in raw.get("dynamic", [])}
    if dynamic & {"requires-dist", "requires-python"}:
        return None
    return parse_metadata(text, source=source)


def metadata_from_wheel(data: bytes, filename: str) -> Metadata:
    """Metadata from the ``*.dist-info/METADATA`` member of wheel bytes."""
    text = lazywheel.metadata_from_zip(data, filename)
    return parse_metadata(text, source=f"{filename} (METADATA)")


def _sdist_top_and_member(
    data: bytes, filename: str, member: str, *, label: str | None = None
) -> tuple[str, bytes | None]:
    """The sdist's single top-level directory, and ``<top>/<member>`` if it exists.

    The whole archive is checked by the extractor's rules first (:func:`~monorepo.extract.archive.read_archive`),
    so an sdist that ``pull`` would refuse is refused here too, before its metadata is
    believed.  *label* names the package in a refusal (default: *filename*).
    """
    from monorepo.extract import archive  # tar and zip reading: only when an sdist is read

    listing = archive.read_archive(data, package=label or filename, name=filename, want=(member,))
    return listing.top, listing.contents.get(member)


def sdist_pkg_info(data: bytes, filename: str, *, label: str | None = None) -> Metadata | None:
    """The sdist's ``PKG-INFO`` metadata when PEP 643 makes it trustworthy, else None.

    Raises :class:`~monorepo.errors.ExtractError` for an sdist the extractor refuses.
    """
    top, text = _sdist_top_and_member(data, filename, "PKG-INFO", label=label)
    if text is None:
        return None
    return metadata_from_pkg_info(text, source=f"{filename}:{top}/PKG-INFO")


# --------------------------------------------------------------------------- build backend


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


def build_env_python(
    requires: Sequence[str],
    *,
    index_urls: Sequence[str],
    offline: bool,
    label: str,
    reporter: Reporter,
) -> Path:
    """A Python with *requires* installed, created once per requirement set and reused.

    The environment is keyed by the requirements, the indexes and the interpreter, and a
    marker file is written only after pip succeeded, so a half-built environment (crash,
    failed install) is rebuilt next time.  A file lock serialises concurrent builders.
    """
    # Imported here: only a build backend needs them, and they are a fifth of this
    # module's import time, which every lock pays.
    import venv

    from filelock import FileLock

    spec = "\n".join([sys.version, *sorted(requires), "--", *index_urls])
    key = hashlib.sha256(spec.encode()).hexdigest()[:24]
    root = paths.cache_root() / "build-envs"
    env_dir = root / key
    marker = env_dir / ".monorepo-complete"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{key}.lock")):
        if marker.exists():
            return _venv_python(env_dir)
        reporter.message("info", f"creating build environment for {label}: {', '.join(requires)}")
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
        if offline:
            command.append("--no-index")
        else:
            command += ["--index-url", index_urls[0]]
            for extra in index_urls[1:]:
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
                if offline
                else "check that the index provides them."
            )
            raise MetadataError(
                f"{label}: installing the build requirements {list(requires)} failed ({hint})\n"
                f"pip said:\n{_tail(result.stdout.decode('utf-8', 'replace'))}"
            )
        marker.write_text(spec)
    return _venv_python(env_dir)


def metadata_from_build_backend(
    data: bytes,
    filename: str,
    *,
    label: str,
    index_urls: Sequence[str],
    offline: bool,
    reporter: Reporter | None = None,
) -> Metadata:
    """Metadata an sdist's own build backend computes, from a temporary unpacked copy."""
    what = f"{label} ({filename})"
    text = _build_backend_text(
        data,
        filename,
        label=label,
        what=what,
        index_urls=index_urls,
        offline=offline,
        reporter=reporter,
    )
    return parse_metadata(text, source=f"{what} (from its build backend)")


def _build_backend_text(
    data: bytes,
    filename: str,
    *,
    label: str,
    what: str,
    index_urls: Sequence[str],
    offline: bool,
    reporter: Reporter | None,
) -> bytes:
    with fstree.temporary_directory(prefix="monorepo-sdist-") as tmp:
        from monorepo.extract import archive  # see _sdist_top_and_member

        # The one extractor, with the rules and limits of pull: no second rule set.
        tree = tmp / "tree"
        archive.extract_sdist(data, tree, package=label, name=filename)
        return _source_tree_text(
            tree, what=what, index_urls=index_urls, offline=offline, reporter=reporter
        )


def _build_system(source_dir: Path, what: str) -> dict[str, Any]:
    """The ``[build-system]`` table with PEP 517's defaults filled in."""
    pyproject = source_dir / "pyproject.toml"
    if not pyproject.is_file():
        return dict(DEFAULT_BUILD_SYSTEM)
    try:
        table = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise MetadataError(f"{what}: pyproject.toml is not valid TOML: {error}.") from error
    declared = table.get("build-system")
    if not isinstance(declared, dict):
        return dict(DEFAULT_BUILD_SYSTEM)
    requires = declared.get("requires", [])
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise MetadataError(
            f"{what}: [build-system] requires in pyproject.toml must be a list of strings."
        )
    return {
        "requires": requires,
        "build-backend": declared.get("build-backend", DEFAULT_BUILD_SYSTEM["build-backend"]),
        "backend-path": declared.get("backend-path"),
    }


def metadata_from_source_tree(
    source_dir: Path,
    *,
    what: str,
    index_urls: Sequence[str] = (),
    offline: bool = False,
    reporter: Reporter | None = None,
) -> Metadata:
    """Metadata computed by a source tree's build backend (PEP 517); *what* names it in errors.

    ``prepare_metadata_for_build_wheel`` is asked first; pyproject_hooks falls back to
    ``build_wheel`` and reads the wheel's dist-info when a backend lacks that hook.  With
    non-empty ``[build-system] requires`` the hook runs in a cached isolated environment
    filled from *index_urls* (pip's own configuration when empty); otherwise (an in-tree
    backend) it runs with this interpreter.
    """
    text = _source_tree_text(
        source_dir, what=what, index_urls=index_urls, offline=offline, reporter=reporter
    )
    backend = _build_system(source_dir, what)["build-backend"]
    return parse_metadata(text, source=f"{what} (from build backend {backend})")


def _source_tree_text(
    source_dir: Path,
    *,
    what: str,
    index_urls: Sequence[str],
    offline: bool,
    reporter: Reporter | None,
) -> bytes:
    """The ``METADATA`` bytes a source tree's build backend writes."""
    from pyproject_hooks import BackendUnavailable, BuildBackendHookCaller, HookMissing

    reporter = reporter if reporter is not None else NullReporter()
    build_system = _build_system(source_dir, what)
    requires = [str(item) for item in build_system.get("requires") or []]
    if requires:
        python = str(
            build_env_python(
                requires, index_urls=index_urls, offline=offline, label=what, reporter=reporter
            )
        )
    else:
        python = sys.executable
    backend = str(build_system["build-backend"])
    hooks = BuildBackendHookCaller(
        str(source_dir),
        backend,
        backend_path=build_system.get("backend-path"),
        runner=_quiet_runner,
        python_executable=python,
    )
    with tempfile.TemporaryDirectory(prefix="monorepo-meta-") as out:
        reporter.message("debug", f"{what}: asking build backend {backend} for metadata")
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


# --------------------------------------------------------------------------- the sequence


def _preferred_wheels(files: Sequence[DistFile], target_tags: frozenset[Tag]) -> list[DistFile]:
    """Wheels in the order to read them: target-compatible first, then the smallest."""
    wheels = [f for f in files if f.kind == "wheel"]
    return sorted(
        wheels,
        key=lambda f: (
            not (f.tags & target_tags),
            f.yanked is not None,
            f.size if f.size is not None else float("inf"),
            f.filename,
        ),
    )


def _preferred_sdist(files: Sequence[DistFile]) -> DistFile | None:
    sdists = sorted(
        (f for f in files if f.kind == "sdist"),
        key=lambda f: (f.yanked is not None, not f.filename.endswith(".tar.gz"), f.filename),
    )
    return sdists[0] if sdists else None


def release_metadata(
    files: Sequence[DistFile],
    *,
    target_tags: frozenset[Tag] = frozenset(),
    fetch: Fetch,
    ranges: lazywheel.RangeClient | None = None,
    cache: MetadataCache | None = None,
    index_urls: Sequence[str] = (),
    offline: bool = False,
    reporter: Reporter | None = None,
    read_wheel: Callable[[DistFile], bytes] | None = None,
    read_core_metadata: Callable[[DistFile], bytes] | None = None,
) -> Metadata:
    """Core metadata of one version, given all its *files*, from the cheapest good source.

    The order is the module's: PEP 658 file, *cache*, a wheel read with byte ranges
    through *ranges* (a whole download through *fetch* when None or refused), trusted
    ``PKG-INFO``, and only then the sdist's build backend.  *target_tags* says which wheels
    the target installs: their metadata is preferred.  *read_wheel*, when given, reads a
    wheel's ``METADATA`` in place of *ranges*, and *read_core_metadata* its PEP 658 file
    in place of *fetch* (the index client's worker processes do both).
    """
    reporter = reporter if reporter is not None else NullReporter()
    if not files:
        raise MetadataError("no distribution files to read metadata from.")
    label = f"{files[0].name} {files[0].version}"
    wheels = _preferred_wheels(files, target_tags)

    def cached(dist: DistFile) -> Metadata | None:
        text = cache.load(dist.sha256) if cache is not None else None
        if text is None:
            return None
        try:
            return parse_metadata(text, source=f"{label} (cached metadata of {dist.filename})")
        except MetadataError:
            return None

    def keep(dist: DistFile, text: bytes, source: str) -> Metadata:
        metadata = parse_metadata(text, source=f"{label} ({source})")
        if cache is not None:
            cache.store(dist.sha256, text)
        return metadata

    # 1. PEP 658
    for wheel in wheels:
        if wheel.core_metadata is not False:
            found = cached(wheel)
            if found is not None:
                return found
            if read_core_metadata is not None:
                text = read_core_metadata(wheel)
            else:
                sha256 = wheel.core_metadata if isinstance(wheel.core_metadata, str) else None
                text = fetch(wheel.metadata_url, sha256=sha256)
            return keep(wheel, text, wheel.metadata_url)
    # 2. what an earlier run learned, stored under the file steps 3-5 read
    sdist = _preferred_sdist(files)
    likely = [*wheels[:1], *([sdist] if sdist is not None else [])]
    for dist in [*likely, *(f for f in files if f not in likely)]:
        found = cached(dist)
        if found is not None:
            reporter.message("debug", f"{label}: metadata from the cache ({dist.filename})")
            return found
    # 3. a wheel's METADATA, read lazily
    if wheels:
        wheel = wheels[0]

        def download() -> bytes:
            return fetch(wheel.url, sha256=wheel.sha256, size=wheel.size)

        try:
            if read_wheel is not None:
                text = read_wheel(wheel)
            elif ranges is None:
                text = lazywheel.metadata_from_zip(download(), wheel.filename)
            else:
                text = lazywheel.wheel_metadata(
                    wheel.url,
                    wheel.filename,
                    client=ranges,
                    download=download,
                    sha256=wheel.sha256,
                    size=wheel.size,
                )
        except OfflineError:
            if sdist is None:
                raise
            # Offline, the sdist may still be in the cache.
        else:
            reporter.message("debug", f"{label}: metadata from {wheel.filename} (byte ranges)")
            return keep(wheel, text, f"{wheel.filename} METADATA")
    # 4. PKG-INFO (PEP 643)
    sdist_data: bytes | None = None
    if sdist is not None:
        sdist_data = fetch(sdist.url, sha256=sdist.sha256, size=sdist.size)
        top, pkg_info = _sdist_top_and_member(sdist_data, sdist.filename, "PKG-INFO", label=label)
        if pkg_info is not None:
            source = f"{sdist.filename}:{top}/PKG-INFO"
            if metadata_from_pkg_info(pkg_info, source=source) is not None:
                return keep(sdist, pkg_info, source)
    # 5. the build backend
    if sdist is None or sdist_data is None:  # pragma: no cover - wheels or an sdist exist
        raise MetadataError(f"{label}: neither a wheel nor an sdist to read metadata from.")
    what = f"{label} ({sdist.filename})"
    text = _build_backend_text(
        sdist_data,
        sdist.filename,
        label=label,
        what=what,
        index_urls=index_urls,
        offline=offline,
        reporter=reporter,
    )
    return keep(sdist, text, f"{sdist.filename}, from its build backend")


def dist_metadata(
    dist: DistFile,
    *,
    fetch: Fetch,
    index_urls: Sequence[str],
    offline: bool,
    reporter: Reporter | None = None,
    ranges: lazywheel.RangeClient | None = None,
    cache: MetadataCache | None = None,
) -> Metadata:
    """Core metadata of the one file *dist*: :func:`release_metadata` over just that file."""
    return release_metadata(
        (dist,),
        target_tags=dist.tags,
        fetch=fetch,
        ranges=ranges,
        cache=cache,
        index_urls=index_urls,
        offline=offline,
        reporter=reporter,
    )
