"""The index worker process: same answers as in-process, errors intact, losses survived."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fixtures.builder import Release
from fixtures.server import IndexServer
from monorepo._core.reporter import RecordingReporter
from monorepo._core.speed import workerproc
from monorepo.errors import HashMismatchError, IndexClientError
from monorepo.index.client import DistFile, IndexClient
from tests.helpers import MakeIndex, Serve, index_client

RELEASES = [
    Release("app", "1.0", requires_dist=("lib>=1",), core_metadata_file=False),
    Release(
        "app",
        "2.0",
        requires_dist=("lib>=2", "extra; python_version<'3'"),
        core_metadata_file=False,
    ),
    Release(
        "lib",
        "2.0",
        wheels=("py3-none-any", "cp311-cp311-manylinux_2_17_x86_64"),
        core_metadata_file=False,
    ),
]


def _client(server: IndexServer, tmp: Path, *, workers: int, **kw: object) -> IndexClient:
    """A client with its own caches, so each one really reads the server."""
    return index_client(
        [server.url],
        workers=workers,
        backoff=0.001,
        http_cache=tmp / "http",
        page_cache=tmp / "pages",
        metadata_cache=tmp / "metadata",
        **kw,  # type: ignore[arg-type]
    )


def _read(client: IndexClient) -> tuple[tuple[DistFile, ...], tuple[object, ...]]:
    files = client.project_files("app") + client.project_files("lib")
    wheels = [f for f in files if f.kind == "wheel"]
    metadata = [client.metadata(f) for f in wheels]
    return (
        tuple(files),
        tuple(
            (str(m.name), str(m.version), tuple(map(str, m.requires_dist or ()))) for m in metadata
        ),
    )


def test_worker_answers_exactly_as_the_process_itself(
    make_index: MakeIndex, serve: Serve, tmp_path: Path
) -> None:
    server = serve(make_index(RELEASES))
    with _client(server, tmp_path / "a", workers=0) as local:
        expected = _read(local)
        assert local._workers == []
    with _client(server, tmp_path / "b", workers=1) as remote:
        got = _read(remote)
        (worker,) = remote._workers
        assert worker.alive
        # two pages and one METADATA per wheel, all answered by the worker process
        assert worker.answered == 2 + len([f for f in got[0] if f.kind == "wheel"])
    assert got == expected
    assert not worker.alive  # closed with the client
    assert any(r.status == 206 for r in server.requests_for(r"\.whl$"))  # read by byte ranges


def test_worker_errors_keep_their_type_message_and_retries(
    make_index: MakeIndex, serve: Serve, tmp_path: Path
) -> None:
    server = serve(make_index(RELEASES))
    server.add_fault(r"^/simple/lib/$", "status", status=503, times=100)
    reporter = RecordingReporter()
    with _client(server, tmp_path, workers=1, retries=1, reporter=reporter) as client:
        with pytest.raises(IndexClientError) as caught:
            client.project_files("lib")
        assert server.url + "lib/" in str(caught.value)
        (worker,) = client._workers
        assert worker.alive and worker.answered == 1
        # the worker's retry was reported through this process's reporter
        assert any("retry 1 of 1" in text for _, text in reporter.messages)
        assert client.project_files("app")  # the worker still serves
    assert len(server.requests_for(r"^/simple/lib/$")) == 2


def test_a_killed_worker_costs_time_not_results(
    make_index: MakeIndex, serve: Serve, tmp_path: Path
) -> None:
    server = serve(make_index(RELEASES))
    with _client(server, tmp_path / "a", workers=0) as local:
        expected = _read(local)
    with _client(server, tmp_path / "b", workers=1) as client:
        (worker,) = client._workers
        client.project_files("app")
        # A real fault: the worker process dies (as under the OOM killer).
        os.kill(worker._process.pid, signal.SIGKILL)
        worker._process.wait()
        got = _read(client)
        assert not worker.alive
    assert got == expected


def test_spares_are_taken_by_spawn() -> None:
    kind = ("monorepo.index.speed.worker", "_serve")
    workerproc.prestart(*kind, 2)
    spares = list(workerproc._spares[kind])
    assert len(spares) == 2
    taken = [workerproc.spawn(*kind), workerproc.spawn(*kind)]
    try:
        assert taken == spares
        assert workerproc._spares[kind] == []
    finally:
        for process in taken:
            workerproc.stop(process)
    # stdin closed before any settings were sent: a clean exit
    assert [p.returncode for p in taken] == [0, 0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_SETPIPE_SZ is Linux's")
def test_worker_pipes_hold_a_parsed_page_at_once() -> None:
    import fcntl

    limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    if limit < workerproc.PIPE_SIZE and os.geteuid() != 0:
        pytest.skip(f"this system caps pipes at {limit} bytes")
    process = workerproc.spawn("monorepo.index.speed.worker", "_serve")
    try:
        assert process.stdin is not None and process.stdout is not None
        for pipe in (process.stdin, process.stdout):
            assert fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ) == workerproc.PIPE_SIZE
    finally:
        workerproc.stop(process)


def test_unused_spares_are_stopped_at_exit() -> None:
    code = (
        "from monorepo._core.speed import workerproc\n"
        "workerproc.prestart('monorepo.indexworker', '_serve', 2)\n"
        "print(*[p.pid for p in workerproc._spares[('monorepo.indexworker', '_serve')]])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    )
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{p}").exists() for p in pids)


def test_two_workers_share_the_requests(
    make_index: MakeIndex, serve: Serve, tmp_path: Path
) -> None:
    server = serve(make_index(RELEASES))
    with _client(server, tmp_path / "a", workers=0) as local:
        expected = _read(local)
    with _client(server, tmp_path / "b", workers=2) as client:
        got = _read(client)  # one request at a time: the workers take turns
        answered = [w.answered for w in client._workers]
    assert got == expected
    assert answered == [3, 3]  # 2 pages and 4 wheels' METADATA


PEP658 = [
    Release("app", "1.0", requires_dist=("lib>=1",)),
    Release("lib", "2.0", wheels=("py3-none-any",)),
]


def test_pep658_files_are_read_by_the_worker_and_checked(
    make_index: MakeIndex, serve: Serve, tmp_path: Path
) -> None:
    server = serve(make_index(PEP658))
    with _client(server, tmp_path / "a", workers=0) as local:
        expected = _read(local)
    with _client(server, tmp_path / "b", workers=1) as remote:
        got = _read(remote)
        (worker,) = remote._workers
        wheels = [f for f in got[0] if f.kind == "wheel"]
        assert wheels and all(isinstance(f.core_metadata, str) for f in wheels)
        # two pages and one PEP 658 file per wheel, all answered by the worker process
        assert worker.answered == 2 + len(wheels)
    assert got == expected
    # the worker stored each text in the metadata cache, under the wheel's own sha256
    for wheel in wheels:
        entry = tmp_path / "b" / "metadata" / str(wheel.sha256)
        assert entry.read_bytes().startswith(b"Metadata-Version")
    assert len(server.requests_for(r"\.whl\.metadata$")) == 2 * len(wheels)
    assert not server.requests_for(r"\.whl$")  # no wheel was opened
    # A corrupted metadata file fails its sha256 in the worker, with the same error type.
    server.add_fault(r"^/files/lib-.*\.whl\.metadata$", "corrupt", times=100)
    with _client(server, tmp_path / "c", workers=1) as client:
        (lib,) = [f for f in client.project_files("lib") if f.kind == "wheel"]
        with pytest.raises(HashMismatchError, match=r"lib-2\.0-py3-none-any\.whl\.metadata"):
            client.metadata(lib)
        assert client._workers[0].alive


def test_a_lock_with_workers_leaves_the_network_to_them(
    make_index: MakeIndex, serve: Serve, make_project: Callable[..., Path]
) -> None:
    """The resolving process loads no HTTP client (60 ms of start-up) when workers serve."""
    if workerproc.index_workers() == 0:
        pytest.skip("one core: a lock starts no index workers")
    server = serve(make_index(PEP658))
    project = make_project(
        f'[project]\nname = "p"\nversion = "0"\ndependencies = ["app"]\n\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\nbuild-dependencies = false\n'
    )
    code = (
        "import sys\nfrom monorepo.locking import locker\n"
        "result = locker.lock(sys.argv[1])\n"
        "print(*sorted(f'{p.name}=={p.version}' for p in result.document.packages))\n"
        "print('httpx' in sys.modules, 'ssl' in sys.modules)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(project)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["app==1.0 lib==2.0", "False False"]
    assert server.requests_for(r"\.whl\.metadata$")


def test_a_lock_asks_for_its_pages_before_loading_the_resolver(
    make_index: MakeIndex, serve: Serve, make_project: Callable[..., Path]
) -> None:
    """The resolver, finder and metadata parsing (a fifth of a second of imports) load
    while the first pages are fetched, and a relock that reuses its resolution never
    loads them at all."""
    server = serve(make_index(PEP658))
    project = make_project(
        f'[project]\nname = "p"\nversion = "0"\ndependencies = ["app"]\n\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\nbuild-dependencies = false\n'
    )
    heavy = (
        "monorepo.resolve.resolver",
        "monorepo.resolve.finder",
        "monorepo.index.metadata",
        "resolvelib",
    )
    code = (
        "import sys\nfrom monorepo.locking import locker\nfrom monorepo.index.client import IndexClient\n"
        f"heavy = {heavy!r}\n"
        "loaded = lambda: sorted(m for m in heavy if m in sys.modules)\n"
        "first = []\noriginal = IndexClient.prefetch\n"
        "def prefetch(self, names):\n"
        "    first.append(loaded())\n"
        "    return original(self, names)\n"
        "IndexClient.prefetch = prefetch\n"
        "result = locker.lock(sys.argv[1])\n"
        "print(*sorted(f'{p.name}=={p.version}' for p in result.document.packages))\n"
        "print(first[0], loaded())\n"
    )

    def lock() -> list[str]:
        (project / "pylock.toml").unlink(missing_ok=True)
        run = subprocess.run(
            [sys.executable, "-c", code, str(project)], capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        return run.stdout.splitlines()

    assert lock() == ["app==1.0 lib==2.0", f"[] {sorted(heavy)}"]
    assert lock() == ["app==1.0 lib==2.0", "[] []"]


def test_a_lock_from_wheels_on_a_json_index_leaves_the_rarely_needed_modules_unloaded(
    make_index: MakeIndex, serve: Serve, make_project: Callable[..., Path]
) -> None:
    """An HTML page parser and the build-backend machinery (file locks, venv, hooks) cost
    every lock their import time; a lock that meets no HTML page and builds no metadata
    from source must not load them."""
    server = serve(make_index(PEP658))
    project = make_project(
        f'[project]\nname = "p"\nversion = "0"\ndependencies = ["app"]\n\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\nbuild-dependencies = false\n'
    )
    rare = ("html.parser", "monorepo.index.anchors", "filelock", "pyproject_hooks", "venv")
    code = (
        "import sys\nfrom monorepo.locking import locker\n"
        "result = locker.lock(sys.argv[1])\n"
        "print(*sorted(f'{p.name}=={p.version}' for p in result.document.packages))\n"
        f"print(sorted(m for m in {rare!r} if m in sys.modules))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(project)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["app==1.0 lib==2.0", "[]"]


def test_range_read_metadata_is_cached_by_the_worker(
    make_index: MakeIndex, serve: Serve, tmp_path: Path
) -> None:
    server = serve(make_index(RELEASES))
    with _client(server, tmp_path, workers=1) as client:
        (lib,) = [f for f in client.project_files("lib") if f.tags and "py3" in f.filename]
        entry = tmp_path / "metadata" / str(lib.sha256)
        assert not entry.exists()
        meta = client.metadata(lib)
        assert entry.exists()
        before = entry.stat().st_ino
        # the resolving process's own store finds the entry there and leaves it alone
        assert client.metadata_cache is not None
        client.metadata_cache.store(lib.sha256, b"Metadata-Version: 2.1\nName: other\n")
        assert entry.stat().st_ino == before
        assert b"Name: lib" in entry.read_bytes() and str(meta.name) == "lib"
