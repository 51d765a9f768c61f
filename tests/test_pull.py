"""End-to-end tests of fetching, materializing and pulling locked sources.

Everything is real: sdists built by the fixture builder and served over loopback
HTTP, git repositories made with pygit2, archives extracted on disk, pulls run in
other processes and killed with SIGKILL.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

from fixtures.builder import FixtureIndex, Release, sdist_bytes, source_tree
from fixtures.gitrepo import make_git_package
from fixtures.server import IndexServer
from monorepo.cache import ContentStore
from monorepo.errors import HashMismatchError, OverlayError, PullError
from monorepo.http import HttpClient
from monorepo.lockfile import LockedPackage, SdistSource, VcsSource
from monorepo.patches import Patch
from monorepo.sources import fetch_source, materialize
from monorepo.treehash import tree_hash

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
    path = fetch_source(pkg, store=store)
    assert isinstance(pkg.source, SdistSource)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == pkg.source.sha256
    again = fetch_source(pkg, store=store, offline=True)
    assert again == path
    assert len(server.requests_for(r"^/files/lib-1\.0\.tar\.gz$")) == 1


def test_fetch_source_resumes_a_truncated_download(
    lib_index: tuple[FixtureIndex, IndexServer, Release], tmp_path: Path
) -> None:
    index, server, _ = lib_index
    pkg = sdist_package(index, server, "lib", "1.0")
    server.add_fault(r"^/files/", "truncate")
    with HttpClient(backoff=0) as client:
        path = fetch_source(pkg, store=ContentStore(tmp_path / "store"), fetch=client.stream)
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
        fetch_source(pkg, store=store)
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
    assert fetch_source(local, store=store, offline=True).is_file()
    index.replace_file("lib-1.0.tar.gz", b"tampered")
    with pytest.raises(HashMismatchError, match=r"lib 1\.0"):
        fetch_source(local, store=ContentStore(tmp_path / "other"))


def test_fetch_source_offline_without_cache_says_to_go_online(
    lib_index: tuple[FixtureIndex, IndexServer, Release], tmp_path: Path
) -> None:
    index, server, _ = lib_index
    pkg = sdist_package(index, server, "lib", "1.0")
    with pytest.raises(PullError, match=r"lib 1\.0.*once online"):
        fetch_source(pkg, store=ContentStore(tmp_path / "store"), offline=True)
    assert server.requests_for(r"^/files/") == []


# -------------------------------------------------------------------- materialize


def test_materialize_extracts_without_top_dir_and_returns_the_tree_hash(
    lib_index: tuple[FixtureIndex, IndexServer, Release], tmp_path: Path
) -> None:
    index, server, release = lib_index
    pkg = sdist_package(index, server, "lib", "1.0")
    dest = tmp_path / "duni" / "lib"
    digest = materialize(pkg, dest, patches=(), store=ContentStore(tmp_path / "store"))
    assert tree_files(dest) == expected_tree(release)
    assert digest == tree_hash(dest)
    assert leftovers(dest.parent) == []


def test_materialize_applies_patches_in_order(
    lib_index: tuple[FixtureIndex, IndexServer, Release], tmp_path: Path
) -> None:
    index, server, _ = lib_index
    pkg = sdist_package(index, server, "lib", "1.0")
    store = ContentStore(tmp_path / "store")
    plain = materialize(pkg, tmp_path / "plain", store=store)
    patch = Patch(
        "packages/lib/patches/0001.patch", hashlib.sha256(PATCH_LIB).hexdigest(), PATCH_LIB
    )
    patched = materialize(pkg, tmp_path / "patched", patches=[patch], store=store)
    assert patched != plain
    assert (tmp_path / "patched" / "lib" / "__init__.py").read_text().endswith("PATCHED = True\n")


def test_materialize_leaves_nothing_when_a_patch_fails(
    lib_index: tuple[FixtureIndex, IndexServer, Release], tmp_path: Path
) -> None:
    index, server, _ = lib_index
    pkg = sdist_package(index, server, "lib", "1.0")
    bad = PATCH_LIB.replace(b"__version__ = '1.0'", b"__version__ = '9.9'")
    patch = Patch("p/0001.patch", hashlib.sha256(bad).hexdigest(), bad)
    dest = tmp_path / "duni" / "lib"
    with pytest.raises(OverlayError, match=r"0001\.patch"):
        materialize(pkg, dest, patches=[patch], store=ContentStore(tmp_path / "store"))
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
        materialize(pkg, dest, store=ContentStore(tmp_path / "store"))
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
    digest = materialize(pkg, dest, store=ContentStore(tmp_path / "store"))
    assert tree_files(dest) == source_tree(Release("gitlib", "1.0"))
    assert not (dest / ".git").exists()
    assert digest == tree_hash(dest)
    # The export in the cache is shared: the copy must be independent of it.
    (dest / "pyproject.toml").write_text("edited")
    other = materialize(pkg, tmp_path / "again", store=ContentStore(tmp_path / "store"))
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
        fetch_source(pkg, store=ContentStore(tmp_path / "store"), offline=True)
    assert os.path.isdir(fetch_source(pkg, store=ContentStore(tmp_path / "store")))
