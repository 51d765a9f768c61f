"""Core metadata from each source in DESIGN.md order, with the build backend really run."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag
from packaging.utils import canonicalize_name

from fixtures import hostile
from fixtures.builder import BACKEND_SOURCE, Release
from fixtures.server import IndexServer
from monorepo.errors import ExtractError, HashMismatchError, MetadataError
from monorepo.extract.archive import extract_sdist
from monorepo.index.backend import BuildBackend
from monorepo.index.client import IndexClient
from monorepo.index.metadata import (
    metadata_from_build_backend,
    metadata_from_pkg_info,
    metadata_from_wheel,
    parse_metadata,
    sdist_pkg_info,
)
from monorepo.index.pages import DistFile
from monorepo.index.speed.metadatacache import MetadataCache
from monorepo.project.targets import Target
from monorepo.resolve.finder import IndexFinder, IndexRelease
from tests.helpers import MakeIndex, Serve, current_cache, index_client, reqs

BACKEND_FILE = "_fixture_backend/fixture_backend.py"

# The in-tree backend, wrapped so that metadata it computes says it came from the hook.
MARKING_BACKEND = (
    BACKEND_SOURCE
    + """

_original_prepare = prepare_metadata_for_build_wheel


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    info = _original_prepare(metadata_directory, config_settings)
    with open(os.path.join(metadata_directory, info, "METADATA"), "a") as fh:
        fh.write("Requires-Dist: written-by-the-hook\\n")
    return info
"""
)

# A backend that cannot run: proves a path never called the backend.
BROKEN_BACKEND = "raise SystemExit('the build backend must not run')\n"

FAILING_BACKEND = (
    BACKEND_SOURCE
    + """

def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    import sys
    print("setup exploded: missing compiler flag XYZZY", file=sys.stderr)
    raise RuntimeError("cannot prepare")
"""
)


def only(client: IndexClient, project: str, kind: str) -> DistFile:
    (dist,) = [f for f in client.project_files(project) if f.kind == kind]
    return dist


Served = Callable[..., tuple[IndexServer, IndexClient]]


@pytest.fixture
def served(make_index: MakeIndex, serve: Serve) -> Iterator[Served]:
    """``served(*releases)``: a server over a fresh index and a client configured for it."""
    clients: list[IndexClient] = []

    def factory(*releases: Release) -> tuple[IndexServer, IndexClient]:
        server = serve(make_index(releases))
        client = index_client([server.url], backoff=0.001)
        clients.append(client)
        return server, client

    yield factory
    for client in clients:
        client.close()


# ----------------------------------------------------------------------------- pure parsing


def test_pkg_info_trusted_only_from_2_2_without_dynamic_requirements() -> None:
    base = "Name: demo\nVersion: 1.0\nRequires-Dist: dep>=1\nRequires-Python: >=3.9\n"
    trusted = metadata_from_pkg_info("Metadata-Version: 2.2\n" + base)
    assert trusted is not None
    assert trusted.requires_dist == reqs("dep>=1")
    assert trusted.requires_python == SpecifierSet(">=3.9")
    assert metadata_from_pkg_info("Metadata-Version: 2.1\n" + base) is None
    assert metadata_from_pkg_info("Metadata-Version: 1.0\n" + base) is None
    assert metadata_from_pkg_info(base) is None
    for field in ("Requires-Dist", "requires-python"):
        text = f"Metadata-Version: 2.2\nDynamic: {field}\n" + base
        assert metadata_from_pkg_info(text) is None
    other_dynamic = metadata_from_pkg_info("Metadata-Version: 2.4\nDynamic: Summary\n" + base)
    assert other_dynamic is not None and other_dynamic.requires_dist == reqs("dep>=1")


def test_odd_fields_are_tolerated() -> None:
    text = (
        "Metadata-Version: 2.4\nName: demo\nVersion: 1.0\n"
        "License-Expression: not a (valid) SPDX expression!!\n"
        "Requires-Python: >=3.x\n"
        "Provides-Extra: Not_Normalised\n"
        "Project-URL: no comma here\n"
        "Dynamic: Name\n"
        "Requires-Dist: dep; extra == 'Not_Normalised'\n"
    )
    metadata = parse_metadata(text, source="demo")
    assert metadata.name == "demo"
    assert metadata.requires_python is None  # unparsable: dropped, not fatal
    assert metadata.requires_dist == reqs("dep; extra == 'Not_Normalised'")


def test_unknown_future_metadata_version_is_read() -> None:
    metadata = metadata_from_pkg_info(
        "Metadata-Version: 9.1\nName: demo\nVersion: 1.0\nRequires-Dist: dep\n"
    )
    assert metadata is not None and metadata.requires_dist == reqs("dep")


def test_unparsable_requires_dist_is_an_error() -> None:
    with pytest.raises(MetadataError, match=r"demo-1\.0\.whl.*Requires-Dist.*dep >= = 1"):
        parse_metadata(
            "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Dist: dep >= = 1\n",
            source="demo-1.0.whl",
        )


def test_malformed_wheel_is_a_metadata_error() -> None:
    with pytest.raises(MetadataError, match=r"demo-1\.0-py3-none-any\.whl"):
        metadata_from_wheel(b"not a zip", "demo-1.0-py3-none-any.whl")


# ----------------------------------------------------------------------------- wheels


def test_wheel_metadata_from_pep658_file(served: Served) -> None:
    server, client = served(
        Release("demo", "1.0", requires_dist=("dep>=2", "extra-dep; extra == 'x'"))
    )
    wheel = only(client, "demo", "wheel")
    assert isinstance(wheel.core_metadata, str)
    metadata = client.metadata(wheel)
    assert metadata.requires_dist == reqs("dep>=2", "extra-dep; extra == 'x'")
    assert metadata.provides_extra == ["x"]
    assert client.metadata(wheel) is metadata  # memoised
    assert len(server.requests_for(r"\.whl\.metadata$")) == 1
    assert server.requests_for(r"\.whl$") == []


def test_pep658_file_hash_is_checked(make_index: MakeIndex, serve: Serve) -> None:
    index = make_index([Release("demo", "1.0", requires_dist=("dep",))])
    index.replace_file(
        "demo-1.0-py3-none-any.whl.metadata",
        b"Metadata-Version: 2.2\nName: demo\nVersion: 1.0\nRequires-Dist: evil\n",
    )
    server = serve(index)
    with index_client([server.url]) as client:
        wheel = only(client, "demo", "wheel")
        with pytest.raises(HashMismatchError, match=r"demo-1\.0-py3-none-any\.whl\.metadata"):
            client.metadata(wheel)


def test_wheel_metadata_from_download_without_pep658(served: Served) -> None:
    server, client = served(
        Release("demo", "1.0", requires_dist=("dep<3",), core_metadata_file=False, sdist=False)
    )
    wheel = only(client, "demo", "wheel")
    assert wheel.core_metadata is False
    assert client.metadata(wheel).requires_dist == reqs("dep<3")
    assert len(server.requests_for(r"demo-1\.0-py3-none-any\.whl$")) == 1
    assert server.requests_for(r"\.metadata$") == []


def test_prefetch_metadata_shares_the_work(served: Served) -> None:
    server, client = served(Release("demo", "1.0"), Release("demo", "1.1"))
    wheels = [f for f in client.project_files("demo") if f.kind == "wheel"]
    tags = frozenset().union(*(w.tags for w in wheels))
    client.prefetch_metadata([[w] for w in wheels], tags)
    deadline = time.monotonic() + 10
    while len(server.requests_for(r"\.metadata$")) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(server.requests_for(r"\.metadata$")) == 2  # fetched in the background
    versions = sorted(str(client.release_metadata([w], tags).version) for w in wheels)
    assert versions == ["1.0", "1.1"]
    assert len(server.requests_for(r"\.metadata$")) == 2  # and not again


# ----------------------------------------------------------------------------- sdists


def test_sdist_pkg_info_used_without_running_backend(served: Served) -> None:
    server, client = served(
        Release(
            "demo",
            "1.0",
            requires_dist=("dep==1.*",),
            requires_python=">=3.10",
            wheels=(),
            files={BACKEND_FILE: BROKEN_BACKEND},
        )
    )
    sdist = only(client, "demo", "sdist")
    metadata = client.metadata(sdist)
    assert metadata.requires_dist == reqs("dep==1.*")
    assert metadata.requires_python == SpecifierSet(">=3.10")
    assert len(server.requests_for(r"demo-1\.0\.tar\.gz$")) == 1


def test_sdist_without_pkg_info_runs_the_in_tree_backend(served: Served) -> None:
    _server, client = served(
        Release(
            "demo",
            "1.0",
            requires_dist=("dep>=1",),
            wheels=(),
            pkg_info=False,
            files={BACKEND_FILE: MARKING_BACKEND},
        )
    )
    metadata = client.metadata(only(client, "demo", "sdist"))
    assert metadata.requires_dist == reqs("dep>=1", "written-by-the-hook")


def test_a_client_without_a_build_backend_names_the_release_that_needs_one(
    make_index: MakeIndex, serve: Serve
) -> None:
    """The build backend is a collaborator the caller gives (or not): without one, a
    release only its backend can describe is an error naming it, and nothing runs."""
    server = serve(
        make_index(
            [
                Release(
                    "demo",
                    "1.0",
                    wheels=(),
                    pkg_info=False,
                    files={BACKEND_FILE: BROKEN_BACKEND},
                )
            ]
        )
    )
    with (
        index_client(server.url) as client,
        IndexClient(client.index_urls, http=client.http) as bare,
        pytest.raises(MetadataError, match=r"demo 1\.0 \(demo-1\.0\.tar\.gz\).*no build backend"),
    ):
        bare.metadata(only(bare, "demo", "sdist"))


def test_dynamic_requires_dist_asks_the_backend(served: Served) -> None:
    _server, client = served(
        Release("demo", "1.0", requires_dist=("dep>=1", "two"), dynamic=("Requires-Dist",))
    )
    metadata = client.metadata(only(client, "demo", "sdist"))
    # PKG-INFO lists no Requires-Dist at all: these can only come from the hook.
    assert metadata.requires_dist == reqs("dep>=1", "two")


def test_old_metadata_version_asks_the_backend(served: Served) -> None:
    _server, client = served(
        Release(
            "demo",
            "1.0",
            requires_dist=("dep",),
            metadata_version="2.1",
            wheels=(),
            files={BACKEND_FILE: MARKING_BACKEND},
        )
    )
    metadata = client.metadata(only(client, "demo", "sdist"))
    assert metadata.requires_dist == reqs("dep", "written-by-the-hook")


def test_backend_without_prepare_hook_falls_back_to_build_wheel(served: Served) -> None:
    backend = BACKEND_SOURCE + "\n\ndel prepare_metadata_for_build_wheel\n"
    _server, client = served(
        Release(
            "demo",
            "1.0",
            requires_dist=("dep>=4",),
            wheels=(),
            pkg_info=False,
            files={BACKEND_FILE: backend},
        )
    )
    assert client.metadata(only(client, "demo", "sdist")).requires_dist == reqs("dep>=4")


def test_backend_failure_names_package_file_and_output(served: Served) -> None:
    _server, client = served(
        Release("demo", "1.0", wheels=(), pkg_info=False, files={BACKEND_FILE: FAILING_BACKEND})
    )
    with pytest.raises(MetadataError) as caught:
        client.metadata(only(client, "demo", "sdist"))
    message = str(caught.value)
    assert "demo 1.0" in message
    assert "demo-1.0.tar.gz" in message
    assert "XYZZY" in message  # the hook's stderr tail


# The build-requires test creates a real virtual environment with pip (a few seconds).

HELPER_BACKEND = (
    BACKEND_SOURCE
    + """

_original_prepare = prepare_metadata_for_build_wheel


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    import helper_tool

    info = _original_prepare(metadata_directory, config_settings)
    with open(os.path.join(metadata_directory, info, "METADATA"), "a") as fh:
        fh.write("Requires-Dist: helper-was==" + helper_tool.__version__ + "\\n")
    return info
"""
)


def test_build_requires_installed_in_isolated_env(served: Served) -> None:
    demo = Release(
        "demo",
        "1.0",
        wheels=(),
        pkg_info=False,
        build_requires=("helper-tool>=1",),
        files={BACKEND_FILE: HELPER_BACKEND},
    )
    server, client = served(demo, Release("helper-tool", "1.3", sdist=False))
    sdist = only(client, "demo", "sdist")
    assert client.metadata(sdist).requires_dist == reqs("helper-was==1.3")
    # pip in the build environment got helper-tool from the same index.
    assert server.requests_for(r"helper_tool-1\.3-py3-none-any\.whl$")


def test_build_requires_offline_without_cached_env_fails_clearly(
    make_index: MakeIndex, serve: Serve
) -> None:
    demo = Release("demo", "1.0", wheels=(), pkg_info=False, build_requires=("helper-tool",))
    server = serve(make_index([demo, Release("helper-tool", "1.0", sdist=False)]))
    with index_client([server.url]) as online:
        sdist = only(online, "demo", "sdist")
        online.fetch(sdist.url, sha256=sdist.sha256)  # fill the HTTP cache, not the build env
    with (
        index_client([server.url], offline=True) as offline,
        pytest.raises(MetadataError) as caught,
    ):
        offline.metadata(sdist)
    message = str(caught.value)
    assert "demo 1.0" in message and "helper-tool" in message and "--offline" in message


def test_hook_output_never_reaches_the_terminal(
    served: Served, capfd: pytest.CaptureFixture[str]
) -> None:
    _server, client = served(
        Release("demo", "1.0", wheels=(), pkg_info=False, files={BACKEND_FILE: FAILING_BACKEND})
    )
    capfd.readouterr()
    with pytest.raises(MetadataError, match="XYZZY"):
        client.metadata(only(client, "demo", "sdist"))
    out, err = capfd.readouterr()  # file descriptors 1 and 2, subprocesses included
    assert "XYZZY" not in out + err
    assert out == "" and err == ""


# ----------------------------------------------------------------------------- the order


def all_tags(client: IndexClient, project: str) -> frozenset[Tag]:
    return frozenset().union(*(f.tags for f in client.project_files(project)))


def test_pep658_file_comes_first(served: Served) -> None:
    server, client = served(
        Release("demo", "1.0", requires_dist=("dep",), files={BACKEND_FILE: BROKEN_BACKEND})
    )
    files = client.project_files("demo")
    assert client.release_metadata(files, all_tags(client, "demo")).requires_dist == reqs("dep")
    assert [r.path for r in server.requests_for("^/files/")] == [
        "/files/demo-1.0-py3-none-any.whl.metadata"
    ]


def test_wheel_metadata_by_ranges_comes_before_downloading_the_sdist(served: Served) -> None:
    # Without a PEP 658 file, the wheel's METADATA (the same bytes) costs a few small
    # range requests; the sdist, even with a trusted PKG-INFO, would be a whole download.
    server, client = served(
        Release(
            "demo",
            "1.0",
            requires_dist=("dep",),
            core_metadata_file=False,
            files={BACKEND_FILE: BROKEN_BACKEND},
        )
    )
    files = client.project_files("demo")
    assert client.release_metadata(files, all_tags(client, "demo")).requires_dist == reqs("dep")
    requests = server.requests_for("^/files/")
    assert requests and all(r.path == "/files/demo-1.0-py3-none-any.whl" for r in requests)
    assert all(r.status == 206 for r in requests)


def test_a_warm_lookup_opens_the_one_cache_entry_it_stored(
    make_index: MakeIndex, serve: Serve, tmp_path: Path
) -> None:
    # The metadata read from the preferred wheel is kept under that wheel's hash; the
    # next run must look there first, not try every file of the release in page order.
    wheels = ("cp311-cp311-win_amd64", "cp311-cp311-macosx_11_0_arm64", "py3-none-any")
    demo = Release("demo", "1.0", requires_dist=("dep",), core_metadata_file=False, wheels=wheels)
    server = serve(make_index([demo]))
    loads: list[str | None] = []

    class CountingCache(MetadataCache):
        def load(self, sha256: str | None) -> bytes | None:
            loads.append(sha256)
            return super().load(sha256)

    cache = CountingCache(tmp_path / "metadata")
    for _ in range(2):
        loads.clear()
        with index_client([server.url], metadata_cache=tmp_path / "unused") as client:
            client.metadata_cache = cache
            files = client.project_files("demo")
            tags = all_tags(client, "demo")
            assert client.release_metadata(files, tags).requires_dist == reqs("dep")
    stored = [entry.name for entry in (tmp_path / "metadata").iterdir()]
    assert len(stored) == 1 and loads == stored


def test_trusted_pkg_info_when_there_is_no_wheel(served: Served) -> None:
    server, client = served(
        Release(
            "demo",
            "1.0",
            requires_dist=("dep",),
            wheels=(),
            files={BACKEND_FILE: BROKEN_BACKEND},
        )
    )
    files = client.project_files("demo")
    assert client.release_metadata(files, all_tags(client, "demo")).requires_dist == reqs("dep")
    assert [r.path for r in server.requests_for("^/files/")] == ["/files/demo-1.0.tar.gz"]


def test_old_pkg_info_and_no_pep658_reads_the_wheel_never_the_hook(served: Served) -> None:
    server, client = served(
        Release(
            "demo",
            "1.0",
            requires_dist=("dep>=2",),
            metadata_version="2.1",
            core_metadata_file=False,
            files={BACKEND_FILE: BROKEN_BACKEND},
        )
    )
    files = client.project_files("demo")
    metadata = client.release_metadata(files, all_tags(client, "demo"))
    assert metadata.requires_dist == reqs("dep>=2")
    wheel_requests = server.requests_for(r"\.whl$")
    assert wheel_requests and all(r.status == 206 for r in wheel_requests)


def test_finder_reads_a_wheel_the_target_cannot_install(served: Served) -> None:
    # Only a Windows wheel and an sdist whose PKG-INFO is too old: a Linux target still
    # gets the dependencies from the wheel (markers make them the same), not the hook.
    server, client = served(
        Release(
            "demo",
            "1.0",
            requires_dist=("dep>=2", "winonly; sys_platform == 'win32'"),
            metadata_version="2.1",
            core_metadata_file=False,
            wheels=("cp311-cp311-win_amd64",),
            files={BACKEND_FILE: BROKEN_BACKEND},
        )
    )
    linux = Target(name="linux", python="3.11", platform="linux", machine="x86_64")
    finder = IndexFinder(client, linux, cache=current_cache())
    (version,) = finder.versions(canonicalize_name("demo"), None)
    candidate = finder.candidate(canonicalize_name("demo"), version, None)
    assert candidate is not None and isinstance(candidate.source, IndexRelease)
    assert [f.kind for f in candidate.source.files] == ["sdist"]  # the wheel is not usable
    finder.prefetch_dependencies([candidate])
    deps = finder.dependencies(candidate)
    assert list(deps.requires) == reqs("dep>=2", "winonly; sys_platform == 'win32'")
    assert server.requests_for(r"win_amd64\.whl$")


HOOK_COUNTING_BACKEND = (
    BACKEND_SOURCE
    + """

_original_prepare = prepare_metadata_for_build_wheel


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    with open(os.environ["HOOK_RUNS_LOG"], "a") as fh:
        fh.write("ran\\n")
    return _original_prepare(metadata_directory, config_settings)
"""
)


def test_hook_metadata_is_cached_across_clients(
    make_index: MakeIndex, serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "hook-runs.log"
    monkeypatch.setenv("HOOK_RUNS_LOG", str(log))
    demo = Release(
        "demo",
        "1.0",
        requires_dist=("dep>=3",),
        wheels=(),
        metadata_version="2.1",
        files={BACKEND_FILE: HOOK_COUNTING_BACKEND},
    )
    server = serve(make_index([demo]))
    for _ in range(2):
        with index_client([server.url]) as client:
            assert client.metadata(only(client, "demo", "sdist")).requires_dist == reqs("dep>=3")
    assert log.read_text() == "ran\n"


# --------------------------------------------- hostile archives: the extractor's rules apply


HOSTILE_SDISTS = [hostile.hardlink_bomb, hostile.deep_nesting, hostile.path_traversal]


@pytest.mark.parametrize("build", HOSTILE_SDISTS)
def test_sdist_metadata_refuses_what_pull_refuses_and_leaves_nothing(
    build: Callable[[Path], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    archive = build(tmp_path)
    data = archive.read_bytes()
    with pytest.raises(ExtractError) as pulling:
        extract_sdist(archive, tmp_path / "pulled", package="evil 1.0")
    with pytest.raises(ExtractError) as reading:
        sdist_pkg_info(data, archive.name, label="evil 1.0")
    with pytest.raises(ExtractError) as building:
        metadata_from_build_backend(
            data,
            archive.name,
            label="evil 1.0",
            backend=BuildBackend(tmp_path / "envs", offline=True),
        )
    # One rule set: the very refusal pull gives, naming the package and the limit.
    assert str(reading.value) == str(building.value) == str(pulling.value)
    assert str(reading.value).startswith(f"evil 1.0: refusing {archive.name}: member ")
    assert list(temp.iterdir()) == []  # no scratch tree left behind


def test_an_sdist_only_release_with_a_hard_link_bomb_is_refused_by_the_client(
    make_index: MakeIndex, serve: Serve, tmp_path: Path
) -> None:
    index = make_index([Release("evil", "1.0", wheels=(), files={BACKEND_FILE: BROKEN_BACKEND})])
    index.publish_file("evil-1.0.tar.gz", hostile.hardlink_bomb(tmp_path).read_bytes())
    client = index_client([serve(index).url], backoff=0.001)
    with client, pytest.raises(ExtractError, match=r"hard link to 'evil-1\.0/blob\.bin'.*bomb"):
        client.metadata(only(client, "evil", "sdist"))


def test_a_wheel_whose_metadata_is_a_bomb_is_refused_whole_and_by_ranges(
    make_index: MakeIndex, serve: Serve, tmp_path: Path
) -> None:
    wheel = hostile.metadata_bomb_wheel(tmp_path)
    with pytest.raises(ExtractError, match=r"member 'evil-1\.0\.dist-info/METADATA' brings"):
        metadata_from_wheel(wheel.read_bytes(), wheel.name)
    index = make_index([Release("evil", "1.0", core_metadata_file=False, sdist=False)])
    index.publish_file(wheel.name, wheel.read_bytes())
    client = index_client([serve(index).url], backoff=0.001)
    with client, pytest.raises(ExtractError, match="a decompression bomb"):
        client.metadata(only(client, "evil", "wheel"))


def test_a_backend_is_run_with_the_build_system_the_lock_records(tmp_path: Path) -> None:
    """One reading of [build-system] for every step: a table without ``requires`` means
    PEP 518's setuptools requirement to the lock (which records it) and so to the metadata
    hook too; it used to run such a backend with this interpreter, unlike the build."""
    from monorepo.project.pyproject import DEFAULT_REQUIRES, read_build_system

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "pyproject.toml").write_text(
        '[build-system]\nbuild-backend = "inplace"\nbackend-path = ["."]\n'
    )
    (tree / "inplace.py").write_text("import sys\nraise SystemExit('ran by ' + sys.prefix)\n")
    recorded = read_build_system(tree, what="demo")
    assert [str(r) for r in recorded.requires] == list(DEFAULT_REQUIRES)
    backend = BuildBackend(tmp_path / "envs", offline=True)
    with pytest.raises(MetadataError) as caught:
        backend.tree_metadata(tree, what="demo")
    # The hook ran in a build environment made for that requirement (ensurepip brings
    # setuptools on Python 3.11), or offline pip could not fill one: never this interpreter.
    message = str(caught.value)
    assert f"ran by {tmp_path / 'envs'}" in message or (
        "installing the build requirements ['setuptools>=40.8.0'] failed" in message
    ), message
