"""A content-addressed store of downloaded files (sdists, archives) keyed by sha256.

The lock records a sha256 for every source, so the hash is the natural key: a file
is downloaded once per machine whatever project asks for it, ``pull --offline``
works from the store alone, and a store entry can always be checked against its
name.  Entries are re-hashed on every use, so a disk error or a hand edit makes an
entry disappear (and be fetched again) rather than reach a build.

Layout under the root (``CacheDir.store``: the cache directory's ``store``)::

    sha256/ab/abcdef0123...    the file whose sha256 is abcdef0123... (full hex name,
                               fanned out by its first two hex digits)
    sha256/ab/.tmp-abcdef...-* a download in progress (renamed into place when verified)
    origins/ab/abcdef0123...   the URLs that file was downloaded from, one per line
    locks/abcdef0123....lock   the per-hash lock held while writing that hash's files

Only verified bytes are ever renamed into place (``os.replace`` in the same
directory, so the rename is atomic); a reader never sees a partial file.  Every
write of an entry or of its origins happens under the entry's lock, so a
``.tmp-<hash>-*`` file whose lock is free belongs to a process that died:
:meth:`ContentStore.sweep` deletes those.

Origins: a hash proves what the bytes are, not where the lock said they come
from.  An entry downloaded from one URL serves every lock entry with its hash,
except where the caller asks for the same origin (``pull``: a lock entry whose URL
was edited, keeping the hash, must not be taken from the store as if that URL had
been checked); then the file is downloaded from that URL again and must match.

Whatever else is found under an entry's name (a directory, a symlink, a FIFO, a truncated or
damaged file) is removed and fetched again: the store heals rather than fails.  A
write that fails for want of space says the cache's disk is full
(:func:`~monorepo.errors.disk_full`), not that the file being written is at fault.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Literal

from filelock import FileLock, Timeout

from monorepo._core.atomic import write_bytes
from monorepo.errors import HashMismatchError, StorageError, disk_full

_TMP = ".tmp-"

_HEX = frozenset("0123456789abcdef")


def _normalise(sha256: str, what: str) -> str:
    """Lowercase hex digest, or an error: the digest becomes a file name, so it is checked."""
    digest = sha256.lower()
    if len(digest) != 64 or not _HEX.issuperset(digest):
        label = what or "a source"
        raise HashMismatchError(
            f"{label}: {sha256!r} is not a sha256 digest (64 hexadecimal digits); correct the"
            " hash recorded for it in pylock.toml, or run 'monorepo lock' again"
        )
    return digest


class ContentStore:
    """Verified files addressed by sha256; safe for concurrent processes."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str) -> Path:
        """Where the entry for *sha256* lives (whether or not it exists)."""
        digest = _normalise(sha256, "")
        return self.root / "sha256" / digest[:2] / digest

    def _lock(self, digest: str, what: str = "") -> FileLock:
        """The per-hash lock (not yet taken), its directory made as a write into the store."""
        locks = self.root / "locks"
        with self._writing(what):
            locks.mkdir(parents=True, exist_ok=True)
        return FileLock(locks / f"{digest}.lock")

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """Word a failed write into the store as the store's problem, naming its directory.

        A full disk (or quota) and a store that may not be written are said to be so;
        other errors pass unchanged (a source read from a ``file://`` URL words its own).
        """
        try:
            yield
        except OSError as error:
            label = f"{what}: cannot store the download" if what else "cannot store a download"
            full = disk_full(
                error,
                self.root,
                what=label,
                fix="empty the download cache (it only saves downloads) or set"
                " MONOREPO_CACHE_DIR to a directory on another disk",
            )
            if full is not None:
                raise full from error
            if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise StorageError(
                    f"{label}: the download cache {self.root} cannot be written"
                    f" ({error.strerror or error}). Fix its permissions, or set"
                    " MONOREPO_CACHE_DIR to a directory you can write."
                ) from error
            raise

    def origins_path(self, sha256: str) -> Path:
        """Where the URLs the entry for *sha256* was downloaded from are listed."""
        digest = _normalise(sha256, "")
        return self.root / "origins" / digest[:2] / digest

    def origins(self, sha256: str) -> frozenset[str]:
        """The URLs the entry for *sha256* is known to have been downloaded from."""
        try:
            text = self.origins_path(sha256).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return frozenset()
        return frozenset(line for line in text.splitlines() if line)

    def _add_origin(self, digest: str, origin: str) -> None:
        """Record *origin* for the entry (the caller holds the entry's lock)."""
        known = self.origins(digest)
        if origin in known or "\n" in origin or "\r" in origin:
            return  # (a URL with a line break is never recorded: it would read as two)
        text = "".join(f"{url}\n" for url in sorted(known | {origin}))
        with contextlib.suppress(OSError):  # only costs a download next time
            write_bytes(self.origins_path(digest), text.encode(), prefix=f"{_TMP}{digest}-")

    def get(
        self, sha256: str, *, size: int | None = None, origin: str | None = None
    ) -> Path | None:
        """The entry's path if present and intact, else None (anything else is deleted).

        Re-hashing on every use costs one read of a file that is about to be read
        anyway, and it is what lets the store be trusted without trusting the disk.
        An intact entry of another *size* than the caller expects is the caller's
        mistake (a lock whose size was edited), not the entry's: it is kept.  With
        *origin*, only an entry downloaded from that URL counts.  Whatever else holds
        the entry's name (a damaged or truncated file, a directory, a symlink, a FIFO) is
        removed, so the next fetch puts the right file there.
        """
        digest = _normalise(sha256, "")
        path = self.path_for(digest)
        state = _state(path, digest, size)
        if state == "intact":
            if origin is not None and origin not in self.origins(digest):
                return None
            return path
        if state != "damaged":
            return None
        # Damaged: delete under the lock so that a concurrent writer's fresh, verified
        # entry is never the one removed.
        with self._lock(digest):
            state = _state(path, digest, size)
            if state == "damaged":
                self._discard(path)
        if state == "intact" and (origin is None or origin in self.origins(digest)):
            return path
        return None

    def _discard(self, path: Path) -> None:
        """Remove whatever is at *path* (and a non-directory where its fan-out directory
        belongs), or say which entry must be removed by hand."""
        try:
            parent = path.parent
            if os.path.lexists(parent) and (parent.is_symlink() or not parent.is_dir()):
                parent.unlink()
                return
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as error:
            raise StorageError(
                f"the download cache entry {path} is damaged (not a file with the content its"
                f" name promises) and cannot be removed: {error.strerror or error}. Delete it"
                " by hand (the cache only saves downloads), then run the command again."
            ) from error

    def put_bytes(
        self,
        data: bytes,
        *,
        sha256: str,
        size: int | None = None,
        what: str = "",
        origin: str | None = None,
    ) -> Path:
        """Store *data* after checking it against *sha256* and *size*; bad bytes never land.

        *origin*, the URL the bytes came from, is recorded for :meth:`get`'s *origin*.
        """
        digest = _normalise(sha256, what)
        with self._lock(digest):
            path = self._store(digest, iter((data,)), size, what)
            if origin is not None:
                self._add_origin(digest, origin)
        return path

    def get_or_fetch(
        self,
        sha256: str,
        fetch: Callable[[], bytes | Iterator[bytes]],
        *,
        size: int | None = None,
        what: str = "",
        origin: str | None = None,
        same_origin: bool = False,
    ) -> Path:
        """The entry for *sha256*, calling *fetch* only if no intact entry exists.

        A lock per hash makes a second process wait for the first one's download and
        then find the entry, instead of downloading the same file again or racing it.
        *fetch* may return the bytes or yield chunks, which are hashed while written.
        *origin* is the URL *fetch* downloads from, recorded with the entry; with
        *same_origin* an entry not downloaded from *origin* is fetched again (and must
        match the hash like any download).
        """
        digest = _normalise(sha256, what)
        wanted = origin if same_origin else None
        found = self.get(digest, size=size, origin=wanted)
        if found is not None:
            return found
        with self._lock(digest, what):
            # Not self.get: it takes this lock to discard a damaged entry, and a second
            # FileLock on one file blocks; _store discards it under the lock held here.
            path = self.path_for(digest)
            if _state(path, digest, size) == "intact" and (
                wanted is None or wanted in self.origins(digest)
            ):
                return path
            self._sweep_digest(digest)
            payload = fetch()
            chunks = iter((payload,)) if isinstance(payload, bytes) else payload
            path = self._store(digest, chunks, size, what)
            if origin is not None:
                self._add_origin(digest, origin)
            return path

    def sweep(self) -> list[Path]:
        """Delete the temporary files of writers that died (a killed pull or lock).

        A ``.tmp-<hash>-*`` file is written only by a process holding that hash's
        lock, so when the lock can be taken at once nobody owns the file any more.
        A temporary file of a live writer is left alone.  Returns what was deleted.
        """
        swept: list[Path] = []
        for kind in ("sha256", "origins"):
            try:
                fans = list(os.scandir(self.root / kind))
            except OSError:
                continue
            for fan in fans:
                if not fan.is_dir(follow_symlinks=False):
                    continue
                try:
                    names = [e.name for e in os.scandir(fan.path) if e.name.startswith(_TMP)]
                except OSError:
                    continue
                digests = {n[len(_TMP) : len(_TMP) + 64] for n in names}
                for digest in sorted(d for d in digests if _is_digest(d)):
                    lock = self._lock(digest)
                    try:
                        lock.acquire(timeout=0)
                    except Timeout:
                        continue  # a live writer's
                    try:
                        swept += self._sweep_digest(digest)
                    finally:
                        lock.release()
        return swept

    def _sweep_digest(self, digest: str) -> list[Path]:
        """Delete *digest*'s temporary files (the caller holds its lock, so they are stale)."""
        swept: list[Path] = []
        for directory in (self.path_for(digest).parent, self.origins_path(digest).parent):
            for path in directory.glob(f"{_TMP}{digest}-*"):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    swept.append(path)
        return swept

    def _store(self, digest: str, chunks: Iterator[bytes], size: int | None, what: str) -> Path:
        path = self.path_for(digest)
        with self._writing(what):
            if _state(path, digest, size) == "damaged":
                self._discard(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f"{_TMP}{digest}-", dir=path.parent)
        tmp = Path(tmp_name)
        try:
            with self._writing(what):
                # No fsync: an entry torn by a crash fails its hash on next use and is
                # fetched again, so durability costs a disk flush per download for nothing.
                with os.fdopen(fd, "wb") as out:
                    actual, written = _write_hashed(out, chunks, size, digest, what)
                if actual != digest or (size is not None and written != size):
                    raise _mismatch(what, digest, actual, size, written)
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return path


def _write_hashed(
    out: BinaryIO, chunks: Iterator[bytes], size: int | None, digest: str, what: str
) -> tuple[str, int]:
    """Write and hash *chunks*, stopping as soon as more than *size* bytes arrive."""
    hasher = hashlib.sha256()
    written = 0
    for chunk in chunks:
        written += len(chunk)
        if size is not None and written > size:
            raise _mismatch(what, digest, None, size, written)
        hasher.update(chunk)
        out.write(chunk)
    return hasher.hexdigest(), written


def _mismatch(
    what: str, expected: str, actual: str | None, size: int | None, written: int
) -> HashMismatchError:
    label = what or f"the file with sha256 {expected}"
    if size is not None and written > size and actual is None:
        got = f"more than the expected {size} bytes (stopped at {written})"
    else:
        got = f"{written} bytes with sha256 {actual}"
    expected_text = f"sha256 {expected}" + (f" and {size} bytes" if size is not None else "")
    return HashMismatchError(
        f"{label}: downloaded {got}, but the lock expects {expected_text}; the file was not"
        " stored. If the source was re-published, run 'monorepo lock' to record the new file;"
        " otherwise the download was damaged or tampered with, so try again"
    )


def _is_digest(text: str) -> bool:
    return len(text) == 64 and _HEX.issuperset(text)


_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)  # a symlink is not an entry, whatever it points to
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block the open
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def _state(
    path: Path, digest: str, size: int | None
) -> Literal["intact", "absent", "damaged", "other-size"]:
    """Whether *path* is a regular file hashing to *digest* (``"intact"``), nothing
    (``"absent"``), anything else (``"damaged"``), or an intact file of another length
    than the caller's *size* (``"other-size"``: the caller's mistake, a lock whose size
    was edited, not the entry's, so it is kept)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return "absent"
    except OSError:  # a symlink (ELOOP), a file where the fan-out directory belongs, ...
        return "damaged"
    try:
        info = os.fstat(fd)
        fits = stat.S_ISREG(info.st_mode)
    except OSError:
        fits = False
    if not fits:  # checked before fdopen, which refuses a directory
        os.close(fd)
        return "damaged"
    with os.fdopen(fd, "rb") as f:
        try:
            actual = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError:
            return "damaged"
    if actual != digest:
        return "damaged"
    return "intact" if size is None or info.st_size == size else "other-size"
