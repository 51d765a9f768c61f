"""The index client against real simple-API pages: negotiated JSON, HTML, file:// trees."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag
from packaging.version import Version

from fixtures.builder import FixtureIndex, Release
from monorepo.errors import HashMismatchError, IndexClientError
from monorepo.index.client import DistFile, IndexClient, parse_html_page, parse_json_page
from tests.helpers import MakeIndex, Serve, index_client

RELEASES = [
    Release("Foo.Bar", "1.0", requires_dist=("baz>=1",), requires_python=">=3.8"),
    Release("foo-bar", "1.1", yanked="broken build", upload_time="2024-03-04T05:06:07Z"),
    Release("foo-bar", "1.2", yanked=""),
    Release("baz", "2.0", wheels=("py3-none-any", "cp311-cp311-manylinux_2_17_x86_64")),
]


def client(*urls: str, **kw: object) -> IndexClient:
    kw.setdefault("backoff", 0.001)
    return index_client(list(urls), **kw)  # type: ignore[arg-type]


def by_name(files: tuple[DistFile, ...]) -> dict[str, DistFile]:
    return {f.filename: f for f in files}


def check_against_index(files: tuple[DistFile, ...], index: FixtureIndex, *, pep700: bool) -> None:
    """Every field the page carries matches what the fixture index published."""
    entries = index.files_for("foo-bar")
    assert sorted(f.filename for f in files) == sorted(e.filename for e in entries)
    for entry in entries:
        dist = by_name(files)[entry.filename]
        assert dist.name == "foo-bar"
        assert dist.version == Version(entry.version)
        assert dist.kind == entry.kind
        assert dist.sha256 == entry.sha256
        assert dist.url.endswith("/files/" + entry.filename)
        assert "#" not in dist.url
        assert dist.yanked == entry.yanked
        expected_rp = SpecifierSet(entry.requires_python) if entry.requires_python else None
        assert dist.requires_python == expected_rp
        assert dist.core_metadata == (entry.core_metadata_sha256 or False)
        if pep700:
            assert dist.size == entry.size
            assert dist.upload_time == datetime.fromisoformat(entry.upload_time)
            assert dist.upload_time is not None and dist.upload_time.tzinfo is not None
        else:
            assert dist.size is None
            assert dist.upload_time is None


def test_json_page_negotiated(make_index: MakeIndex, serve: Serve) -> None:
    index = make_index(RELEASES)
    server = serve(index)
    with client(server.url) as c:
        files = c.project_files("Foo_Bar")
    check_against_index(files, index, pep700=True)
    page = server.requests_for(r"^/simple/foo-bar/$")
    assert len(page) == 1
    assert "application/vnd.pypi.simple.v1+json" in page[0].headers["accept"]
    wheel = by_name(files)["foo_bar-1.0-py3-none-any.whl"]
    assert wheel.kind == "wheel"
    assert wheel.tags == frozenset({Tag("py3", "none", "any")})
    assert wheel.index_url == server.url
    assert wheel.url == server.base_url + "/files/foo_bar-1.0-py3-none-any.whl"
    assert by_name(files)["foo_bar-1.1.tar.gz"].yanked == "broken build"
    assert by_name(files)["foo_bar-1.2.tar.gz"].yanked == ""
    assert by_name(files)["foo_bar-1.1.tar.gz"].upload_time == datetime(
        2024, 3, 4, 5, 6, 7, tzinfo=UTC
    )


def test_html_only_server(make_index: MakeIndex, serve: Serve) -> None:
    index = make_index(RELEASES)
    server = serve(index, formats=("html",))
    with client(server.url) as c:
        files = c.project_files("foo-bar")
    check_against_index(files, index, pep700=False)


def test_index_url_without_trailing_slash(make_index: MakeIndex, serve: Serve) -> None:
    server = serve(make_index(RELEASES))
    with client(server.url.rstrip("/")) as c:
        files = c.project_files("baz")
    assert {f.filename for f in files} == {
        "baz-2.0.tar.gz",
        "baz-2.0-py3-none-any.whl",
        "baz-2.0-cp311-cp311-manylinux_2_17_x86_64.whl",
    }
    assert all(f.index_url == server.url for f in files)


def test_file_index_json_and_html(make_index: MakeIndex) -> None:
    index = make_index(RELEASES)
    with client(index.file_url) as c:
        files = c.project_files("foo-bar")
    check_against_index(files, index, pep700=True)
    assert all(f.url.startswith("file://") for f in files)
    assert Path(files[0].url.removeprefix("file://")).is_file()

    for page in index.simple_dir.glob("*/index.json"):
        page.unlink()
    with client(index.file_url) as c:
        html_files = c.project_files("foo-bar")
    check_against_index(html_files, index, pep700=False)


def test_file_index_as_plain_path(make_index: MakeIndex) -> None:
    index = make_index(RELEASES)
    with client(str(index.simple_dir)) as c:
        assert len(c.project_files("baz")) == 3
        assert c.project_files("missing") == ()


def test_unknown_project_is_empty(make_index: MakeIndex, serve: Serve) -> None:
    server = serve(make_index(RELEASES))
    with client(server.url) as c:
        assert c.project_files("does-not-exist") == ()
    # A 404 is an answer, not a failure: asked once, never retried.
    assert len(server.requests_for(r"^/simple/does-not-exist/$")) == 1


def test_first_index_that_knows_the_project_wins(make_index: MakeIndex, serve: Serve) -> None:
    first = serve(make_index([Release("shared", "1.0")], name="first"))
    second = serve(
        make_index([Release("shared", "9.0"), Release("only-second", "1.0")], name="second")
    )
    with client(first.url, second.url) as c:
        shared = c.project_files("shared")
        only = c.project_files("only-second")
    assert {f.version for f in shared} == {Version("1.0")}
    assert all(f.index_url == first.url for f in shared)
    # The later index is not even asked about a project the first one has.
    assert second.requests_for(r"^/simple/shared/") == []
    assert {f.version for f in only} == {Version("1.0")}
    assert all(f.index_url == second.url for f in only)


def test_concurrent_callers_share_one_fetch(make_index: MakeIndex, serve: Serve) -> None:
    server = serve(make_index(RELEASES))
    # Slow the page down so all threads are certainly waiting on the same fetch.
    server.add_fault(r"^/simple/baz/$", "slow", delay=0.3)
    results: list[tuple[DistFile, ...]] = []
    with client(server.url) as c:
        threads = [
            threading.Thread(target=lambda: results.append(c.project_files("baz")))
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert c.project_files("BAZ") == results[0]
    assert len(results) == 8 and all(r == results[0] for r in results)
    assert len(server.requests_for(r"^/simple/baz/$")) == 1


def test_prefetch_then_memoised(make_index: MakeIndex, serve: Serve) -> None:
    server = serve(make_index(RELEASES))
    with client(server.url) as c:
        c.prefetch(["baz", "foo-bar", "nothing-here"])
        assert len(c.project_files("baz")) == 3
        assert len(c.project_files("foo_bar")) == 6
        assert c.project_files("nothing-here") == ()
    for path in ("/simple/baz/", "/simple/foo-bar/", "/simple/nothing-here/"):
        assert len(server.requests_for("^" + path + "$")) == 1


def test_fetch_checks_sha256_and_size(make_index: MakeIndex, serve: Serve) -> None:
    index = make_index(RELEASES)
    server = serve(index)
    with client(server.url) as c:
        sdist = by_name(c.project_files("baz"))["baz-2.0.tar.gz"]
        server.add_fault(r"/files/baz-2\.0\.tar\.gz$", "corrupt")
        with pytest.raises(HashMismatchError) as caught:
            c.fetch(sdist.url, sha256=sdist.sha256, size=sdist.size)
        assert sdist.url in str(caught.value)
        assert str(sdist.sha256) in str(caught.value)
        # The damaged body was not cached: the next fetch downloads good bytes.
        data = c.fetch(sdist.url, sha256=sdist.sha256, size=sdist.size)
    assert data == (index.files_dir / "baz-2.0.tar.gz").read_bytes()


def test_fetch_wrong_size(make_index: MakeIndex, serve: Serve) -> None:
    server = serve(make_index(RELEASES))
    with client(server.url) as c:
        sdist = by_name(c.project_files("baz"))["baz-2.0.tar.gz"]
        assert sdist.size is not None
        with pytest.raises(HashMismatchError, match="bytes"):
            c.fetch(sdist.url, size=sdist.size + 1)


def test_fetch_file_url_checks_hash(make_index: MakeIndex) -> None:
    index = make_index(RELEASES)
    with client(index.file_url) as c:
        sdist = by_name(c.project_files("baz"))["baz-2.0.tar.gz"]
        assert (
            c.fetch(sdist.url, sha256=sdist.sha256)
            == (index.files_dir / "baz-2.0.tar.gz").read_bytes()
        )
        index.replace_file("baz-2.0.tar.gz", b"tampered")
        with pytest.raises(HashMismatchError, match=r"baz-2\.0\.tar\.gz"):
            c.fetch(sdist.url, sha256=sdist.sha256)


def test_project_page_server_error_names_url(make_index: MakeIndex, serve: Serve) -> None:
    server = serve(make_index(RELEASES))
    server.add_fault(r"^/simple/baz/$", "status", status=503, times=100)
    with client(server.url, retries=1) as c, pytest.raises(IndexClientError) as caught:
        c.project_files("baz")
    assert server.url + "baz/" in str(caught.value)


# ----------------------------------------------------------------- pure parsing of odd pages


PAGE = "https://index.example/simple/demo/"
BASE = "https://index.example/simple/"


def test_parse_html_attributes_and_skips() -> None:
    html = b"""<!DOCTYPE html><html><body>
    <a href="../../f/demo-1.0.tar.gz#sha256=ABCDEF" data-requires-python="&gt;=3.8,&lt;4"
       data-yanked>demo-1.0.tar.gz</a>
    <a href="https://cdn.example/demo-1.0-py3-none-any.whl#md5=123"
       data-dist-info-metadata="true">demo-1.0-py3-none-any.whl</a>
    <a href="demo-1.1.zip" data-core-metadata="sha256=FEED" data-yanked="bad">demo-1.1.zip</a>
    <a href="demo-0.9-py2.7.egg">demo-0.9-py2.7.egg</a>
    <a href="demo-0.8.win32.exe">demo-0.8.win32.exe</a>
    <a href="../../f/demo-0.7.tar.gz" data-requires-python="not a specifier">download</a>
    <a>no href</a>
    </body></html>"""
    files = {f.filename: f for f in parse_html_page(html, PAGE, BASE)}
    assert set(files) == {
        "demo-1.0.tar.gz",
        "demo-1.0-py3-none-any.whl",
        "demo-1.1.zip",
        "demo-0.7.tar.gz",
    }
    sdist = files["demo-1.0.tar.gz"]
    assert sdist.url == "https://index.example/f/demo-1.0.tar.gz"
    assert sdist.sha256 == "abcdef"
    assert sdist.requires_python == SpecifierSet(">=3.8,<4")
    assert sdist.yanked == ""
    assert sdist.core_metadata is False
    assert sdist.index_url == BASE
    wheel = files["demo-1.0-py3-none-any.whl"]
    assert wheel.sha256 is None
    assert wheel.core_metadata is True
    assert wheel.yanked is None
    assert wheel.url == "https://cdn.example/demo-1.0-py3-none-any.whl"
    zipped = files["demo-1.1.zip"]
    assert zipped.kind == "sdist"
    assert zipped.url == PAGE + "demo-1.1.zip"
    assert zipped.core_metadata == "feed"
    assert zipped.yanked == "bad"
    # Link text that is not a file name: the URL's last segment names the file.
    assert files["demo-0.7.tar.gz"].requires_python is None


def test_parse_html_base_href() -> None:
    html = b'<html><head><base href="https://mirror.example/pkgs/"></head>' + (
        b'<a href="demo-1.0.tar.gz">demo-1.0.tar.gz</a></html>'
    )
    (dist,) = parse_html_page(html, PAGE, BASE)
    assert dist.url == "https://mirror.example/pkgs/demo-1.0.tar.gz"


def test_parse_json_fields() -> None:
    page = {
        "meta": {"api-version": "1.1"},
        "name": "demo",
        "files": [
            {
                "filename": "demo-1.0.tar.gz",
                "url": "../../f/demo-1.0.tar.gz",
                "hashes": {"sha256": "AB12"},
                "requires-python": ">=3.9",
                "yanked": True,
                "size": 10,
                "upload-time": "2024-01-02T03:04:05.123456Z",
            },
            {
                "filename": "demo-1.0-py3-none-any.whl",
                "url": "https://cdn.example/demo-1.0-py3-none-any.whl",
                "hashes": {},
                "dist-info-metadata": {"sha256": "CD34"},
                "yanked": False,
                "upload-time": "2024-01-02T03:04:05",
            },
            {
                "filename": "demo-1.1-py3-none-any.whl",
                "url": "demo-1.1-py3-none-any.whl",
                "hashes": {"md5": "00"},
                "core-metadata": {"md5": "00"},
                "requires-python": "garbage",
            },
            {"filename": "demo-1.0.exe", "url": "demo-1.0.exe", "hashes": {}},
            {"filename": "Demo-latest.tar.gz", "url": "x", "hashes": {}},
        ],
    }
    files = {f.filename: f for f in parse_json_page(json.dumps(page).encode(), PAGE, BASE)}
    assert set(files) == {
        "demo-1.0.tar.gz",
        "demo-1.0-py3-none-any.whl",
        "demo-1.1-py3-none-any.whl",
    }
    sdist = files["demo-1.0.tar.gz"]
    assert sdist.url == "https://index.example/f/demo-1.0.tar.gz"
    assert sdist.sha256 == "ab12"
    assert sdist.yanked == ""
    assert sdist.size == 10
    assert sdist.upload_time == datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    wheel = files["demo-1.0-py3-none-any.whl"]
    assert wheel.core_metadata == "cd34"
    assert wheel.sha256 is None
    assert wheel.yanked is None
    assert wheel.upload_time == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    newer = files["demo-1.1-py3-none-any.whl"]
    assert newer.core_metadata is True
    assert newer.requires_python is None
    assert newer.url == PAGE + "demo-1.1-py3-none-any.whl"


def test_parse_json_fields_of_the_wrong_type_count_as_absent() -> None:
    # Fields are checked only when the resolver reads a version; a server's odd value
    # must still not hide the file, nor reach the lock as a wrong-typed value.
    page = {
        "meta": {"api-version": "1.1"},
        "files": [
            {
                "filename": "demo-1.0.tar.gz",
                "url": "../../f/demo-1.0.tar.gz#sha256=EF56",
                "hashes": ["not", "a", "dict"],
                "requires-python": 3,
                "yanked": 1,
                "size": "10",
                "upload-time": 12345,
                "core-metadata": "yes",
            },
            {"filename": "demo-1.0-py3-none-any.whl", "url": None},
            "not an entry",
        ],
    }
    (sdist,) = parse_json_page(json.dumps(page).encode(), PAGE, BASE)
    assert sdist.url == "https://index.example/f/demo-1.0.tar.gz"
    assert sdist.sha256 == "ef56"  # from the URL fragment, the hashes being unreadable
    assert sdist.requires_python is None
    assert sdist.yanked is None
    assert sdist.size is None
    assert sdist.upload_time is None
    assert sdist.core_metadata is False


def test_parse_json_rejects_other_major_version_and_garbage() -> None:
    with pytest.raises(IndexClientError, match=r"version 2\.0"):
        parse_json_page(b'{"meta": {"api-version": "2.0"}, "files": []}', PAGE, BASE)
    with pytest.raises(IndexClientError, match=re.escape(PAGE)):
        parse_json_page(b"<html>", PAGE, BASE)
    with pytest.raises(IndexClientError, match="files"):
        parse_json_page(b'{"meta": {"api-version": "1.0"}}', PAGE, BASE)


def test_page_listing_another_project_is_filtered(make_index: MakeIndex) -> None:
    index = make_index([Release("demo", "1.0"), Release("other", "1.0")])
    # An index page that also lists another project's file: only demo's files count.
    page = index.simple_dir / "demo" / "index.json"
    doc = json.loads(page.read_text())
    doc["files"].append(
        {"filename": "other-1.0.tar.gz", "url": "../../files/other-1.0.tar.gz", "hashes": {}}
    )
    page.write_text(json.dumps(doc))
    with client(index.file_url) as c:
        assert {f.name for f in c.project_files("demo")} == {"demo"}


def test_the_client_writes_index_urls_by_the_one_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative path or a file: URL given to the client becomes the URL the project's
    configuration would make of it: the same directory, by the same rule (not the target
    of a symlink, which the lock would then record in place of the path the user wrote)."""
    from monorepo.project.indexurl import normalize_index_url, resolve_index_url

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    with client("link", "file:link/../real", "https://example.invalid/simple") as c:
        assert c.index_urls == (
            resolve_index_url(None, flag="link")[0],
            normalize_index_url("file:link/../real", base=tmp_path, where="test"),
            "https://example.invalid/simple/",
        )
    assert c.index_urls[0] == (tmp_path / "link").as_uri() + "/"
