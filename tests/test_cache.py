"""The content-addressed store on a real directory, with real concurrent processes."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monorepo.cache import ContentStore
from monorepo.errors import HashMismatchError

DATA = b"an sdist, more or less\n" * 1000
SHA = hashlib.sha256(DATA).hexdigest()


def test_default_root_is_under_the_cache_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONOREPO_CACHE_DIR", str(tmp_path / "c"))
    assert ContentStore().root == (tmp_path / "c" / "store").resolve()


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


def test_truncated_entry_fails_the_size_check(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    path = store.put_bytes(DATA, sha256=SHA)
    assert store.get(SHA, size=len(DATA) + 1) is None
    assert not path.exists()


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
