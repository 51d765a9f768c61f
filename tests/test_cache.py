"""The content-addressed store on a real directory, with real concurrent processes."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fixtures.builder import FixtureIndex
from fixtures.server import IndexServer
from monorepo._core.paths import CacheDir
from monorepo.errors import HashMismatchError, StorageError
from monorepo.sources.store import ContentStore

DATA = b"an sdist, more or less\n" * 1000
SHA = hashlib.sha256(DATA).hexdigest()


def test_the_store_is_under_the_cache_root(tmp_path: Path) -> None:
    """One cache directory, decided where a call starts: the store is its ``store``."""
    cache = CacheDir.from_env({"MONOREPO_CACHE_DIR": str(tmp_path / "c")})
    assert ContentStore(cache.store).root == (tmp_path / "c" / "store").resolve()
    assert CacheDir.at(tmp_path / "d").store == (tmp_path / "d" / "store").resolve()


def test_layout_is_fanned_out_by_hash(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    assert store.path_for(SHA) == tmp_path / "sha256" / SHA[:2] / SHA
    assert store.path_for(SHA.upper()) == store.path_for(SHA)


def test_put_then_get(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    assert store.get(SHA) is None
    path = store.put_bytes(DATA, sha256=SHA, size=len(DATA), what="demo-1.0.tar.gz")
    assert path == store.path_for(SHA)
    assert path.read_bytes() == DATA
    assert store.get(SHA) == path
    assert store.get(SHA, size=len(DATA)) == path
    assert [p.name for p in path.parent.iterdir()] == [SHA]  # no temp file left


def test_wrong_hash_is_refused_and_not_stored(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    other = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(HashMismatchError) as info:
        store.put_bytes(DATA, sha256=other, what="demo-1.0.tar.gz")
    message = str(info.value)
    assert "demo-1.0.tar.gz" in message
    assert other in message and SHA in message
    assert not store.path_for(other).exists()
    assert list(store.path_for(other).parent.iterdir()) == []


def test_wrong_size_is_refused(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(
        HashMismatchError, match=f"{len(DATA)} bytes.*expects.*{len(DATA) + 1} bytes"
    ):
        store.put_bytes(DATA, sha256=SHA, size=len(DATA) + 1, what="demo")
    assert store.get(SHA) is None


def test_oversized_stream_stops_early(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    pulled: list[int] = []

    def endless() -> Iterator[bytes]:
        for i in range(1000):
            pulled.append(i)
            yield DATA

    with pytest.raises(HashMismatchError, match="more than the expected"):
        store.get_or_fetch(SHA, endless, size=len(DATA), what="demo")
    assert len(pulled) == 2
    assert list(store.path_for(SHA).parent.iterdir()) == []


def test_malformed_digest_is_refused(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(HashMismatchError, match=re.escape("demo: '../../etc' is not a sha256")):
        store.put_bytes(DATA, sha256="../../etc", what="demo")


def test_corrupt_entry_is_detected_and_dropped(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    path = store.put_bytes(DATA, sha256=SHA)
    path.write_bytes(DATA[:-1] + b"?")
    assert store.get(SHA) is None
    assert not path.exists()


def test_truncated_entry_is_dropped(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    path = store.put_bytes(DATA, sha256=SHA)
    path.write_bytes(DATA[:-10])
    assert store.get(SHA, size=len(DATA)) is None
    assert not path.exists()


def test_an_intact_entry_of_another_size_than_asked_is_not_served_but_kept(
    tmp_path: Path,
) -> None:
    # A lock whose size was edited must not make the store throw away a good file.
    store = ContentStore(tmp_path)
    path = store.put_bytes(DATA, sha256=SHA)
    assert store.get(SHA, size=len(DATA) + 1) is None
    assert path.read_bytes() == DATA
    with pytest.raises(HashMismatchError, match=f"expects sha256 {SHA} and {len(DATA) + 1}"):
        store.get_or_fetch(SHA, lambda: DATA, size=len(DATA) + 1, what="demo")
    assert store.get(SHA, size=len(DATA)) == path


def _replace_entry(path: Path, kind: str, elsewhere: Path) -> None:
    """Put something other than the right file at a store entry's name."""
    path.unlink()
    if kind == "directory":
        path.mkdir()
        (path / "inside").write_bytes(DATA)
    elif kind == "symlink to the right bytes":
        elsewhere.write_bytes(DATA)
        path.symlink_to(elsewhere)
    elif kind == "dangling symlink":
        path.symlink_to(elsewhere.with_name("missing"))
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "truncated":
        path.write_bytes(DATA[: len(DATA) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    else:  # pragma: no cover
        raise AssertionError(kind)


ODD_ENTRIES = [
    "directory",
    "symlink to the right bytes",
    "dangling symlink",
    "fifo",
    "truncated",
    "empty",
]


@pytest.mark.parametrize("kind", ODD_ENTRIES)
@pytest.mark.parametrize("size", [len(DATA), None])
def test_an_entry_that_is_not_the_right_regular_file_heals(
    tmp_path: Path, kind: str, size: int | None
) -> None:
    """A directory, a symlink (even to the right bytes), a FIFO or a short file under an
    entry's name is removed and fetched again; nothing blocks, nothing is followed."""
    store = ContentStore(tmp_path / "store")
    elsewhere = tmp_path / "elsewhere"
    path = store.put_bytes(DATA, sha256=SHA)
    _replace_entry(path, kind, elsewhere)
    assert store.get(SHA, size=size) is None
    assert not os.path.lexists(path)
    _replace_entry(store.put_bytes(DATA, sha256=SHA), kind, elsewhere)
    fetched = store.get_or_fetch(SHA, lambda: DATA, size=size)
    assert fetched == path and path.is_file() and not path.is_symlink()
    assert path.read_bytes() == DATA
    if kind == "symlink to the right bytes":
        assert elsewhere.read_bytes() == DATA  # the link was removed, not its target


def test_put_bytes_replaces_a_directory_at_the_entry(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    store.path_for(SHA).mkdir(parents=True)
    assert store.put_bytes(DATA, sha256=SHA).read_bytes() == DATA


def test_a_file_where_the_fan_out_directory_belongs_heals(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    path = store.path_for(SHA)
    path.parent.parent.mkdir(parents=True)
    path.parent.write_bytes(b"not a directory")
    assert store.get(SHA) is None
    assert store.get_or_fetch(SHA, lambda: DATA).read_bytes() == DATA


@pytest.mark.skipif(os.geteuid() == 0, reason="root may remove anything: no refusal to see")
def test_a_damaged_entry_that_cannot_be_removed_names_it(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    path = store.put_bytes(DATA, sha256=SHA)
    path.write_bytes(b"rotten")
    path.parent.chmod(0o555)
    try:
        with pytest.raises(StorageError) as caught:
            store.get(SHA)
    finally:
        path.parent.chmod(0o755)
    assert str(path) in str(caught.value) and "by hand" in str(caught.value)


def test_get_or_fetch_fetches_once_and_accepts_chunks(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    calls: list[int] = []

    def fetch() -> Iterator[bytes]:
        calls.append(1)
        for i in range(0, len(DATA), 4096):
            yield DATA[i : i + 4096]

    first = store.get_or_fetch(SHA, fetch, size=len(DATA))
    second = store.get_or_fetch(SHA, fetch, size=len(DATA))
    assert first == second and first.read_bytes() == DATA
    assert calls == [1]


def test_get_or_fetch_refetches_a_corrupt_entry(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    store.put_bytes(DATA, sha256=SHA).write_bytes(b"rotten")
    path = store.get_or_fetch(SHA, lambda: DATA)
    assert path.read_bytes() == DATA


def test_fetch_failure_leaves_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)

    def broken() -> Iterator[bytes]:
        yield DATA[:100]
        raise ConnectionError("reset")

    with pytest.raises(ConnectionError):
        store.get_or_fetch(SHA, broken)
    assert list(store.path_for(SHA).parent.iterdir()) == []


def _fetch_in_process(
    root: str, counter: str, barrier: multiprocessing.synchronize.Barrier
) -> None:
    """Child process: wait for the sibling, then both ask for the same hash at once."""

    def fetch() -> Iterator[bytes]:
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # a slow download: the sibling must be waiting, not fetching
        for i in range(0, len(DATA), 1000):
            yield DATA[i : i + 1000]

    barrier.wait()
    path = ContentStore(Path(root)).get_or_fetch(SHA, fetch, size=len(DATA), what="demo")
    assert path.read_bytes() == DATA


def test_two_processes_fetch_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    counter = tmp_path / "fetches.log"
    counter.touch()
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_fetch_in_process, args=(str(tmp_path / "store"), str(counter), barrier))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(counter.read_text().splitlines()) == 1
    store = ContentStore(tmp_path / "store")
    assert store.get(SHA) is not None
    assert [p.name for p in store.path_for(SHA).parent.iterdir()] == [SHA]


# ---------------------------------------------------------------------------- origins


def test_the_url_a_file_came_from_is_recorded_and_same_origin_fetches_from_another(
    tmp_path: Path,
) -> None:
    store = ContentStore(tmp_path)
    fetched: list[str] = []

    def from_url(url: str, data: bytes = DATA) -> Callable[[], bytes]:
        def fetch() -> bytes:
            fetched.append(url)
            return data

        return fetch

    a, b = "https://a.example/demo-1.0.tar.gz", "https://b.example/demo-1.1.tar.gz"
    path = store.get_or_fetch(SHA, from_url(a), origin=a)
    assert store.origins(SHA) == {a}
    # by hash alone the entry serves any URL ...
    assert store.get_or_fetch(SHA, from_url(b), origin=b) == path and fetched == [a]
    assert store.get(SHA, origin=b) is None
    # ... but not when the caller needs the bytes to come from that URL
    with pytest.raises(HashMismatchError, match=r"b\.example"):
        store.get_or_fetch(
            SHA, from_url(b, b"other bytes"), origin=b, same_origin=True, what="b.example"
        )
    assert fetched == [a, b] and store.origins(SHA) == {a}
    assert path.read_bytes() == DATA  # the good entry is kept
    assert store.get_or_fetch(SHA, from_url(b), origin=b, same_origin=True) == path
    assert store.origins(SHA) == {a, b}
    assert store.get_or_fetch(SHA, from_url(b), origin=b, same_origin=True) == path
    assert fetched == [a, b, b]
    # a URL with a line break is never recorded: it would read back as two
    odd = "https://c.example/x\nhttps://d.example/demo-1.0.tar.gz"
    assert store.get_or_fetch(SHA, from_url(odd), origin=odd, same_origin=True) == path
    assert store.origins(SHA) == {a, b}


# ------------------------------------------------------------------------------ sweep

HOLD = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_sweep_deletes_temporary_files_of_dead_writers_only(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    dead, live = SHA, hashlib.sha256(b"live").hexdigest()
    for digest in (dead, live):
        store.path_for(digest).parent.mkdir(parents=True, exist_ok=True)
        store.origins_path(digest).parent.mkdir(parents=True, exist_ok=True)
    leftovers = [
        store.path_for(dead).parent / f".tmp-{dead}-abc",
        store.origins_path(dead).parent / f".tmp-{dead}-def",
    ]
    in_progress = store.path_for(live).parent / f".tmp-{live}-xyz"
    unrelated = store.path_for(dead).parent / ".tmp-not-a-digest"
    for path in [*leftovers, in_progress, unrelated]:
        path.write_bytes(b"partial")
    (tmp_path / "locks").mkdir(exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "locks" / f"{live}.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert sorted(store.sweep()) == sorted(leftovers)
        assert not any(p.exists() for p in leftovers)
        assert in_progress.exists() and unrelated.exists()
    finally:
        holder.kill()
        holder.wait()
    assert store.sweep() == [in_progress]
    assert unrelated.exists()


def test_a_fetch_deletes_what_a_dead_writer_of_the_same_hash_left(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    stale = store.path_for(SHA).parent / f".tmp-{SHA}-killed"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(DATA[:100])
    store.get_or_fetch(SHA, lambda: DATA)
    assert [p.name for p in store.path_for(SHA).parent.iterdir()] == [SHA]


def test_one_cache_directory_is_decided_at_the_entry_point_and_passed_down(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """lock, pull and verify given a cache directory use it for everything (HTTP cache,
    page and metadata caches, the store, warm start, lock reuse) and never read
    ``MONOREPO_CACHE_DIR``, which points elsewhere."""
    import monorepo
    from fixtures.builder import Release

    server = serve(
        make_index([Release("app", "1.0", requires_dist=("lib",)), Release("lib", "1.0")])
    )
    proj = make_project(
        '[project]\nname = "p"\nversion = "0"\ndependencies = ["app"]\n\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\n'
    )
    from_env = CacheDir.from_env().root
    mine = tmp_path / "mine"
    monorepo.lock(proj, cache_dir=mine)
    monorepo.pull(proj, cache_dir=mine)
    assert monorepo.verify(proj, cache_dir=mine).passed
    assert not from_env.exists() or not any(from_env.iterdir())
    cache = CacheDir.at(mine)
    for used in (cache.http, cache.metadata, cache.store, cache.warmstart, cache.locks):
        assert used.is_dir() and any(used.iterdir()), used
