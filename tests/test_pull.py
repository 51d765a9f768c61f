"""End-to-end tests of fetching, materializing and pulling locked sources.

Everything is real: sdists built by the fixture builder and served over loopback
HTTP, git repositories made with pygit2, archives extracted on disk, pulls run in
other processes and killed with SIGKILL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

import monorepo
from fixtures import hostile
from fixtures.builder import FixtureIndex, Release, sdist_bytes, source_tree
from fixtures.gitrepo import make_git_package
from fixtures.server import IndexServer
from monorepo.errors import (
    DiskFullError,
    ExtractError,
    HashMismatchError,
    IndexClientError,
    OverlayError,
    PullError,
    StaleLockError,
)
from monorepo.index.http import HttpClient
from monorepo.project import lockfile
from monorepo.project.lockfile import LockedPackage, SdistSource, VcsSource
from monorepo.sources.fetch import fetch_source, materialize
from monorepo.sources.patches import Patch
from monorepo.sources.store import ContentStore
from monorepo.sources.treehash import tree_hash
from monorepo.vendoring.pull import PullResult, pull
from tests.helpers import current_cache, rewrite_lock, stat_snapshot

# ---------------------------------------------------------------------------- helpers


def sdist_package(
    index: FixtureIndex, server: IndexServer, name: str, version: str
) -> LockedPackage:
    """The lock entry `monorepo lock` writes for a fixture sdist served by *server*."""
    entry = next(e for e in index.files_for(name) if e.kind == "sdist" and e.version == version)
    return LockedPackage(
        name=canonicalize_name(name),
        version=Version(version),
        source=SdistSource(
            url=f"{server.base_url}/files/{entry.filename}",
            sha256=entry.sha256,
            size=entry.size,
            upload_time=None,
        ),
    )


def expected_tree(release: Release, *, pkg_info: bool = True) -> dict[str, bytes]:
    """What an extracted sdist holds (top directory stripped): the source tree and PKG-INFO."""
    import io
    import tarfile

    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(sdist_bytes(release))) as tf:
        for member in tf.getmembers():
            if member.isfile():
                rel = member.name.split("/", 1)[1]
                data = tf.extractfile(member)
                assert data is not None
                out[rel] = data.read()
    if not pkg_info:
        out.pop("PKG-INFO", None)
    return out


def tree_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".tmp-"))


def store_files(store: ContentStore) -> list[str]:
    base = store.root / "sha256"
    return sorted(p.name for p in base.rglob("*") if p.is_file()) if base.exists() else []


PATCH_LIB = "\n".join(
    [
        "diff --git a/lib/__init__.py b/lib/__init__.py",
        "--- a/lib/__init__.py",
        "+++ b/lib/__init__.py",
        "@@ -1,3 +1,4 @@",
        ' """Fixture package lib."""',
        " ",
        " __version__ = '1.0'",
        "+PATCHED = True",
        "",
    ]
).encode()


# ------------------------------------------------------------------- fetch_source


@pytest.fixture
def lib_index(
    make_index: Callable[..., FixtureIndex], serve: Callable[..., IndexServer]
) -> tuple[FixtureIndex, IndexServer, Release]:
    release = Release("lib", "1.0", files={"data/blob.bin": "y" * 5000})
    index = make_index([release])
    return index, serve(index), release


def test_fetch_source_downloads_once_into_the_store(
    lib_index: tuple[FixtureIndex, IndexServer, Release], tmp_path: Path
) -> None:
    index, server, _ = lib_index
    pkg = sdist_package(index, server, "lib", "1.0")
    store = ContentStore(tmp_path / "store")
    path = fetch_source(pkg, cache=current_cache(), store=store)
    assert isinstance(pkg.source, SdistSource)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == pkg.source.sha256
    again = fetch_source(pkg, cache=current_cache(), store=store, offline=True)
    assert again == path
    assert len(server.requests_for(r"^/files/lib-1\.0\.tar\.gz$")) == 1


def test_fetch_source_resumes_a_truncated_download(
    lib_index: tuple[FixtureIndex, IndexServer, Release], tmp_path: Path
) -> None:
    index, server, _ = lib_index
    pkg = sdist_package(index, server, "lib", "1.0")
    server.add_fault(r"^/files/", "truncate")
    with HttpClient(backoff=0) as client:
        path = fetch_source(
            pkg, cache=current_cache(), store=ContentStore(tmp_path / "store"), fetch=client.stream
        )
    assert isinstance(pkg.source, SdistSource)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == pkg.source.sha256
    assert len(server.requests_for(r"^/files/")) == 2


def test_fetch_source_refuses_corrupt_bytes_and_stores_nothing(
    lib_index: tuple[FixtureIndex, IndexServer, Release], tmp_path: Path
) -> None:
    index, server, _ = lib_index
    pkg = sdist_package(index, server, "lib", "1.0")
    assert isinstance(pkg.source, SdistSource)
    store = ContentStore(tmp_path / "store")
    server.add_fault(r"^/files/", "corrupt")
    with pytest.raises(HashMismatchError) as info:
        fetch_source(pkg, cache=current_cache(), store=store)
    message = str(info.value)
    assert "lib 1.0" in message
    assert pkg.source.url in message
    assert pkg.source.sha256 in message
    assert (
        hashlib.sha256(
            bytes(b ^ 0xFF for b in (index.files_dir / "lib-1.0.tar.gz").read_bytes())
        ).hexdigest()
        in message
    )
    assert store_files(store) == []


def test_fetch_source_reads_file_urls_and_checks_them(
    lib_index: tuple[FixtureIndex, IndexServer, Release], tmp_path: Path
) -> None:
    index, server, _ = lib_index
    served = sdist_package(index, server, "lib", "1.0")
    assert isinstance(served.source, SdistSource)
    local = LockedPackage(
        name=served.name,
        version=served.version,
        source=SdistSource(
            url=index.url_for("lib-1.0.tar.gz"),
            sha256=served.source.sha256,
            size=served.source.size,
            upload_time=None,
        ),
    )
    server.stop()
    store = ContentStore(tmp_path / "store")
    assert fetch_source(local, cache=current_cache(), store=store, offline=True).is_file()
    index.replace_file("lib-1.0.tar.gz", b"tampered")
    with pytest.raises(HashMismatchError, match=r"lib 1\.0"):
        fetch_source(local, cache=current_cache(), store=ContentStore(tmp_path / "other"))


def test_fetch_source_offline_without_cache_says_to_go_online(
    lib_index: tuple[FixtureIndex, IndexServer, Release], tmp_path: Path
) -> None:
    index, server, _ = lib_index
    pkg = sdist_package(index, server, "lib", "1.0")
    with pytest.raises(PullError, match=r"lib 1\.0.*once online"):
        fetch_source(
            pkg, cache=current_cache(), store=ContentStore(tmp_path / "store"), offline=True
        )
    assert server.requests_for(r"^/files/") == []


# -------------------------------------------------------------------- materialize


def test_materialize_extracts_without_top_dir_and_returns_the_tree_hash(
    lib_index: tuple[FixtureIndex, IndexServer, Release], tmp_path: Path
) -> None:
    index, server, release = lib_index
    pkg = sdist_package(index, server, "lib", "1.0")
    dest = tmp_path / "duni" / "lib"
    digest = materialize(
        pkg, dest, patches=(), cache=current_cache(), store=ContentStore(tmp_path / "store")
    )
    assert tree_files(dest) == expected_tree(release)
    assert digest == tree_hash(dest)
    assert leftovers(dest.parent) == []


def test_materialize_applies_patches_in_order(
    lib_index: tuple[FixtureIndex, IndexServer, Release], tmp_path: Path
) -> None:
    index, server, _ = lib_index
    pkg = sdist_package(index, server, "lib", "1.0")
    store = ContentStore(tmp_path / "store")
    plain = materialize(pkg, tmp_path / "plain", cache=current_cache(), store=store)
    patch = Patch(
        "packages/lib/patches/0001.patch", hashlib.sha256(PATCH_LIB).hexdigest(), PATCH_LIB
    )
    patched = materialize(
        pkg, tmp_path / "patched", patches=[patch], cache=current_cache(), store=store
    )
    assert patched != plain
    assert patched == tree_hash(tmp_path / "patched")
    assert plain == tree_hash(tmp_path / "plain")
    assert (tmp_path / "patched" / "lib" / "__init__.py").read_text().endswith("PATCHED = True\n")


PATCH_SAME_SIZE = "\n".join(
    [
        "diff --git a/lib/__init__.py b/lib/__init__.py",
        "--- a/lib/__init__.py",
        "+++ b/lib/__init__.py",
        "@@ -1,3 +1,3 @@",
        ' """Fixture package lib."""',
        " ",
        "-__version__ = '1.0'",
        "+__version__ = '2.0'",
        "diff --git a/NEW.txt b/NEW.txt",
        "new file mode 100755",
        "--- /dev/null",
        "+++ b/NEW.txt",
        "@@ -0,0 +1 @@",
        "+new",
        "",
    ]
).encode()


def test_materialize_rehashes_what_a_patch_touched_even_at_the_same_size(
    lib_index: tuple[FixtureIndex, IndexServer, Release], tmp_path: Path
) -> None:
    # The extractor's digests are reused for the files a patch did not touch; a file the
    # patch rewrote within the same clock tick and at the same size must still be re-read.
    index, server, _ = lib_index
    pkg = sdist_package(index, server, "lib", "1.0")
    patch = Patch(
        "packages/lib/patches/0001.patch",
        hashlib.sha256(PATCH_SAME_SIZE).hexdigest(),
        PATCH_SAME_SIZE,
    )
    dest = tmp_path / "patched"
    digest = materialize(
        pkg, dest, patches=[patch], cache=current_cache(), store=ContentStore(tmp_path / "store")
    )
    assert "'2.0'" in (dest / "lib" / "__init__.py").read_text()
    assert os.access(dest / "NEW.txt", os.X_OK)
    assert digest == tree_hash(dest)


def test_materialize_leaves_nothing_when_a_patch_fails(
    lib_index: tuple[FixtureIndex, IndexServer, Release], tmp_path: Path
) -> None:
    index, server, _ = lib_index
    pkg = sdist_package(index, server, "lib", "1.0")
    bad = PATCH_LIB.replace(b"__version__ = '1.0'", b"__version__ = '9.9'")
    patch = Patch("p/0001.patch", hashlib.sha256(bad).hexdigest(), bad)
    dest = tmp_path / "duni" / "lib"
    with pytest.raises(OverlayError, match=r"0001\.patch"):
        materialize(
            pkg,
            dest,
            patches=[patch],
            cache=current_cache(),
            store=ContentStore(tmp_path / "store"),
        )
    assert not dest.exists()
    assert leftovers(dest.parent) == []


def test_materialize_refuses_an_existing_destination(
    lib_index: tuple[FixtureIndex, IndexServer, Release], tmp_path: Path
) -> None:
    index, server, _ = lib_index
    pkg = sdist_package(index, server, "lib", "1.0")
    dest = tmp_path / "lib"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")
    with pytest.raises(PullError, match="already exists"):
        materialize(pkg, dest, cache=current_cache(), store=ContentStore(tmp_path / "store"))
    assert (dest / "mine.txt").read_text() == "keep"


def test_materialize_git_source_at_the_commit_without_dot_git(tmp_path: Path) -> None:
    repo = tmp_path / "gitlib"
    first = make_git_package(repo, Release("gitlib", "1.0"))
    make_git_package(repo, Release("gitlib", "1.1"))
    pkg = LockedPackage(
        name=canonicalize_name("gitlib"),
        version=Version("1.0"),
        source=VcsSource(url=str(repo), commit=first, requested=None),
    )
    dest = tmp_path / "duni" / "gitlib"
    digest = materialize(pkg, dest, cache=current_cache(), store=ContentStore(tmp_path / "store"))
    assert tree_files(dest) == source_tree(Release("gitlib", "1.0"))
    assert not (dest / ".git").exists()
    assert digest == tree_hash(dest)
    # The export in the cache is shared: the copy must be independent of it.
    (dest / "pyproject.toml").write_text("edited")
    other = materialize(
        pkg, tmp_path / "again", cache=current_cache(), store=ContentStore(tmp_path / "store")
    )
    assert other == digest


def test_fetch_source_git_offline_needs_the_mirror(tmp_path: Path) -> None:
    repo = tmp_path / "gitlib"
    commit = make_git_package(repo, Release("gitlib", "1.0"))
    pkg = LockedPackage(
        name=canonicalize_name("gitlib"),
        version=Version("1.0"),
        source=VcsSource(url=str(repo), commit=commit, requested=None),
    )
    with pytest.raises(PullError, match=r"gitlib 1\.0.*without --offline"):
        fetch_source(
            pkg, cache=current_cache(), store=ContentStore(tmp_path / "store"), offline=True
        )
    assert os.path.isdir(
        fetch_source(pkg, cache=current_cache(), store=ContentStore(tmp_path / "store"))
    )


def test_a_git_server_that_stops_answering_times_out(
    tmp_path: Path, serve: Callable[..., IndexServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """libgit2 waits forever by default; monorepo gives it the HTTP client's read timeout,
    cut to the deadline's floor (one second here)."""
    server = serve(tmp_path)
    server.add_fault(r"/gitlib\.git/info/refs$", "slow", delay=10.0)
    monkeypatch.setenv("MONOREPO_HTTP_DEADLINE", "1")
    url = f"{server.base_url}/gitlib.git"
    pkg = LockedPackage(
        name=canonicalize_name("gitlib"),
        version=Version("1.0"),
        source=VcsSource(url=url, commit="0" * 40, requested=None),
    )
    with pytest.raises(PullError) as caught:
        fetch_source(pkg, cache=current_cache(), store=ContentStore(tmp_path / "store"))
    assert url in str(caught.value) and "timed out" in str(caught.value)


# --------------------------------------------------------------------------- pull

LINUX = '{ name = "linux", python = "3.11", platform = "linux", machine = "x86_64" }'
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
) -> Callable[..., tuple[Path, FixtureIndex, IndexServer]]:
    """``project(releases, deps, tool_toml="")`` -> (project dir, index, server), not locked."""
    counter = iter(range(1000))

    def factory(
        releases: list[Release], deps: list[str], *, tool_toml: str = ""
    ) -> tuple[Path, FixtureIndex, IndexServer]:
        index = make_index(releases)
        server = serve(index)
        deps_toml = ", ".join(json.dumps(d) for d in deps)
        text = (
            f'[project]\nname = "proj"\nversion = "0"\ndependencies = [{deps_toml}]\n'
            f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{LINUX}]\n{tool_toml}\n'
        )
        return make_project(text, name=f"proj{next(counter)}"), index, server

    return factory


def set_deps(proj: Path, deps: list[str]) -> None:
    text = (proj / "pyproject.toml").read_text()
    start = text.index("dependencies = [")
    end = text.index("]\n", start) + 1
    (proj / "pyproject.toml").write_text(
        text[:start] + f"dependencies = [{', '.join(json.dumps(d) for d in deps)}]" + text[end:]
    )


def fresh_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A new, empty cache: what lock may have downloaded is not there for pull."""
    cache = tmp_path / f"cache-{time.monotonic_ns()}"
    monkeypatch.setenv("MONOREPO_CACHE_DIR", str(cache))
    return cache


def package_dirs(duni: Path) -> list[str]:
    return sorted(p.name for p in duni.iterdir() if p.is_dir() and not p.name.startswith("."))


def assert_tree_matches_lock(proj: Path, releases: dict[str, Release]) -> None:
    """Every locked dir holds its sdist's content (and the lock's tree hash when it has one)."""
    doc = lockfile.read(proj / "pylock.toml")
    duni = proj / "duni"
    assert package_dirs(duni) == sorted(p.dir for p in doc.packages)
    for pkg in doc.packages:
        release = releases[f"{pkg.name}-{pkg.version}"]
        assert tree_files(duni / pkg.dir) == expected_tree(release), pkg.dir
        if pkg.tree_hash is not None:
            assert tree_hash(duni / pkg.dir) == pkg.tree_hash
    assert leftovers(duni) == []


def by_key(*releases: Release) -> dict[str, Release]:
    return {f"{r.project}-{r.version}": r for r in releases}


APP = Release("app", "1.0", requires_dist=("lib>=1",))
LIB = Release("lib", "1.0")
OTHER = Release("other", "2.0", files={"other/data.txt": "hello\n"})


def test_pull_vendors_every_locked_sdist_and_writes_readme_and_workspace(project: Any) -> None:
    proj, _, _ = project([APP, LIB, OTHER], ["app", "other"])
    monorepo.lock(proj)
    result = pull(proj)
    assert isinstance(result, PullResult)
    assert result.duni == proj / "duni"
    assert sorted(result.updated) == ["app", "lib", "other"]
    assert result.unchanged == [] and result.removed == [] and result.warnings == []
    assert_tree_matches_lock(proj, by_key(APP, LIB, OTHER))
    readme = (proj / "duni" / "README.md").read_text()
    assert "monorepo lock && monorepo pull" in readme
    assert "monorepo verify" in readme
    assert "Do not edit" in readme
    import tomllib

    workspace = tomllib.loads((proj / "duni" / "workspace.toml").read_text())
    assert workspace["format"] == 1
    assert sorted(workspace["build-order"]) == ["app", "lib", "other"]
    lib = workspace["packages"]["lib"]
    assert lib["name"] == "lib" and lib["version"] == "1.0" and lib["role"] == "runtime"
    assert lib["build-requires"] == []
    assert lib["backend-path"]
    assert lib["c-extension"] is False
    manifests = sorted(p.name for p in (proj / "duni" / ".monorepo").glob("*.manifest"))
    assert manifests == ["app.manifest", "lib.manifest", "other.manifest"]


def test_workspace_facts_are_kept_per_tree_hash_and_read_again_when_the_tree_changes(
    project: Any,
) -> None:
    # workspace.toml's per-tree facts (build-system table, C extension) are a function of
    # the tree's content: pull keeps them in duni/.monorepo/<dir>.facts under the tree
    # hash it checked, so a no-op pull walks no tree and parses no pyproject.toml.
    pure = Release("lib", "1.0")
    native = Release("lib", "2.0", files={"lib/_speed.c": "int x;\n"})
    proj, _, _ = project([pure, native], ["lib<2"])
    duni = proj / "duni"
    facts_path = duni / ".monorepo" / "lib.facts"

    def c_extension() -> bool:
        return bool(
            tomllib.loads((duni / "workspace.toml").read_text())["packages"]["lib"]["c-extension"]
        )

    monorepo.lock(proj)
    pull(proj)
    assert c_extension() is False
    kept = json.loads(facts_path.read_text())
    assert kept["tree-hash"] == tree_hash(duni / "lib") and kept["c-extension"] is False
    # The kept facts are what a pull of the same tree uses (shown by editing them) ...
    facts_path.write_text(json.dumps(dict(kept, **{"c-extension": True})))
    assert pull(proj).unchanged == ["lib"]
    assert c_extension() is True
    # ... and never those of another tree: a stale hash makes pull read the tree again.
    facts_path.write_text(json.dumps(dict(kept, **{"tree-hash": "sha256:0", "c-extension": True})))
    pull(proj)
    assert c_extension() is False
    facts_path.write_text("not json")
    pull(proj)
    assert c_extension() is False and json.loads(facts_path.read_text())["c-extension"] is False
    set_deps(proj, ["lib>=2"])
    monorepo.lock(proj)
    assert pull(proj).updated == ["lib"]
    assert c_extension() is True
    assert json.loads(facts_path.read_text())["tree-hash"] == tree_hash(duni / "lib")
    set_deps(proj, [])
    monorepo.lock(proj)
    assert pull(proj).removed == ["lib"]
    assert not facts_path.exists()


def test_duni_is_marked_as_the_top_of_a_hierarchy_where_the_file_system_can(
    project: Any,
) -> None:
    # ext4 then spreads package trees over block groups (see _spread_package_trees).
    proj, _, _ = project([LIB], ["lib"])
    monorepo.lock(proj)
    pull(proj)
    duni = proj / "duni"
    if shutil.which("lsattr") is None:
        pytest.skip("no lsattr to read file attributes with")
    shown = subprocess.run(["lsattr", "-d", str(duni)], capture_output=True, text=True)
    if shown.returncode != 0 or sys.platform != "linux":
        pytest.skip(f"the file system of {duni} has no attributes: {shown.stderr.strip()}")
    flags = shown.stdout.split()[0]
    marked = subprocess.run(["chattr", "+T", str(proj)], capture_output=True)
    if marked.returncode != 0:
        pytest.skip("the file system does not keep the T attribute")
    assert "T" in flags
    assert tree_hash(duni / "lib") == lockfile.read(proj / "pylock.toml").packages[0].tree_hash


def test_large_sdists_are_extracted_by_worker_processes_to_the_same_trees(
    project: Any,
) -> None:
    # Large (incompressible text) and small sdists, all unpacked by worker processes.
    import base64
    import random

    rng = random.Random(6)
    big = {
        f"big{i}": Release(
            f"big{i}",
            "1.0",
            files={f"big{i}/data.txt": base64.b64encode(rng.randbytes(400_000)).decode()},
        )
        for i in range(3)
    }
    proj, _, _ = project([*big.values(), LIB], [*big, "lib"])
    monorepo.lock(proj)
    result = pull(proj)
    assert sorted(result.updated) == ["big0", "big1", "big2", "lib"]
    assert_tree_matches_lock(proj, by_key(*big.values(), LIB))
    again = pull(proj)
    assert sorted(again.unchanged) == ["big0", "big1", "big2", "lib"]


def test_downloads_alternate_largest_and_smallest_and_extraction_takes_the_largest_ready(
    project: Any,
) -> None:
    import random
    from concurrent.futures import Future

    from monorepo.vendoring.speed.downloads import download_order, largest_first, ready_in_order

    rng = random.Random(7)
    sizes = {"aaa": 100, "bbb": 60_000, "ccc": 5_000, "ddd": 20_000, "eee": 1_000}
    releases = [
        Release(name, "1.0", files={f"{name}/blob.bin": rng.randbytes(n).hex()})
        for name, n in sizes.items()
    ]
    proj, _, _ = project(releases, list(sizes))
    monorepo.lock(proj)
    packages = lockfile.read(proj / "pylock.toml").packages
    assert [p.dir for p in largest_first(packages)] == ["bbb", "ddd", "ccc", "eee", "aaa"]
    assert [p.dir for p in download_order(packages)] == ["bbb", "aaa", "ddd", "eee", "ccc"]

    # Extraction: the largest package whose download is done; one without a download
    # (its directory exists: sync decides) is ready at once.
    downloads: dict[str, Future[Path]] = {d: Future() for d in ("bbb", "ddd", "eee", "aaa")}
    take = ready_in_order(largest_first(packages), downloads)
    assert take().dir == "ccc"
    for d in ("aaa", "eee", "ddd"):
        downloads[d].set_result(proj)
    assert [take().dir for _ in range(3)] == ["ddd", "eee", "aaa"]
    downloads["bbb"].set_exception(OSError("failed"))  # a failed one is taken too
    assert take().dir == "bbb"


def test_sources_are_downloaded_ahead_of_extraction(
    project: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With one extraction thread, two downloads still run at once: each waits for the
    other to start before it returns.  Fetched in the extracting thread, the second
    would start only after the first was extracted, and the barrier would break."""
    import threading

    proj, _, _ = project([APP, LIB, OTHER], ["app", "other"])
    monorepo.lock(proj)
    fresh_cache(monkeypatch, tmp_path)
    both_started = threading.Barrier(2, timeout=20)
    with HttpClient() as client:

        def fetch(url: str) -> Any:
            if not url.rsplit("/", 1)[-1].startswith("other"):
                both_started.wait()  # app and lib: the first waits for the second
            return client.stream(url)

        result = pull(proj, jobs=1, fetch=fetch)
    assert sorted(result.updated) == ["app", "lib", "other"]
    assert_tree_matches_lock(proj, by_key(APP, LIB, OTHER))


def test_a_source_already_downloaded_is_extracted_while_a_larger_one_downloads(
    project: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One extraction thread: the large source starts first, but its download lasts
    until the small one is in duni/.  Taken strictly largest first, the thread would
    wait for the large download, the small tree would never appear, and it would fail."""
    import random

    big = Release("big", "1.0", files={"big/blob.bin": random.Random(3).randbytes(50_000).hex()})
    small = Release("small", "1.0")
    proj, _, _ = project([big, small], ["big", "small"])
    monorepo.lock(proj)
    fresh_cache(monkeypatch, tmp_path)
    with HttpClient() as client:

        def fetch(url: str) -> Any:
            if url.rsplit("/", 1)[-1].startswith("big"):
                deadline = time.monotonic() + 20
                while not (proj / "duni" / "small").is_dir():
                    if time.monotonic() > deadline:
                        raise IndexClientError("small was not extracted while big downloaded")
                    time.sleep(0.01)
            return client.stream(url)

        result = pull(proj, jobs=1, fetch=fetch)
    assert sorted(result.updated) == ["big", "small"]
    assert_tree_matches_lock(proj, by_key(big, small))


def test_second_pull_rewrites_nothing(project: Any) -> None:
    proj, _, server = project([APP, LIB], ["app"])
    monorepo.lock(proj)
    pull(proj)
    before = stat_snapshot(proj / "duni")
    server.clear_requests()
    result = pull(proj)
    assert result.updated == [] and sorted(result.unchanged) == ["app", "lib"]
    assert stat_snapshot(proj / "duni") == before
    assert server.requests_for("^/files/") == []


def test_offline_pull_from_the_cache_after_the_server_is_gone(project: Any) -> None:
    proj, _, server = project([APP, LIB], ["app"])
    monorepo.lock(proj)
    pull(proj)
    server.stop()
    shutil.rmtree(proj / "duni")
    result = pull(proj, offline=True)
    assert sorted(result.updated) == ["app", "lib"]
    assert_tree_matches_lock(proj, by_key(APP, LIB))


def test_offline_pull_without_cache_fails_and_writes_nothing(
    project: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    proj, _, _ = project([APP, LIB], ["app"])
    monorepo.lock(proj)
    fresh_cache(monkeypatch, tmp_path)
    with pytest.raises(PullError, match=r"(app|lib) 1\.0.*--offline.*once online"):
        pull(proj, offline=True)
    assert package_dirs(proj / "duni") == []
    assert leftovers(proj / "duni") == []
    assert not (proj / "duni" / "workspace.toml").exists()


def test_local_edit_is_refused_with_the_files_named_and_force_overwrites(project: Any) -> None:
    proj, _, _ = project([APP, LIB], ["app"])
    monorepo.lock(proj)
    pull(proj)
    lib = proj / "duni" / "lib"
    (lib / "lib" / "__init__.py").write_text("edited = True\n")
    (lib / "NOTES.txt").write_text("mine\n")
    (lib / "PKG-INFO").unlink()
    with pytest.raises(PullError) as info:
        pull(proj)
    message = str(info.value)
    assert "duni/lib" in message
    assert "modified lib/__init__.py" in message
    assert "added NOTES.txt" in message
    assert "removed PKG-INFO" in message
    assert "--force" in message
    assert "duni/app" not in message
    assert (lib / "NOTES.txt").exists()  # nothing was overwritten
    result = pull(proj, force=True)
    assert result.updated == ["lib"] and result.unchanged == ["app"]
    assert_tree_matches_lock(proj, by_key(APP, LIB))


def test_a_package_dropped_from_the_lock_is_removed_and_unknown_dirs_are_left(
    project: Any,
) -> None:
    proj, _, _ = project([APP, LIB, OTHER], ["app", "other"])
    monorepo.lock(proj)
    pull(proj)
    mine = proj / "duni" / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("not pull's\n")
    set_deps(proj, ["app"])
    monorepo.lock(proj)
    result = pull(proj)
    assert result.removed == ["other"]
    assert not (proj / "duni" / "other").exists()
    assert not (proj / "duni" / ".monorepo" / "other.manifest").exists()
    assert (mine / "keep.txt").read_text() == "not pull's\n"
    assert any("duni/mine" in w and "left alone" in w for w in result.warnings)
    assert package_dirs(proj / "duni") == ["app", "lib", "mine"]


def test_an_edited_dir_dropped_from_the_lock_is_kept_unless_forced(project: Any) -> None:
    proj, _, _ = project([APP, LIB, OTHER], ["app", "other"])
    monorepo.lock(proj)
    pull(proj)
    (proj / "duni" / "other" / "other" / "data.txt").write_text("changed\n")
    set_deps(proj, ["app"])
    monorepo.lock(proj)
    with pytest.raises(PullError, match=r"duni/other .*modified other/data\.txt"):
        pull(proj)
    assert (proj / "duni" / "other").is_dir()
    assert pull(proj, force=True).removed == ["other"]
    assert not (proj / "duni" / "other").exists()


def test_wrong_hash_download_leaves_nothing_in_duni_or_the_store(
    project: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    proj, _, server = project([LIB], ["lib"])
    monorepo.lock(proj)
    cache = fresh_cache(monkeypatch, tmp_path)
    server.add_fault("^/files/lib-1.0.tar.gz$", "corrupt")
    with pytest.raises(HashMismatchError) as info:
        pull(proj)
    message = str(info.value)
    assert "lib 1.0" in message and "/files/lib-1.0.tar.gz" in message
    assert package_dirs(proj / "duni") == [] and leftovers(proj / "duni") == []
    assert store_files(ContentStore(cache / "store")) == []
    # the next pull (no fault) succeeds
    assert pull(proj).updated == ["lib"]


def test_hostile_sdist_is_refused_naming_package_and_member(
    project: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    proj, index, _ = project([Release("evil", "1.0")], ["evil"])
    monorepo.lock(proj)
    bad = hostile.path_traversal(tmp_path).read_bytes()
    good = (index.files_dir / "evil-1.0.tar.gz").read_bytes()
    index.replace_file("evil-1.0.tar.gz", bad)
    # The index now publishes the hostile archive: record its hash as lock would.
    text = (proj / "pylock.toml").read_text()
    text = text.replace(hashlib.sha256(good).hexdigest(), hashlib.sha256(bad).hexdigest())
    text = text.replace(f"size = {len(good)}", f"size = {len(bad)}")
    (proj / "pylock.toml").write_text(text)
    fresh_cache(monkeypatch, tmp_path)
    with pytest.raises(ExtractError) as info:
        pull(proj)
    assert "evil" in str(info.value) and "escape.txt" in str(info.value)
    assert package_dirs(proj / "duni") == [] and leftovers(proj / "duni") == []
    assert not list(tmp_path.rglob("escape.txt"))


EVIL_1 = Release("evil", "1.0")
EVIL_2 = Release("evil", "2.0")
HOSTILE_LIMITS = [
    (
        hostile.hardlink_bomb,
        r"member 'evil-1\.0/copy-\d+\.bin' is a hard link .* over the limit of 200",
    ),
    (
        hostile.deep_nesting,
        r"member 'evil-1\.0/d/d/.* is nested 1201 levels deep, over the limit of 128",
    ),
]


@pytest.mark.parametrize(("build", "refusal"), HOSTILE_LIMITS)
def test_pull_refuses_a_hostile_new_version_before_writing_anything(
    project: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    build: Callable[[Path], Path],
    refusal: str,
) -> None:
    # Without the sources pass, which would refuse the archive already (the next test).
    proj, index, _ = project(
        [LIB, EVIL_1, EVIL_2], ["lib", "evil==1.0"], tool_toml="build-dependencies = false"
    )
    monorepo.lock(proj)
    pull(proj)
    # Version 2.0's sdist, as the index publishes it (and the lock records), is hostile.
    index.publish_file("evil-2.0.tar.gz", build(tmp_path).read_bytes())
    set_deps(proj, ["lib", "evil==2.0"])
    monorepo.lock(proj)
    fresh_cache(monkeypatch, tmp_path)
    before = stat_snapshot(proj / "duni")
    with pytest.raises(ExtractError) as info:
        pull(proj)
    message = str(info.value)
    assert message.startswith("evil: refusing evil-2.0.tar.gz: member "), message
    assert re.search(refusal, message), message
    assert stat_snapshot(proj / "duni") == before  # nothing written, nothing removed
    assert leftovers(proj / "duni") == [] and leftovers(proj / "duni" / ".monorepo") == []
    # The refusal is the same on every later pull (nothing half-done makes it worse).
    with pytest.raises(ExtractError):
        pull(proj)
    assert stat_snapshot(proj / "duni") == before


@pytest.mark.parametrize(("build", "refusal"), HOSTILE_LIMITS)
def test_lock_with_build_dependencies_refuses_a_hostile_sdist_and_leaves_no_scratch_tree(
    project: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    build: Callable[[Path], Path],
    refusal: str,
) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    proj, index, _ = project([EVIL_1], ["evil"], tool_toml="build-dependencies = true")
    index.publish_file("evil-1.0.tar.gz", build(tmp_path).read_bytes())
    with pytest.raises(ExtractError) as info:
        monorepo.lock(proj)
    message = str(info.value)
    assert message.startswith("evil: refusing evil-1.0.tar.gz: member "), message
    assert re.search(refusal, message), message
    assert not (proj / "pylock.toml").exists()
    assert list(temp.iterdir()) == []


def test_a_deep_tree_left_by_a_killed_pull_is_removed_by_the_next(
    project: Any, deep_tree: Callable[..., Path]
) -> None:
    proj, _, _ = project([LIB], ["lib"])
    monorepo.lock(proj)
    pull(proj)
    # A tree 1,200 directories deep, set aside by a run killed before deleting it.
    left = proj / "duni" / ".tmp-lib-old-0123456789ab"
    deep_tree(left)
    assert pull(proj).unchanged == ["lib"]
    assert leftovers(proj / "duni") == []


def test_a_deep_local_edit_is_named_and_force_replaces_it(
    project: Any, deep_tree: Callable[..., Path]
) -> None:
    proj, _, _ = project([LIB], ["lib"])
    monorepo.lock(proj)
    pull(proj)
    deep = deep_tree(proj / "duni" / "lib" / "extra")
    with pytest.raises(PullError) as info:
        pull(proj)
    assert f"added {deep.relative_to(proj / 'duni' / 'lib').as_posix()}" in str(info.value)
    assert pull(proj, force=True).updated == ["lib"]
    assert not (proj / "duni" / "lib" / "extra").exists()
    assert leftovers(proj / "duni") == []
    assert_tree_matches_lock(proj, by_key(LIB))


def test_git_source_is_pulled_at_the_locked_commit_without_dot_git(
    project: Any, tmp_path: Path
) -> None:
    repo = tmp_path / "gitlib"
    make_git_package(repo, Release("gitlib", "1.0", requires_dist=("lib",)), tag="v1.0")
    make_git_package(repo, Release("gitlib", "1.1", requires_dist=("lib",)))
    sources = f'[tool.monorepo.sources]\ngitlib = {{ git = "{repo}", rev = "v1.0" }}\n'
    proj, _, _ = project([LIB], ["gitlib"], tool_toml=sources)
    monorepo.lock(proj)
    pull(proj)
    gitlib = proj / "duni" / "gitlib"
    assert tree_files(gitlib) == source_tree(Release("gitlib", "1.0", requires_dist=("lib",)))
    assert not (gitlib / ".git").exists()
    assert tree_files(proj / "duni" / "lib") == expected_tree(LIB)


def test_recorded_tree_hash_mismatch_is_refused(project: Any) -> None:
    proj, _, _ = project([LIB], ["lib"])
    monorepo.lock(proj)
    wrong = "sha256:" + "0" * 64

    def with_hash(p: LockedPackage) -> LockedPackage:
        return dataclasses.replace(p, tool={**p.tool, "tree-hash": wrong})

    rewrite_lock(proj, with_hash)
    with pytest.raises(PullError) as info:
        pull(proj)
    assert "lib 1.0" in str(info.value) and wrong in str(info.value)
    assert "monorepo lock" in str(info.value)
    assert package_dirs(proj / "duni") == [] and leftovers(proj / "duni") == []


def edit_sha256(p: LockedPackage) -> LockedPackage:
    assert isinstance(p.source, SdistSource)
    return dataclasses.replace(p, source=dataclasses.replace(p.source, sha256="b" * 64))


def edit_size(p: LockedPackage) -> LockedPackage:
    assert isinstance(p.source, SdistSource) and p.source.size is not None
    return dataclasses.replace(p, source=dataclasses.replace(p.source, size=p.source.size + 1))


def edit_version_and_filename(p: LockedPackage) -> LockedPackage:
    # Another version's file name, the hash left alone: the hash still names the
    # bytes in the cache, but not what that URL serves.
    assert isinstance(p.source, SdistSource)
    url = p.source.url.replace("lib-1.0.tar.gz", "lib-1.1.tar.gz")
    return dataclasses.replace(
        p, version=Version("1.1"), source=dataclasses.replace(p.source, url=url)
    )


SOURCE_EDITS = {
    "sha256": (edit_sha256, "sha256"),
    "size": (edit_size, "size"),
    "version-and-filename": (edit_version_and_filename, "url"),
}


@pytest.mark.parametrize("recorded_hash", [True, False], ids=["lock-tree-hash", "no-tree-hash"])
@pytest.mark.parametrize("edit", sorted(SOURCE_EDITS))
def test_an_edited_source_in_the_lock_is_fetched_again_and_refused_not_laundered(
    project: Any, edit: str, recorded_hash: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    from monorepo.cli.commands import main

    change, field = SOURCE_EDITS[edit]
    proj, index, server = project([APP, LIB], ["app"])
    monorepo.lock(proj)
    index.publish(Release("lib", "1.1", files={"lib/new.py": "NEW = 1\n"}))
    if not recorded_hash:
        rewrite_lock(proj, without_tree_hash)
    pull(proj)
    state = proj / "duni" / ".monorepo"
    record = (state / "lib.manifest").read_text()
    before = stat_snapshot(proj / "duni")
    locked = (proj / "pylock.toml").read_text()
    rewrite_lock(proj, lambda p: change(p) if p.name == "lib" else p)

    def source_changed() -> list[str]:
        report = monorepo.verify(proj)
        assert not report.passed
        return [i.message for i in report.check("tree").items if i.code == "source-changed"]

    (message,) = source_changed()
    assert f"{field} " in message and "duni/lib" in message
    server.clear_requests()
    # The library: the lock's source is downloaded again, and it does not match.
    with pytest.raises((HashMismatchError, PullError)) as info:
        pull(proj)
    text = str(info.value)
    assert "duni/lib" in text and f"{field} " in text, text
    assert server.requests_for(r"^/files/lib-1\.[01]\.tar\.gz$"), "the source was not fetched"
    # The CLI: an error, no "unchanged" summary.
    assert main(["--project", str(proj), "pull"]) != 0
    err = capsys.readouterr().err
    assert "error:" in err and "unchanged" not in err
    # Nothing was rewritten: the record still names what was vendored, so verify
    # keeps saying so, run after run.
    assert (state / "lib.manifest").read_text() == record
    assert stat_snapshot(proj / "duni") == before
    assert len(source_changed()) == 1
    # With the lock restored, all is well again.
    (proj / "pylock.toml").write_text(locked)
    assert sorted(pull(proj).unchanged) == ["app", "lib"]
    assert monorepo.verify(proj).check("tree").passed  # (no tree hash: the lock check fails)


def test_a_version_and_file_name_edited_without_the_url_make_the_lock_invalid(
    project: Any,
) -> None:
    # PEP 751 checks the sdist's name against the version: both edited by hand agree,
    # but the URL still downloads the old file, whose hash the lock still has.
    proj, _, _ = project([APP, LIB], ["app"])
    monorepo.lock(proj)
    pull(proj)
    record = (proj / "duni" / ".monorepo" / "lib.manifest").read_text()
    path = proj / "pylock.toml"
    text = path.read_text()
    start = text.index('name = "lib"\nversion = "1.0"')
    edited = text[start:].replace('version = "1.0"', 'version = "1.1"', 1)
    edited = edited.replace('name = "lib-1.0.tar.gz"', 'name = "lib-1.1.tar.gz"', 1)
    path.write_text(text[:start] + edited)
    with pytest.raises(monorepo.LockFileError) as info:
        pull(proj, frozen=True)
    message = str(info.value)
    assert "lib 1.1" in message and "'lib-1.1.tar.gz'" in message and "'lib-1.0.tar.gz'" in message
    assert "monorepo lock" in message
    (item,) = monorepo.verify(proj).check("lock").items
    assert item.code == "invalid" and "lib-1.1.tar.gz" in item.message
    assert (proj / "duni" / ".monorepo" / "lib.manifest").read_text() == record


def test_a_source_moved_to_another_url_is_downloaded_from_there_before_the_tree_is_kept(
    project: Any, serve: Callable[..., IndexServer]
) -> None:
    # A mirror serving the same files: the same hashes, other URLs.  The tree stays,
    # but only once the new URL has been shown to serve the locked bytes.
    proj, index, server = project([APP, LIB], ["app"])
    monorepo.lock(proj)
    pull(proj)
    mirror = serve(index)
    text = (proj / "pylock.toml").read_text()
    moved = text.replace(f"{server.base_url}/files/", f"{mirror.base_url}/files/")
    (proj / "pylock.toml").write_text(moved)
    assert [i.code for i in monorepo.verify(proj).check("tree").items] == ["source-changed"] * 2
    with pytest.raises(PullError, match=r"not downloaded from .*--offline"):
        pull(proj, offline=True)
    result = pull(proj)
    assert result.updated == [] and sorted(result.unchanged) == ["app", "lib"]
    assert len(mirror.requests_for(r"^/files/(app|lib)-1\.0\.tar\.gz$")) == 2
    assert monorepo.verify(proj).passed
    mirror.clear_requests()
    assert sorted(pull(proj).unchanged) == ["app", "lib"]
    assert mirror.requests_for("^/files/") == []


def test_overlay_patches_from_the_lock_are_applied_and_checked(
    project: Any, tmp_path: Path
) -> None:
    proj, _, _ = project([LIB], ["lib"])
    monorepo.lock(proj)
    overlay = proj / "my-overlay"
    (overlay / "packages" / "lib" / "patches").mkdir(parents=True)
    (overlay / "overlay.toml").write_text('[overlay]\nname = "mine"\nformat = 1\n')
    (overlay / "packages" / "lib" / "overlay.toml").write_text(
        '[[rule]]\nversions = ">=1"\nreason = "test"\npatches = ["patches/0001.patch"]\n'
    )
    patch_file = overlay / "packages" / "lib" / "patches" / "0001.patch"
    patch_file.write_bytes(PATCH_LIB)
    rel = "packages/lib/patches/0001.patch"

    def patched(p: LockedPackage) -> LockedPackage:
        extra = {
            "overlay": {"name": "mine", "commit": "x", "rule": 0},
            "patches": [{"path": rel, "sha256": hashlib.sha256(PATCH_LIB).hexdigest()}],
        }
        # The lock's tree hash (if lock wrote one) is of the unpatched tree: drop it.
        tool = {k: v for k, v in p.tool.items() if k != "tree-hash"}
        return dataclasses.replace(p, tool={**tool, **extra})

    old = lockfile.read(proj / "pylock.toml")
    inputs = {
        **old.inputs,
        "overlays": [{"name": "mine", "spec": "my-overlay", "fingerprint": "x"}],
    }
    rewrite_lock(proj, patched, inputs=inputs)
    # The lock names an overlay the project does not list: stale, so pulled frozen.
    assert pull(proj, frozen=True).updated == ["lib"]
    init = proj / "duni" / "lib" / "lib" / "__init__.py"
    assert init.read_text().endswith("PATCHED = True\n")
    assert pull(proj, frozen=True).unchanged == ["lib"]
    patch_file.write_bytes(PATCH_LIB + b"\n")
    shutil.rmtree(proj / "duni" / "lib")
    with pytest.raises(PullError, match=r"lib 1\.0.*0001\.patch.*overlay changed.*monorepo lock"):
        pull(proj, frozen=True)


def test_a_dir_pull_did_not_create_is_adopted_when_right_and_refused_when_not(
    project: Any,
) -> None:
    proj, _, _ = project([LIB], ["lib"])
    monorepo.lock(proj)
    pull(proj)
    state = proj / "duni" / ".monorepo"
    (state / "lib.manifest").unlink()
    assert pull(proj).unchanged == ["lib"]  # same content: adopted
    assert (state / "lib.manifest").exists()
    (state / "lib.manifest").unlink()
    (proj / "duni" / "lib" / "extra.txt").write_text("who wrote this?\n")
    with pytest.raises(PullError, match=r"duni/lib .*not created by monorepo pull"):
        pull(proj)
    assert (proj / "duni" / "lib" / "extra.txt").exists()
    assert pull(proj, force=True).updated == ["lib"]
    assert_tree_matches_lock(proj, by_key(LIB))


def test_pull_named_packages_only(project: Any) -> None:
    proj, _, _ = project([APP, LIB], ["app"])
    monorepo.lock(proj)
    assert pull(proj, packages=["lib"]).updated == ["lib"]
    assert package_dirs(proj / "duni") == ["lib"]
    with pytest.raises(PullError, match="nosuch"):
        pull(proj, packages=["nosuch"])


def cli(proj: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed command, in a process of its own, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "monorepo", "--project", str(proj), *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_stale_lock_is_refused_with_lock_checks_reasons_and_frozen_pulls_it_as_it_is(
    project: Any,
) -> None:
    proj, _, _ = project([APP, LIB, OTHER], ["app"])
    monorepo.lock(proj)
    pull(proj)
    duni = proj / "duni"
    set_deps(proj, ["app", "other"])
    before = stat_snapshot(duni)
    with pytest.raises(StaleLockError) as info:
        pull(proj)
    assert info.value.reasons == ("dependencies: other was added",)
    check = cli(proj, "lock", "--check")
    assert check.returncode == 1 and "other was added" in check.stderr
    run = cli(proj, "pull")
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith("error: ") and "Traceback" not in run.stderr
    assert "pylock.toml is stale" in run.stderr and "- dependencies: other was added" in run.stderr
    assert "`monorepo lock`" in run.stderr and "`monorepo pull --frozen`" in run.stderr
    assert stat_snapshot(duni) == before  # nothing touched
    # --frozen: the lock as it is (uv's --frozen)
    run = cli(proj, "pull", "--frozen")
    assert run.returncode == 0, run.stderr
    assert "0 new, 0 changed, 2 unchanged" in run.stderr
    assert sorted(pull(proj, frozen=True).unchanged) == ["app", "lib"]
    # a loosened requirement the locked version still satisfies is not stale
    set_deps(proj, ["app>=0.5"])
    assert sorted(pull(proj).unchanged) == ["app", "lib"]
    # re-locked, the new dependency is pulled
    set_deps(proj, ["app", "other"])
    monorepo.lock(proj)
    assert pull(proj).updated == ["other"]


def test_missing_lock_is_a_lock_file_error(make_project: Callable[..., Path]) -> None:
    proj = make_project('[project]\nname = "p"\nversion = "0"\n')
    with pytest.raises(monorepo.LockFileError, match="monorepo lock"):
        pull(proj)


# ------------------------------------------------------- processes: concurrency and SIGKILL

PULL_SCRIPT = "import sys, json; from monorepo.vendoring.pull import pull; r = pull(sys.argv[1]); print(json.dumps(r.to_dict()))"


def pull_process(proj: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", PULL_SCRIPT, str(proj)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def big_releases(count: int = 3, size: int = 3_000_000) -> list[Release]:
    """Packages with large, poorly compressible files: seconds of work to kill in."""
    out = []
    for i in range(count):
        blob = hashlib.sha256(str(i).encode()).hexdigest()
        data = "".join(hashlib.sha256(f"{blob}{j}".encode()).hexdigest() for j in range(size // 64))
        out.append(Release(f"big{i}", "1.0", files={f"big{i}/data.txt": data}))
    return out


def test_concurrent_pulls_of_one_project_both_succeed(project: Any) -> None:
    releases = big_releases(3, 1_000_000)
    proj, _, _ = project(releases, [r.name for r in releases])
    monorepo.lock(proj)
    first, second = pull_process(proj), pull_process(proj)
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert first.returncode == 0, outs[0][1]
    assert second.returncode == 0, outs[1][1]
    results = [json.loads(out) for out, _ in outs]
    # serialised: one did the work, the other found it done
    assert sorted(len(r["updated"]) for r in results) == [0, 3]
    assert_tree_matches_lock(proj, by_key(*releases))


def timed_pull(proj: Path) -> float:
    started = time.monotonic()
    process = pull_process(proj)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return time.monotonic() - started


def kill_then_finish(proj: Path, delay: float, releases: dict[str, Release]) -> None:
    """SIGKILL a pull after *delay* seconds; the next pull must produce the locked tree."""
    process = pull_process(proj)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    timed_pull(proj)
    assert_tree_matches_lock(proj, releases)
    state = proj / "duni" / ".monorepo"
    assert sorted(
        p.name
        for p in state.iterdir()
        if p.name not in ("lock", ".gitignore") and p.suffix not in (".stat", ".facts")
    ) == sorted(f"{name}.manifest" for name in package_dirs(proj / "duni"))


FRACTIONS = (0.15, 0.3, 0.45, 0.6, 0.75, 0.9)


def test_sigkill_at_any_point_then_pull_finishes_with_a_correct_tree(
    project: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    v1 = big_releases(6, 3_000_000)
    proj, index, _ = project(v1, [r.name for r in v1])
    monorepo.lock(proj)
    # A first pull from a cold cache, to know how long the work lasts.
    fresh_cache(monkeypatch, tmp_path)
    duration = timed_pull(proj)
    # From scratch: each kill lands at another point of download, extract, hash, rename.
    for fraction in FRACTIONS:
        fresh_cache(monkeypatch, tmp_path)
        shutil.rmtree(proj / "duni")
        kill_then_finish(proj, duration * fraction, by_key(*v1))
    # Updating an existing tree: kills between setting the old tree aside and recording
    # the new one must neither lose the tree nor mistake it for a local edit.
    old_duni = tmp_path / "old-duni"
    shutil.copytree(proj / "duni", old_duni, symlinks=True)
    v2 = [dataclasses.replace(r, version="2.0") for r in v1]
    index.publish(*v2)
    monorepo.lock(proj, upgrade=True)
    fresh_cache(monkeypatch, tmp_path)
    duration = timed_pull(proj)
    assert_tree_matches_lock(proj, by_key(*v2))
    for fraction in FRACTIONS:
        fresh_cache(monkeypatch, tmp_path)
        shutil.rmtree(proj / "duni")
        shutil.copytree(old_duni, proj / "duni", symlinks=True)
        kill_then_finish(proj, duration * fraction, by_key(*v2))
    result = pull(proj)
    assert result.updated == [] and len(result.unchanged) == 6


def without_tree_hash(p: LockedPackage) -> LockedPackage:
    return dataclasses.replace(p, tool={k: v for k, v in p.tool.items() if k != "tree-hash"})


@pytest.mark.parametrize("recorded_hash", [True, False], ids=["lock-tree-hash", "no-tree-hash"])
@pytest.mark.parametrize(
    "state",
    ["pending-written", "old-set-aside", "new-renamed-in", "manifest-promoted"],
)
def test_every_state_a_kill_between_two_renames_leaves_is_recovered(
    project: Any, state: str, recorded_hash: bool
) -> None:
    # These windows last microseconds, so a timer cannot hit them reliably (the test
    # above covers the wide ones); each state is built exactly as the kill leaves it.
    lib2 = Release("lib", "2.0", files={"lib/new.py": "NEW = 1\n"})
    proj, index, _ = project([LIB], ["lib"])
    monorepo.lock(proj)
    if not recorded_hash:
        rewrite_lock(proj, without_tree_hash)
    duni, saved = proj / "duni", proj.parent / f"saved-{state}-{recorded_hash}"
    state_dir = duni / ".monorepo"
    pull(proj)
    shutil.copytree(duni / "lib", saved / "old")
    old_manifest = (state_dir / "lib.manifest").read_text()
    index.publish(lib2)
    monorepo.lock(proj, upgrade=True)
    if not recorded_hash:
        rewrite_lock(proj, without_tree_hash)
    assert pull(proj).updated == ["lib"]
    new_manifest = (state_dir / "lib.manifest").read_text()
    shutil.move(duni / "lib", saved / "new")

    (state_dir / "lib.pending").write_text(new_manifest)
    if state == "pending-written":
        shutil.copytree(saved / "old", duni / "lib")
        (state_dir / "lib.manifest").write_text(old_manifest)
    elif state == "old-set-aside":
        shutil.copytree(saved / "old", duni / ".tmp-lib-old-0123")
        shutil.copytree(saved / "new", duni / ".tmp-lib-new-0123")
        (state_dir / "lib.manifest").write_text(old_manifest)
    elif state == "new-renamed-in":
        shutil.copytree(saved / "old", duni / ".tmp-lib-old-0123")
        shutil.copytree(saved / "new", duni / "lib")
        (state_dir / "lib.manifest").write_text(old_manifest)
    else:
        (state_dir / "lib.pending").unlink()
        shutil.copytree(saved / "old", duni / ".tmp-lib-old-0123")
        shutil.copytree(saved / "new", duni / "lib")
    result = pull(proj)
    assert result.updated + result.unchanged == ["lib"]
    assert_tree_matches_lock(proj, by_key(lib2))
    assert (state_dir / "lib.manifest").read_text() == new_manifest
    assert not (state_dir / "lib.pending").exists()
    assert pull(proj).unchanged == ["lib"]


def test_cli_pull_text_json_and_refusal(project: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from monorepo.cli.commands import main

    proj, _, _ = project([APP, LIB], ["app"])
    monorepo.lock(proj)
    assert main(["--project", str(proj), "pull", "--json", "--jobs", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {
        "duni": str(proj / "duni"),
        "updated": ["app", "lib"],
        "added": ["app", "lib"],
        "unchanged": [],
        "removed": [],
        "warnings": [],
        "crates_updated": [],
        "crates_removed": [],
    }
    assert main(["--project", str(proj), "pull"]) == 0
    assert "0 new, 0 changed, 2 unchanged, 0 removed" in capsys.readouterr().err
    (proj / "duni" / "app" / "app" / "__init__.py").write_text("x = 1\n")
    assert main(["--project", str(proj), "pull"]) == 1
    err = capsys.readouterr().err
    assert "error: duni/ has changes" in err and "modified app/__init__.py" in err
    assert main(["--project", str(proj), "pull", "--force", "app"]) == 0
    assert " ~ app" in capsys.readouterr().err
    assert monorepo.pull is pull and monorepo.PullResult is PullResult


def test_noop_pull_reads_no_file_content_but_still_sees_edits(
    make_index: Any, serve: Any, make_project: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stat cache: an unchanged tree is not re-read; a same-size edit still is."""
    import monorepo.sources.treehash as treehash

    server = serve(make_index([Release("lib", "1.0", files={"lib/data.txt": "aaaa\n"})]))
    proj = make_project(
        f'[project]\nname = "p"\nversion = "0"\ndependencies = ["lib"]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\n'
        'targets = [{ name = "linux", python = "3.11", platform = "linux", machine = "x86_64" }]\n'
    )
    monorepo.lock(proj)
    monorepo.pull(proj)
    reads: list[Path] = []
    real = treehash._hash_file

    def counting(path: Path) -> str:
        reads.append(path)
        return real(path)

    # a spy, not a mock: every file is still hashed for real, the test only counts reads
    monkeypatch.setattr(treehash, "_hash_file", counting)
    assert monorepo.pull(proj).unchanged == ["lib"]
    assert reads == []
    data = proj / "duni" / "lib" / "lib" / "data.txt"
    data.write_text("bbbb\n")  # same size; mtime and ctime move
    with pytest.raises(PullError, match=r"data\.txt"):
        monorepo.pull(proj)
    assert any(p.name == "data.txt" for p in reads)


def test_pull_sweeps_what_dead_runs_left_in_duni_and_in_the_download_cache(
    project: Any,
) -> None:
    proj, _, _ = project([LIB], ["lib"])
    monorepo.lock(proj)
    pull(proj)
    duni, store = proj / "duni", ContentStore(current_cache().store)
    dead = "c" * 64
    planted = [
        store.path_for(dead).parent / f".tmp-{dead}-killed",
        store.origins_path(dead).parent / f".tmp-{dead}-killed",
        duni / ".tmp-lib-new-0123" / "lib" / "half.py",
        duni / ".monorepo" / ".tmp-lib.manifest-0123",
    ]
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("partial\n")
    assert pull(proj).unchanged == ["lib"]
    assert not any(p.exists() for p in planted)
    assert leftovers(duni) == [] and leftovers(duni / ".monorepo") == []


def wide_releases(count: int, files: int) -> list[Release]:
    """Packages of many small files: extraction (creating files) takes a while."""
    return [
        Release(
            f"wide{i}",
            "1.0",
            files={
                f"wide{i}/m{j:05d}.txt": hashlib.sha256(f"{i}-{j}".encode()).hexdigest() * 8
                for j in range(files)
            },
        )
        for i in range(count)
    ]


def proc_children(pid: int) -> set[int]:
    """The live direct children of *pid* (from /proc: every process's parent)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.add(int(entry.name))
    return out


def proc_alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def staging(duni: Path) -> list[Path]:
    return [p for p in duni.iterdir() if p.name.startswith(".tmp-")] if duni.is_dir() else []


def _filling(duni: Path) -> bool:
    return any(p.is_dir() and any(p.rglob("*.txt")) for p in staging(duni))


def _one_in_place(duni: Path) -> bool:
    return bool(staging(duni)) and any((duni / f"wide{i}").is_dir() for i in range(6))


KILL_MOMENTS: dict[str, Callable[[Path], bool]] = {
    "staging-created": lambda duni: bool(staging(duni)),
    "extracting": _filling,
    "one-package-in-place": _one_in_place,
}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_sigkill_of_the_process_group_mid_extraction_takes_the_workers_too(
    project: Any,
) -> None:
    import filelock

    releases = wide_releases(4, 2500)
    proj, _, _ = project(releases, [r.name for r in releases])
    monorepo.lock(proj)  # the sources are in the cache: extraction starts at once
    duni = proj / "duni"
    # Each kill at another point, the second round on the leftovers of the first.
    for moment in [*KILL_MOMENTS, *KILL_MOMENTS]:
        shutil.rmtree(duni, ignore_errors=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(
            [sys.executable, "-c", PULL_SCRIPT, str(proj)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, as a shell job has
        )
        deadline = time.monotonic() + 120
        while not KILL_MOMENTS[moment](duni):
            assert process.poll() is None, f"{moment}: the pull finished before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        workers = proc_children(process.pid)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        assert workers, f"{moment}: no worker process was running"
        # The next pull starts once it has the lock: by then no process of the killed
        # one may be left writing into duni/.
        lock = filelock.FileLock(duni / ".monorepo" / "lock")
        lock.acquire(timeout=120)
        try:
            survivors = sorted(p for p in workers if proc_alive(p))
        finally:
            lock.release()
        assert survivors == [], f"{moment}: workers outlived the pull"
        timed_pull(proj)
        assert_tree_matches_lock(proj, by_key(*releases))


# --------------------------------------------------------- pull's own state, never via a link


def outside_state(tmp_path: Path) -> Path:
    """A directory a planted link points at, holding what pull would delete or overwrite."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    for name in ("other.manifest", "other.stat", "other.facts", ".tmp-precious", "lock"):
        (outside / name).write_text(f"{name}: not pull's\n")
    return outside


def tree_state(root: Path) -> dict[str, tuple[bytes | str, int]]:
    """Content (or link target) and mtime of everything under *root*."""
    out: dict[str, tuple[bytes | str, int]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            out[str(path.relative_to(root))] = (os.readlink(path), st.st_mtime_ns)
        elif path.is_file():
            out[str(path.relative_to(root))] = (path.read_bytes(), st.st_mtime_ns)
    return out


def plant_state_link(duni: Path, outside: Path) -> None:
    shutil.rmtree(duni / ".monorepo", ignore_errors=True)
    duni.mkdir(exist_ok=True)
    (duni / ".monorepo").symlink_to(outside)


def plant_lock_link(duni: Path, outside: Path) -> None:
    (duni / ".monorepo" / "lock").unlink(missing_ok=True)
    (duni / ".monorepo" / "lock").symlink_to(outside / "lock")


def plant_dangling_lock_link(duni: Path, outside: Path) -> None:
    (duni / ".monorepo" / "lock").unlink(missing_ok=True)
    (duni / ".monorepo" / "lock").symlink_to(outside / "no-such-dir" / "lock")


def plant_record_links(duni: Path, outside: Path) -> None:
    for name in ("lib.manifest", "lib.stat"):
        (duni / ".monorepo" / name).unlink(missing_ok=True)
        (duni / ".monorepo" / name).symlink_to(outside / f"other.{name.split('.')[1]}")


def plant_dangling_state_link(duni: Path, outside: Path) -> None:
    shutil.rmtree(duni / ".monorepo", ignore_errors=True)
    duni.mkdir(exist_ok=True)
    (duni / ".monorepo").symlink_to(outside / "no-such-dir")


PLANTS = {
    f.__name__.removeprefix("plant_"): f
    for f in (
        plant_state_link,
        plant_dangling_state_link,
        plant_lock_link,
        plant_dangling_lock_link,
        plant_record_links,
    )
}


PLANT_CASES = [
    (plant, first)
    for plant in sorted(PLANTS)
    for first in (True, False)
    if first or plant != "record_links"  # (no records to replace before a first pull)
]


@pytest.mark.parametrize(
    ("plant", "first_pull"),
    PLANT_CASES,
    ids=[f"{p}-{'pulled-before' if f else 'fresh'}" for p, f in PLANT_CASES],
)
def test_a_planted_link_among_pulls_records_is_refused_and_nothing_outside_is_touched(
    project: Any, tmp_path: Path, plant: str, first_pull: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    from monorepo.cli.commands import main

    proj, _, _ = project([LIB, OTHER], ["lib"])
    monorepo.lock(proj)
    duni = proj / "duni"
    if first_pull:
        pull(proj)
    else:
        (duni / ".monorepo").mkdir(parents=True)
    outside = outside_state(tmp_path)
    PLANTS[plant](duni, outside)
    before, inside = tree_state(outside), tree_state(duni)
    with pytest.raises(PullError) as info:
        pull(proj)
    message = str(info.value)
    assert ".monorepo" in message and "symbolic link" in message and "rm " in message
    assert main(["--project", str(proj), "pull"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert tree_state(outside) == before  # nothing written or deleted there
    assert tree_state(duni) == inside  # nor in duni/
    # The tree check of verify says so, and reads no record through the link.
    items = monorepo.verify(proj).check("tree").items
    assert any(i.code == "state" and "symbolic link" in i.message for i in items), items
    # Deleting what was planted is all it takes.
    for path in [duni / ".monorepo", *(duni / ".monorepo").glob("*")]:
        if path.is_symlink():
            path.unlink()
    result = pull(proj)
    assert result.updated + result.unchanged == ["lib"]
    assert_tree_matches_lock(proj, by_key(LIB))
    assert tree_state(outside) == before


def test_the_records_are_ignored_by_git_and_the_trees_are_not(project: Any) -> None:
    import pygit2

    proj, _, _ = project([LIB], ["lib"])
    monorepo.lock(proj)
    pull(proj)
    repo = pygit2.init_repository(str(proj))
    state = sorted(p.name for p in (proj / "duni" / ".monorepo").iterdir())
    assert {"lib.manifest", "lock", ".gitignore"} <= set(state)
    for name in state:
        assert repo.path_is_ignored(f"duni/.monorepo/{name}"), name
    for path in ("duni/lib/lib/__init__.py", "duni/workspace.toml", "duni/README.md"):
        assert not repo.path_is_ignored(path), path


# ------------------------------------------------- the store heals; a full disk is named


def test_a_store_entry_replaced_by_a_directory_heals_on_the_next_pull(project: Any) -> None:
    proj, _, _ = project([APP, LIB], ["app"])
    monorepo.lock(proj)
    pull(proj)
    doc = lockfile.read(proj / "pylock.toml")
    source = next(p for p in doc.packages if p.name == "lib").source
    assert isinstance(source, SdistSource)
    entry = ContentStore(current_cache().store).path_for(source.sha256)
    entry.unlink()
    entry.mkdir()
    (entry / "stray").write_bytes(b"not the sdist")
    shutil.rmtree(proj / "duni" / "lib")  # so that pull needs the source again
    result = pull(proj)
    assert result.updated == ["lib"]
    assert entry.is_file() and hashlib.sha256(entry.read_bytes()).hexdigest() == source.sha256
    assert_tree_matches_lock(proj, by_key(APP, LIB))


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """``small_disk(size)``: a fresh tmpfs of *size* (``mount -o size=``), unmounted at the
    end; the test is skipped where mounting is not allowed (not root, no tmpfs)."""
    mounts: list[Path] = []

    def factory(size: str = "1m") -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs to fill needs root")
        where = tmp_path / f"disk{len(mounts)}"
        where.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)]
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except OSError as error:
            pytest.skip(f"cannot run mount: {error}")
        if run.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {run.stderr.strip()}")
        mounts.append(where)
        return where

    yield factory
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


def cli_pull(proj: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monorepo", "--project", str(proj), "pull"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_paragraph(run: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert run.returncode == 1, run.stderr  # a full disk: the operation failed
    assert "Traceback" not in run.stderr, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    for fragment in fragments:
        assert fragment in lines[0], run.stderr


def test_a_full_disk_under_duni_is_named_and_not_blamed_on_the_archive(
    project: Any, small_disk: Any
) -> None:
    disk = small_disk("1m")
    duni = disk / "duni"
    (big,) = big_releases(1, 3_000_000)  # 3 MB of text: more than the disk holds
    proj, _, _ = project([big], ["big0"], tool_toml=f'duni = "{duni}"')
    monorepo.lock(proj)
    with pytest.raises(DiskFullError) as caught:
        pull(proj)
    message = str(caught.value)
    assert f"the disk holding {duni} is full (the file system mounted at {disk})" in message
    assert "big0" in message and "No space left on device" in message
    assert "refusing" not in message and "lock another version" not in message
    assert package_dirs(duni) == [] and leftovers(duni) == []  # nothing half-written
    run = cli_pull(proj)
    assert_one_paragraph(run, f"the disk holding {duni} is full")


def test_a_full_download_cache_is_named_and_not_blamed_on_duni(
    project: Any, small_disk: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (big,) = big_releases(1, 3_000_000)  # its sdist is larger than the disk
    proj, _, _ = project([big], ["big0"])
    monorepo.lock(proj)
    disk = small_disk("1m")
    monkeypatch.setenv("MONOREPO_CACHE_DIR", str(disk / "cache"))
    store = ContentStore(current_cache().store)
    with pytest.raises(DiskFullError) as caught:
        pull(proj)
    message = str(caught.value)
    assert f"the disk holding {store.root} is full (the file system mounted at {disk})" in message
    assert "big0 1.0" in message and "MONOREPO_CACHE_DIR" in message
    assert "duni" not in message
    assert store_files(store) == [] and not (proj / "duni" / "big0").exists()
    run = cli_pull(proj)
    assert_one_paragraph(run, f"the disk holding {store.root} is full")
