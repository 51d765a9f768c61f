"""The build cache: every wheel built, stored under the key of its inputs, with its log.

A wheel is a function of its inputs (the scheduler's key: the source tree hash after
patches, the target and its toolchain, the backend and build requirements, the overlay's
build facts, and the keys of every wheel the build installed), so before building a
package ``monorepo build`` looks its key up here, and after building it stores the wheel.
Building the same set again into an empty directory, on this machine or on another that
shares the cache directory, then builds nothing; changing one input changes the key of
that package and, through theirs, of every package whose build needed it, and of nothing
else.

Layout (``<cache>/builds/`` by default, any directory with ``--build-cache DIR``)::

    <key[:2]>/<key>/entry.json   {"format", "wheel", "sha256", "dynamic"}
    <key[:2]>/<key>/<wheel>      the wheel
    <key[:2]>/<key>/build.log    what its backend printed

An entry is written in a private directory and renamed into place whole, so a reader (a
concurrent build, another machine on a shared file system) sees all of it or nothing, and
it is checked by sha256 each time it is used: a damaged entry is removed and the package
built again.

Build requirements a backend reveals only when asked (``get_requires_for_build_wheel``)
are part of the key, but not known before the first build.  So a build whose key grew
that way also leaves a *hint* under the key it started with: an ``entry.json`` with only
``dynamic``, which tells the next build which packages to wait for before it computes the
full key and finds the wheel.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from monorepo._core.fstree import remove_tree
from monorepo.building.buildenv import file_sha256

__all__ = ["BuildCache", "CacheEntry"]

_FORMAT = 1
_ENTRY = "entry.json"
_LOG = "build.log"


@dataclass(frozen=True)
class CacheEntry:
    """One key's entry: a wheel (with its sha256), or only a hint about *dynamic*."""

    key: str
    path: Path
    wheel: str | None
    sha256: str
    dynamic: frozenset[str]

    @property
    def log(self) -> Path | None:
        log = self.path / _LOG
        return log if log.is_file() else None


class BuildCache:
    """The wheels of past builds under *root*, by input key."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> CacheEntry | None:
        """The entry of *key*, unchecked (:meth:`fetch` checks), or None."""
        path = self._dir(key)
        try:
            data = json.loads((path / _ENTRY).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            return None
        wheel = data.get("wheel")
        dynamic = data.get("dynamic", [])
        if not isinstance(dynamic, list):
            return None
        return CacheEntry(
            key=key,
            path=path,
            wheel=str(wheel) if isinstance(wheel, str) and "/" not in wheel else None,
            sha256=str(data.get("sha256", "")),
            dynamic=frozenset(str(d) for d in dynamic),
        )

    def fetch(self, entry: CacheEntry, dest: Path) -> Path | None:
        """Copy *entry*'s wheel into the directory *dest*, or None when it is damaged or
        gone (the entry is removed then, so the wheel is built and stored again)."""
        if entry.wheel is None:
            return None
        source = entry.path / entry.wheel
        try:
            if file_sha256(source) != entry.sha256:
                raise OSError(f"{source}: sha256 differs from the entry's")
            dest.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".tmp-{entry.wheel}-", dir=dest)
            os.close(fd)
            try:
                shutil.copyfile(source, tmp)
                os.chmod(tmp, 0o644)
                if file_sha256(Path(tmp)) != entry.sha256:
                    raise OSError(f"{source}: changed while it was copied")
                os.replace(tmp, dest / entry.wheel)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        except OSError:
            remove_tree(entry.path, ignore_errors=True)
            return None
        return dest / entry.wheel

    def put(self, key: str, wheel: Path, log: Path | None, dynamic: Iterable[str]) -> None:
        """Store *wheel* (and *log*) under *key*, unless an entry is there already."""
        data = {
            "format": _FORMAT,
            "wheel": wheel.name,
            "sha256": file_sha256(wheel),
            "dynamic": sorted(dynamic),
        }
        self._publish(key, data, [(wheel, wheel.name), *([(log, _LOG)] if log else [])])

    def hint(self, key: str, dynamic: Iterable[str]) -> None:
        """Record under *key* (a build's key before its backend asked for more) what it
        asked for, so that the next build waits for those and finds the full entry."""
        self._publish(key, {"format": _FORMAT, "dynamic": sorted(dynamic)}, [])

    def _publish(self, key: str, data: dict[str, object], files: list[tuple[Path, str]]) -> None:
        final = self._dir(key)
        if (final / _ENTRY).is_file():
            return
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:16]}-", dir=final.parent))
        except OSError:
            return  # a read-only or full cache must not fail the build
        try:
            for source, name in files:
                shutil.copyfile(source, staging / name)
            (staging / _ENTRY).write_text(json.dumps(data, sort_keys=True) + "\n", encoding="utf-8")
            os.chmod(staging, 0o755)
            if final.exists():  # a stale entry without entry.json: replace it
                remove_tree(final, ignore_errors=True)
            os.rename(staging, final)
        except OSError:
            pass  # another build stored it first, or the cache is full
        finally:
            remove_tree(staging, ignore_errors=True)
