"""Cache writes held back while a worker is busy, and written before it exits."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from fixtures.builder import Release
from fixtures.server import IndexServer
from monorepo._core.speed.writebehind import WriteBehind
from monorepo.index.client import IndexClient
from tests.helpers import MakeIndex, Serve, index_client


def test_writes_wait_for_the_work_and_a_quiet_moment() -> None:
    behind = WriteBehind(quiet=0.05)
    done = threading.Event()
    try:
        with behind.busy():
            behind.defer(done.set)
            time.sleep(0.15)
            assert not done.is_set()  # held back for as long as the work goes on
        ended = time.monotonic()
        assert done.wait(5)
        assert time.monotonic() - ended >= 0.04  # and a quiet moment after it
    finally:
        behind.close()


def test_too_much_queued_is_written_even_while_busy() -> None:
    behind = WriteBehind(quiet=60, limit=10)
    done = threading.Event()
    try:
        with behind.busy():
            behind.defer(lambda: None, size=5)
            behind.defer(done.set, size=6)
            assert done.wait(5)
    finally:
        behind.close()


def test_close_writes_everything_in_order_and_survives_a_failing_write() -> None:
    behind = WriteBehind(quiet=60)
    written: list[int] = []

    def fail() -> None:
        raise OSError("disk full")

    with behind.busy():
        behind.defer(lambda: written.append(1))
        behind.defer(fail)
        behind.defer(lambda: written.append(2))
        assert written == []
    behind.close()
    assert written == [1, 2]
    behind.defer(lambda: written.append(3))  # after close: at once
    assert written == [1, 2, 3]


def test_a_worker_lock_leaves_its_pages_cached_for_an_offline_one(
    make_index: MakeIndex, serve: Serve, tmp_path: Path
) -> None:
    # The workers hold their page writes back; closing the client must still leave every
    # page in the HTTP and page caches, so that an offline client reads them all.
    server: IndexServer = serve(
        make_index([Release("app", "1.0", requires_dist=("lib",)), Release("lib", "2.0")])
    )

    def client(offline: bool) -> IndexClient:
        return index_client(
            [server.url],
            workers=0 if offline else 2,
            offline=offline,
            http_cache=tmp_path / "http",
            page_cache=tmp_path / "pages",
            metadata_cache=tmp_path / "metadata",
        )

    with client(offline=False) as online:
        online.prefetch(["app", "lib"])
        assert [str(v) for v in online.project("app").versions()] == ["1.0"]
        assert [str(v) for v in online.project("lib").versions()] == ["2.0"]
    assert len(list((tmp_path / "pages").iterdir())) == 2
    with client(offline=True) as offline:
        assert [str(v) for v in offline.project("lib").versions()] == ["2.0"]
        assert [str(v) for v in offline.project("app").versions()] == ["1.0"]
