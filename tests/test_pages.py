"""Index pages parsed lazily by version, and the on-disk cache of parsed pages."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from fixtures.builder import Release
from monorepo.index.pages import ProjectReleases, json_page_records
from monorepo.project.targets import Target
from monorepo.resolve.finder import IndexFinder
from tests.helpers import MakeIndex, Serve, current_cache, index_client

PAGE_URL = "https://index.invalid/simple/demo/"


def page(*filenames: str) -> bytes:
    files = [
        {"filename": f, "url": f"../../files/{f}", "hashes": {"sha256": "ab" * 32}}
        for f in filenames
    ]
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "demo", "files": files}).encode()


def releases(data: bytes) -> ProjectReleases:
    groups, _foreign = json_page_records(data, PAGE_URL, canonicalize_name("demo"))
    return ProjectReleases(canonicalize_name("demo"), "https://index.invalid/simple/", groups)


def test_spellings_of_one_version_are_one_release() -> None:
    project = releases(page("demo-1.0.tar.gz", "demo-1.0.0-py3-none-any.whl", "demo-2.0.tar.gz"))
    assert sorted(project.versions()) == [Version("1.0"), Version("2.0")]
    assert [f.filename for f in project.files(Version("1"))] == [
        "demo-1.0.tar.gz",
        "demo-1.0.0-py3-none-any.whl",
    ]
    wheel = project.files(Version("1.0"))[1]
    assert wheel.url == "https://index.invalid/files/demo-1.0.0-py3-none-any.whl"
    assert project.files(Version("3.0")) == ()


def test_foreign_and_invalid_files_are_left_out() -> None:
    data = page(
        "demo-1.0.tar.gz",
        "other-1.0.tar.gz",  # another project on this page
        "demo-1.0-py3-none.whl",  # a wheel name without a platform tag
        "demo-1.0.win32.exe",  # neither sdist nor wheel
        "demo-notaversion.tar.gz",
    )
    groups, foreign = json_page_records(data, PAGE_URL, canonicalize_name("demo"))
    assert foreign == 1
    project = ProjectReleases(canonicalize_name("demo"), "https://index.invalid/simple/", groups)
    assert project.versions() == (Version("1.0"),)
    assert [f.filename for f in project.all_files()] == ["demo-1.0.tar.gz"]


def cache_entries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_a_changed_page_is_parsed_again(
    make_index: MakeIndex, serve: Serve, tmp_path: Path
) -> None:
    index = make_index([Release("demo", "1.0")])
    server = serve(index)
    pages = tmp_path / "pages"
    with index_client([server.url], page_cache=pages) as client:
        assert client.project("demo").versions() == (Version("1.0"),)
    (entry,) = cache_entries(pages)
    stamp = entry.stat().st_mtime_ns

    # The same body again: the parsed form is reused, not written again.
    with index_client([server.url], page_cache=pages) as client:
        assert [f.filename for f in client.project_files("demo")] == [
            f.filename for f in index.files_for("demo")
        ]
    assert entry.stat().st_mtime_ns == stamp

    # A new release changes the body: the cache must not hide it, and keeps one entry.
    index.publish(Release("demo", "1.1"))
    with index_client([server.url], page_cache=pages) as client:
        assert sorted(client.project("demo").versions()) == [Version("1.0"), Version("1.1")]
    assert cache_entries(pages) == [entry]


def test_a_damaged_cache_entry_is_a_miss(
    make_index: MakeIndex, serve: Serve, tmp_path: Path
) -> None:
    server = serve(make_index([Release("demo", "1.0"), Release("demo", "2.0")]))
    pages = tmp_path / "pages"
    with index_client([server.url], page_cache=pages) as client:
        client.project("demo")
    for entry in cache_entries(pages):
        entry.write_bytes(entry.read_bytes()[:40])
    with index_client([server.url], page_cache=pages) as client:
        assert sorted(client.project("demo").versions()) == [Version("1.0"), Version("2.0")]


@pytest.mark.parametrize(
    ("releases", "followed", "passed_over"),
    [
        pytest.param(
            # app -> lib -> base, and a Windows-only dependency the Linux target never
            # needs: the crawl follows app 1.0 and lib 2.0 (the newest).
            [
                Release("app", "1.0", requires_dist=("lib", "winonly; sys_platform == 'win32'")),
                Release("lib", "1.0", requires_dist=("base>=2",)),
                Release("lib", "2.0", requires_dist=("base>=3",)),
                Release("base", "3.0"),
                Release("winonly", "1.0"),
            ],
            "base",
            "winonly",
            id="newest-for-the-target",
        ),
        pytest.param(
            # app caps lib below its newest release: the crawl must read ahead from lib
            # 1.0 (whose dependency is old-base), not lib 2.0 (new-base), as the resolver will.
            [
                Release("app", "1.0", requires_dist=("lib<2",)),
                Release("lib", "1.0", requires_dist=("old-base",)),
                Release("lib", "2.0", requires_dist=("new-base",)),
                Release("old-base", "1.0"),
                Release("new-base", "1.0"),
            ],
            "old-base",
            "new-base",
            id="newest-the-requirement-allows",
        ),
    ],
)
def test_the_finder_crawls_ahead_of_the_resolver(
    make_index: MakeIndex, serve: Serve, releases: list[Release], followed: str, passed_over: str
) -> None:
    # Nobody but the crawl asks for anything past app.
    server = serve(make_index(releases))
    linux = Target(name="linux", python="3.11", platform="linux", machine="x86_64")
    client = index_client([server.url], backoff=0.001)
    finder = IndexFinder(client, linux, cache=current_cache())
    finder.prefetch([(canonicalize_name("app"), frozenset(), SpecifierSet())])
    deadline = time.monotonic() + 30
    while not server.requests_for(f"^/simple/{followed}/$") and time.monotonic() < deadline:
        time.sleep(0.01)
    client.close()
    assert server.requests_for(f"^/simple/{followed}/$")
    assert not server.requests_for(f"^/simple/{passed_over}/$")
