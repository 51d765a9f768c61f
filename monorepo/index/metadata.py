"""Core metadata of a distribution file, obtained as cheaply as the index allows.

The resolver needs ``Requires-Dist`` and ``Requires-Python`` for every candidate it
considers.  :func:`release_metadata` looks at all the files of one version and takes the
first source that is trustworthy, cheapest first (DESIGN.md section 3):

1. a wheel's PEP 658 ``<url>.metadata`` file, when the page declares one (a few KB);
2. the persistent :class:`MetadataCache`: what an earlier run learned about any of the
   files, keyed by the file's sha256 (files are immutable, so the answer is too);
3. a wheel's ``*.dist-info/METADATA`` read with HTTP byte ranges
   (:mod:`monorepo.index.lazywheel`): the very bytes a PEP 658 file would hold, for indexes that
   publish none, at the cost of two or three small requests.  A target-compatible wheel,
   else the smallest wheel, since ``Requires-Dist`` uses markers and every wheel of a
   version carries the same list;
4. an sdist's ``PKG-INFO``, trusted only when Metadata-Version >= 2.2 and neither
   ``Requires-Dist`` nor ``Requires-Python`` is ``Dynamic`` (PEP 643).  After the wheel:
   it needs the whole sdist, tens of megabytes for some projects (a cold lock of 117
   packages spent most of its 10 s downloading sdists for this);
5. the sdist's build backend, ``prepare_metadata_for_build_wheel`` through
   ``pyproject_hooks`` in an isolated, cached build environment
   (:mod:`monorepo.index.backend`).

Whatever 3-5 produce is stored in the cache, so a second run (and ``--offline``) asks
nothing.

Parsing is deliberately tolerant: real metadata carries odd licences, classifiers and
URLs, and none of that matters for resolution, so an invalid field is dropped.  Only an
unparsable ``Requires-Dist`` is an error, because resolving without it would be wrong.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.metadata import Metadata, RawMetadata, parse_email
from packaging.tags import Tag
from packaging.version import InvalidVersion, Version

from monorepo._core.reporter import NullReporter, Reporter
from monorepo.errors import MetadataError, OfflineError
from monorepo.index import lazywheel
from monorepo.project.pyproject import read_build_system

if TYPE_CHECKING:
    from monorepo.index.backend import BuildBackend
    from monorepo.index.http import HttpClient
    from monorepo.index.pages import DistFile
    from monorepo.index.speed.metadatacache import MetadataCache

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


def metadata_from_build_backend(
    data: bytes, filename: str, *, label: str, backend: BuildBackend
) -> Metadata:
    """Metadata an sdist's own build backend computes, from a temporary unpacked copy."""
    text = backend.sdist_metadata(data, filename, label=label)
    return parse_metadata(text, source=f"{label} ({filename}) (from its build backend)")


def metadata_from_source_tree(source_dir: Path, *, what: str, backend: BuildBackend) -> Metadata:
    """Metadata computed by a source tree's build backend (PEP 517); *what* names it in errors."""
    text = backend.tree_metadata(source_dir, what=what)
    name = read_build_system(source_dir, what=what).backend
    return parse_metadata(text, source=f"{what} (from build backend {name})")


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
    http: HttpClient,
    cache: MetadataCache | None = None,
    backend: BuildBackend | None = None,
    reporter: Reporter | None = None,
    read_wheel: Callable[[DistFile], bytes] | None = None,
    read_core_metadata: Callable[[DistFile], bytes] | None = None,
) -> Metadata:
    """Core metadata of one version, given all its *files*, from the cheapest good source.

    The order is the module's: PEP 658 file, *cache*, a wheel read with byte ranges
    through *http* (a whole download when the server refuses ranges), trusted
    ``PKG-INFO``, and only then the sdist's build *backend* (None: not allowed, an
    error).  *target_tags* says which wheels the target installs: their metadata is
    preferred.  *read_wheel*, when given, reads a wheel's ``METADATA`` in place of
    *http*'s byte ranges, and *read_core_metadata* its PEP 658 file (the index client's
    worker processes do both).
    """

    def fetch(url: str, *, sha256: str | None = None, size: int | None = None) -> bytes:
        return http.get(url, sha256=sha256, size=size).body

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
            else:
                text = lazywheel.wheel_metadata(
                    wheel.url,
                    wheel.filename,
                    client=http,
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
    if backend is None:
        raise MetadataError(
            f"{label} ({sdist.filename}): only its build backend can say what it depends on,"
            " and this index client runs no build backend (give it one to allow that)."
        )
    text = backend.sdist_metadata(sdist_data, sdist.filename, label=label)
    return keep(sdist, text, f"{sdist.filename}, from its build backend")
