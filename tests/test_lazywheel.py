"""Wheel metadata through HTTP byte ranges, the persistent metadata cache, and their fallbacks.

Everything runs against the real loopback server (which honours ``Range`` unless told
not to) and real wheels from the fixture builder, made big with incompressible files
where the point is to read little of them.
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from packaging.tags import Tag

import monorepo
from fixtures.builder import Release
from fixtures.server import IndexServer, RequestRecord
from monorepo.errors import OfflineError
from monorepo.index.client import DistFile, IndexClient
from monorepo.index.http import HttpClient
from monorepo.index.httpcache import HttpCache
from monorepo.index.lazywheel import DEFAULT_TAIL, wheel_metadata
from monorepo.index.metadata import metadata_from_wheel, parse_metadata
from tests.helpers import MakeIndex, Serve, index_client, reqs

# Backends that prove a path never ran the hook (the sdist says Metadata-Version 2.1, so
# its PKG-INFO is not trusted and only a wheel can answer without the backend).
BACKEND_FILE = "_fixture_backend/fixture_backend.py"
BROKEN_BACKEND = "raise SystemExit('the build backend must not run')\n"


def _noise(size: int, seed: int = 0) -> str:
    """Text that deflate cannot shrink much (base-36 noise: ~65% of its size)."""
    rng = random.Random(seed)
    return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=size))


BIG_FILES = {"demo/blob.txt": _noise(1_500_000)}
# ~2500 central-directory entries of ~100 bytes: far more than the first 64 KiB tail.
MANY_FILES = {f"demo/pkg/a_module_with_a_rather_long_file_name_{i:05d}.py": "" for i in range(2500)}

DEPS = ("dep>=1", "other; sys_platform == 'win32'", "extra-dep; extra == 'x'")


def demo(
    *,
    files: dict[str, str] | None = None,
    sdist: bool = True,
    wheels: tuple[str, ...] = ("py3-none-any",),
    requires_dist: tuple[str, ...] = DEPS,
) -> Release:
    """demo 1.0: wheels without PEP 658 file, an sdist (2.1) whose backend must not run."""
    return Release(
        "demo",
        "1.0",
        requires_dist=requires_dist,
        core_metadata_file=False,
        metadata_version="2.1",
        sdist=sdist,
        wheels=wheels,
        files={BACKEND_FILE: BROKEN_BACKEND, **(files or {})},
    )


@pytest.fixture
def clients() -> Iterator[Callable[..., IndexClient]]:
    made: list[IndexClient] = []

    def factory(*urls: str, **kw: object) -> IndexClient:
        client = index_client(list(urls), backoff=0.001, **kw)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


def wheel_of(client: IndexClient, project: str = "demo") -> DistFile:
    (wheel,) = [f for f in client.project_files(project) if f.kind == "wheel"]
    return wheel


def file_requests(server: IndexServer) -> list[RequestRecord]:
    return server.requests_for(r"^/files/")


def test_range_read_matches_full_download_and_reads_little(
    make_index: MakeIndex, serve: Serve, clients: Callable[..., IndexClient]
) -> None:
    index = make_index([demo(files=BIG_FILES, sdist=False)])
    server = serve(index)
    client = clients(server.url)
    wheel = wheel_of(client)
    assert wheel.size is not None and wheel.size > 900_000

    metadata = client.release_metadata([wheel], wheel.tags)

    whole = metadata_from_wheel((index.files_dir / wheel.filename).read_bytes(), wheel.filename)
    assert metadata.requires_dist == whole.requires_dist == reqs(*DEPS)
    assert metadata.provides_extra == whole.provides_extra == ["x"]
    requests = file_requests(server)
    assert requests, "the wheel was never asked for"
    assert all(r.status == 206 and r.headers.get("range") for r in requests)
    assert requests[0].headers["range"] == f"bytes=-{DEFAULT_TAIL}"
    sent = sum(r.sent or 0 for r in requests)
    assert sent < wheel.size // 10, f"{sent} bytes of a {wheel.size}-byte wheel"


def test_range_read_of_a_member_outside_the_tail(
    make_index: MakeIndex, serve: Serve, clients: Callable[..., IndexClient]
) -> None:
    # A big file after the .dist-info pushes METADATA out of the first tail.
    index = make_index([demo(sdist=False)])
    wheel_name = next(n for n in index.entries if n.endswith(".whl"))
    source = zipfile.ZipFile(io.BytesIO((index.files_dir / wheel_name).read_bytes()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            out.writestr(info, source.read(info))
        out.writestr("zz_padding.bin", _noise(300_000).encode())
    index.replace_file(wheel_name, buffer.getvalue())
    server = serve(index)
    url = f"{server.base_url}/files/{wheel_name}"
    with HttpClient(backoff=0.001) as http:
        text = wheel_metadata(url, wheel_name, client=http, download=lambda: b"")
    assert parse_metadata(text, source="test").requires_dist == reqs(*DEPS)
    ranges = [r.headers["range"] for r in file_requests(server)]
    assert len(ranges) == 2  # the tail, then the member's header and data in one request
    first, _, last = ranges[1].removeprefix("bytes=").partition("-")
    assert int(last) - int(first) < 4096


def test_central_directory_bigger_than_the_first_tail(
    make_index: MakeIndex, serve: Serve, clients: Callable[..., IndexClient]
) -> None:
    index = make_index([demo(files=MANY_FILES, sdist=False)])
    server = serve(index)
    client = clients(server.url)
    wheel = wheel_of(client)
    with zipfile.ZipFile(index.files_dir / wheel.filename) as archive:
        central_directory = archive.start_dir
    assert wheel.size is not None
    assert wheel.size - central_directory > DEFAULT_TAIL  # the premise of the test

    assert client.metadata(wheel).requires_dist == reqs(*DEPS)
    requests = file_requests(server)
    assert all(r.status == 206 for r in requests)
    assert len(requests) >= 2
    # The rest of the central directory came in one further request.
    second = requests[1].headers["range"].removeprefix("bytes=")
    assert int(second.partition("-")[0]) <= central_directory


def test_small_tail_grows_to_the_central_directory(make_index: MakeIndex, serve: Serve) -> None:
    index = make_index([demo(sdist=False)])
    server = serve(index)
    name = next(n for n in index.entries if n.endswith(".whl"))
    with HttpClient(backoff=0.001) as http:
        text = wheel_metadata(
            f"{server.base_url}/files/{name}", name, client=http, download=lambda: b"", tail=64
        )
    assert parse_metadata(text, source="test").requires_dist == reqs(*DEPS)
    assert len(file_requests(server)) >= 2


def test_server_ignoring_range_falls_back_to_the_whole_wheel(
    make_index: MakeIndex, serve: Serve, clients: Callable[..., IndexClient]
) -> None:
    server = serve(make_index([demo(files=BIG_FILES)]), ranges=False)
    client = clients(server.url)
    wheel = wheel_of(client)
    files = client.project_files("demo")
    assert client.release_metadata(files, wheel.tags).requires_dist == reqs(*DEPS)
    wheel_requests = server.requests_for(r"\.whl$")
    assert [r.status for r in wheel_requests] == [200]  # the whole file, once, and used
    assert wheel_requests[0].sent == wheel.size


@pytest.mark.parametrize("status", [416, 501])
def test_server_refusing_range_falls_back_to_a_download(
    make_index: MakeIndex, serve: Serve, clients: Callable[..., IndexClient], status: int
) -> None:
    server = serve(make_index([demo(sdist=False)]))
    server.add_fault(r"\.whl$", "status", status=status, times=1)
    client = clients(server.url)
    wheel = wheel_of(client)
    assert client.metadata(wheel).requires_dist == reqs(*DEPS)
    requests = server.requests_for(r"\.whl$")
    assert [r.status for r in requests] == [status, 200]  # not retried: refused, then GET
    assert "range" in requests[0].headers and "range" not in requests[1].headers


def test_range_requests_are_retried_and_never_cached(
    make_index: MakeIndex, serve: Serve, clients: Callable[..., IndexClient], tmp_path: Path
) -> None:
    server = serve(make_index([demo(sdist=False)]))
    server.add_fault(r"\.whl$", "status", status=503, times=1)
    client = clients(server.url, http_cache=tmp_path / "http")
    assert client.metadata(wheel_of(client)).requires_dist == reqs(*DEPS)
    assert [r.status for r in server.requests_for(r"\.whl$")] == [503, 206]
    assert HttpCache(tmp_path / "http").load(wheel_of(client).url, None) is None


def test_zip64_wheel(make_index: MakeIndex, serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    index = make_index([demo(sdist=False)])
    name = next(n for n in index.entries if n.endswith(".whl"))
    source = zipfile.ZipFile(io.BytesIO((index.files_dir / name).read_bytes()))
    buffer = io.BytesIO()
    with monkeypatch.context() as patch:
        patch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)  # forces the ZIP64 end records
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
            for info in source.infolist():
                out.writestr(info, source.read(info))
    data = buffer.getvalue()
    assert b"PK\x06\x06" in data[-200:]  # a ZIP64 end of central directory record
    index.replace_file(name, data)
    server = serve(index)
    with HttpClient(backoff=0.001) as http:
        text = wheel_metadata(f"{server.base_url}/files/{name}", name, client=http, download=bytes)
    assert parse_metadata(text, source="test").requires_dist == reqs(*DEPS)
    assert all(r.status == 206 for r in file_requests(server))


def test_file_index_reads_the_wheel_in_place(
    make_index: MakeIndex, clients: Callable[..., IndexClient]
) -> None:
    index = make_index([demo()])
    client = clients(index.file_url)
    files = client.project_files("demo")
    wheel = wheel_of(client)
    assert wheel.url.startswith("file://")
    assert client.release_metadata(files, wheel.tags).requires_dist == reqs(*DEPS)
    direct = wheel_metadata(wheel.url, wheel.filename, client=client.http, download=bytes)
    assert parse_metadata(direct, source="test").requires_dist == reqs(*DEPS)


def test_file_range_reads(make_index: MakeIndex) -> None:
    index = make_index([demo(sdist=False)])
    name = next(n for n in index.entries if n.endswith(".whl"))
    data = (index.files_dir / name).read_bytes()
    with HttpClient() as http:
        tail = http.get_suffix(index.url_for(name), 100)
        part = http.get_range(index.url_for(name), 10, 19)
        whole = http.get_suffix(index.url_for(name), len(data) + 1000)
    assert (tail.body, tail.start, tail.total) == (data[-100:], len(data) - 100, len(data))
    assert (part.body, part.start) == (data[10:20], 10)
    assert whole.body == data and whole.start == 0


def test_offline_range_read_is_refused(make_index: MakeIndex, serve: Serve) -> None:
    server = serve(make_index([demo(sdist=False)]))
    with HttpClient(offline=True) as http, pytest.raises(OfflineError, match="--offline"):
        http.get_suffix(f"{server.base_url}/files/demo-1.0-py3-none-any.whl", 10)
    assert server.requests == []


# ----------------------------------------------------------------------------- the cache


def test_metadata_cache_answers_a_new_client_without_requests(
    make_index: MakeIndex, serve: Serve, clients: Callable[..., IndexClient]
) -> None:
    server = serve(make_index([demo(files=BIG_FILES)]))
    first = clients(server.url)
    files = first.project_files("demo")
    tags = wheel_of(first).tags
    expected = first.release_metadata(files, tags)
    assert server.requests_for(r"\.whl$"), "the first client read the wheel"

    server.clear_requests()
    second = clients(server.url)
    files = second.project_files("demo")
    metadata = second.release_metadata(files, tags)
    assert metadata.requires_dist == expected.requires_dist == reqs(*DEPS)
    assert file_requests(server) == []


def test_metadata_cache_is_keyed_by_the_file_hash(
    make_index: MakeIndex, serve: Serve, clients: Callable[..., IndexClient]
) -> None:
    index = make_index([demo(sdist=False)])
    server = serve(index)
    client = clients(server.url)
    wheel = wheel_of(client)
    client.metadata(wheel)
    assert client.metadata_cache is not None and wheel.sha256 is not None
    cache_root = client.metadata_cache.root
    assert (cache_root / wheel.sha256).read_bytes().startswith(b"Metadata-Version:")
    # A new version of the file (new hash) is not answered from the old entry.
    index.publish(demo(sdist=False, requires_dist=("changed",)))
    server.clear_requests()
    fresh = clients(server.url)
    assert fresh.metadata(wheel_of(fresh)).requires_dist == reqs("changed")
    assert file_requests(server)


def test_no_sha256_means_no_cache(
    make_index: MakeIndex, serve: Serve, clients: Callable[..., IndexClient]
) -> None:
    index = make_index([demo(sdist=False)])
    page = index.simple_dir / "demo" / "index.json"
    doc = json.loads(page.read_text())
    for entry in doc["files"]:
        entry["hashes"] = {}
    page.write_text(json.dumps(doc))
    server = serve(index, formats=("json",))
    client = clients(server.url)
    wheel = wheel_of(client)
    assert wheel.sha256 is None
    assert client.metadata(wheel).requires_dist == reqs(*DEPS)
    assert client.metadata_cache is not None
    root = client.metadata_cache.root
    assert not root.exists() or not any(root.iterdir())


def test_offline_after_one_online_run(
    make_index: MakeIndex, serve: Serve, clients: Callable[..., IndexClient]
) -> None:
    server = serve(make_index([demo(files=BIG_FILES)]))
    online = clients(server.url)
    tags = wheel_of(online).tags
    online.release_metadata(online.project_files("demo"), tags)
    url = server.url
    server.stop()
    offline = clients(url, offline=True)
    metadata = offline.release_metadata(offline.project_files("demo"), tags)
    assert metadata.requires_dist == reqs(*DEPS)


# ----------------------------------------------------------------------------- in a lock

LINUX = '{ name = "linux", python = "3.11", platform = "linux", machine = "x86_64" }'


def test_lock_reads_wheels_by_range_and_a_warm_lock_asks_nothing(
    make_index: MakeIndex, serve: Serve, make_project: Callable[..., Path]
) -> None:
    releases = [
        Release(
            "app",
            "1.0",
            requires_dist=("lib>=1",),
            core_metadata_file=False,
            metadata_version="2.1",
            files={BACKEND_FILE: BROKEN_BACKEND, **BIG_FILES},
        ),
        Release(
            "lib",
            "1.0",
            core_metadata_file=False,
            metadata_version="2.1",
            files={BACKEND_FILE: BROKEN_BACKEND},
        ),
    ]
    server = serve(make_index(releases))
    project = make_project(
        '[project]\nname = "proj"\nversion = "0"\ndependencies = ["app"]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{LINUX}]\n'
    )
    monorepo.lock(project)
    first = (project / "pylock.toml").read_bytes()
    assert b'name = "lib"' in first
    assert all(r.status == 206 for r in server.requests_for(r"\.whl$"))

    server.clear_requests()
    (project / "pylock.toml").unlink()
    monorepo.lock(project)
    assert (project / "pylock.toml").read_bytes() == first
    assert server.requests_for(r"\.whl$") == []

    server.stop()
    (project / "pylock.toml").unlink()
    monorepo.lock(project, offline=True)
    assert (project / "pylock.toml").read_bytes() == first


# ----------------------------------------------------------------------------- which wheel


def test_a_target_compatible_wheel_is_preferred(
    make_index: MakeIndex, serve: Serve, clients: Callable[..., IndexClient]
) -> None:
    linux = "cp311-cp311-manylinux_2_17_x86_64"
    server = serve(make_index([demo(wheels=("py3-none-any", linux), sdist=False)]))
    client = clients(server.url)
    files = client.project_files("demo")
    target = frozenset({Tag("cp311", "cp311", "manylinux_2_17_x86_64")})
    assert client.release_metadata(files, target).requires_dist == reqs(*DEPS)
    paths = {r.path for r in file_requests(server)}
    assert paths == {f"/files/demo-1.0-{linux}.whl"}


def test_the_smallest_wheel_when_none_is_compatible(
    make_index: MakeIndex, serve: Serve, clients: Callable[..., IndexClient]
) -> None:
    # Sorted by name the cp311 wheel comes first; by size the smaller py3 one.
    server = serve(make_index([demo(wheels=("cp311-cp311-win_amd64", "py3-none-any"))]))
    client = clients(server.url)
    files = client.project_files("demo")
    sizes = {f.filename: f.size or 0 for f in files if f.kind == "wheel"}
    smallest = min(sizes, key=lambda name: sizes[name])
    assert smallest == "demo-1.0-py3-none-any.whl"
    assert client.release_metadata(files, frozenset()).requires_dist == reqs(*DEPS)
    assert {r.path for r in server.requests_for(r"\.whl$")} == {f"/files/{smallest}"}
