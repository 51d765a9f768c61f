"""The fixture toolkit itself: other tests trust these artifacts, so they are checked here."""

from __future__ import annotations

import base64
import email.parser
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pygit2
import pytest
from packaging.dependency_groups import resolve_dependency_groups
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pyproject_hooks import BuildBackendHookCaller, default_subprocess_runner

from fixtures.builder import (
    FixtureIndex,
    Release,
    build_index,
    build_sdist,
    build_wheel,
    load_releases,
    sdist_filename,
)
from fixtures.example import (
    DEFAULT_DEST,
    EXAMPLE_PROJECT,
    build_example_index,
    example_releases,
    main,
)
from fixtures.gitrepo import make_git_package
from fixtures.server import IndexServer, negotiate

JSON = "application/vnd.pypi.simple.v1+json"
HTML = "application/vnd.pypi.simple.v1+html"

RICH = Release(
    "Demo.Pkg",
    "1.2.0",
    requires_dist=(
        "dep-a>=1",
        'dep-b; extra == "fast"',
        'dep-c; python_version < "3.12" and extra == "fast"',
    ),
    requires_python=">=3.9,<4",
    files={"demo_pkg/util.py": "X = 1\n", "README.md": "demo\n"},
    build_requires=("helper>=1",),
)


def _metadata(text: str) -> email.message.Message:
    return email.parser.HeaderParser().parsestr(text)


def _files(tmp: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(tmp.iterdir())}


def test_builds_are_byte_identical(tmp_path: Path) -> None:
    releases = [RICH, Release("other", "0.1", wheels=("py3-none-any", "cp311-cp311-linux_x86_64"))]
    a = build_index(releases, tmp_path / "a")
    b = build_index(releases, tmp_path / "b")
    assert _files(a.files_dir) == _files(b.files_dir)
    assert len(_files(a.files_dir)) == 8  # 2 sdists, 3 wheels, 3 PEP 658 metadata files
    for project in ("demo-pkg", "other"):
        for page in ("index.html", "index.json"):
            assert (a.simple_dir / project / page).read_bytes() == (
                b.simple_dir / project / page
            ).read_bytes()


def test_builds_are_identical_across_processes(tmp_path: Path) -> None:
    # Hash randomisation and import order differ between interpreters; output must not.
    code = (
        "import sys; from pathlib import Path; from fixtures.builder import *;"
        "build_sdist(Release(sys.argv[1], '1.0', files={'x/y.py': 'z'}), Path(sys.argv[2]))"
    )
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code, "pkg", str(tmp_path / "sub")], cwd=root, check=True)
    local = build_sdist(Release("pkg", "1.0", files={"x/y.py": "z"}), tmp_path / "local")
    assert (tmp_path / "sub" / local.name).read_bytes() == local.read_bytes()


def test_sdist_layout_and_tar_normalisation(tmp_path: Path) -> None:
    path = build_sdist(RICH, tmp_path)
    assert path.name == "demo_pkg-1.2.0.tar.gz" == sdist_filename(RICH)
    assert path.read_bytes()[4:8] == b"\0\0\0\0"  # gzip header mtime
    with tarfile.open(path) as tf:
        members = tf.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert all(n == "demo_pkg-1.2.0" or n.startswith("demo_pkg-1.2.0/") for n in names)
        for m in members:
            assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 1704067200)
            assert m.mode == (0o755 if m.isdir() else 0o644)
        pkg_info = tf.extractfile("demo_pkg-1.2.0/PKG-INFO")
        pyproject = tf.extractfile("demo_pkg-1.2.0/pyproject.toml")
        assert pkg_info is not None and pyproject is not None
        meta = _metadata(pkg_info.read().decode())
        data = tomllib.loads(pyproject.read().decode())
        assert "demo_pkg-1.2.0/demo_pkg/util.py" in names
        assert "demo_pkg-1.2.0/README.md" in names
    assert meta["Metadata-Version"] == "2.2"
    assert meta["Requires-Python"] == ">=3.9,<4"
    assert sorted(meta.get_all("Provides-Extra") or []) == ["fast"]
    reqs = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    assert {r.name for r in reqs} == {"dep-a", "dep-b", "dep-c"}
    fast_c = next(r for r in reqs if r.name == "dep-c")
    assert fast_c.marker is not None
    assert fast_c.marker.evaluate({"extra": "fast", "python_version": "3.11"})
    assert not fast_c.marker.evaluate({"extra": "", "python_version": "3.11"})
    assert data["build-system"] == {
        "requires": ["helper>=1"],
        "build-backend": "fixture_backend",
        "backend-path": ["_fixture_backend"],
    }
    assert data["project"]["dependencies"] == ["dep-a>=1"]


def test_dynamic_and_missing_pkg_info(tmp_path: Path) -> None:
    dyn = Release("dyn", "1.0", requires_dist=("x>=2",), dynamic=("Requires-Dist",))
    with tarfile.open(build_sdist(dyn, tmp_path)) as tf:
        member = tf.extractfile("dyn-1.0/PKG-INFO")
        assert member is not None
        meta = _metadata(member.read().decode())
    assert meta.get_all("Dynamic") == ["Requires-Dist"]
    assert meta.get_all("Requires-Dist") is None
    bare = Release("bare", "1.0", pkg_info=False)
    with tarfile.open(build_sdist(bare, tmp_path)) as tf:
        assert "bare-1.0/PKG-INFO" not in tf.getnames()


def test_custom_backend_has_no_backend_path(tmp_path: Path) -> None:
    rel = Release(
        "st", "1.0", build_backend="setuptools.build_meta", build_requires=("setuptools",)
    )
    with tarfile.open(build_sdist(rel, tmp_path)) as tf:
        member = tf.extractfile("st-1.0/pyproject.toml")
        assert member is not None
        data = tomllib.loads(member.read().decode())
        assert not any("_fixture_backend" in n for n in tf.getnames())
    assert data["build-system"] == {
        "requires": ["setuptools"],
        "build-backend": "setuptools.build_meta",
    }


def test_wheel_is_valid_with_hashed_record(tmp_path: Path) -> None:
    path = build_wheel(RICH, "py3-none-any", tmp_path)
    assert path.name == "demo_pkg-1.2.0-py3-none-any.whl"
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert "demo_pkg/__init__.py" in names and "demo_pkg/util.py" in names
        assert "README.md" not in names
        assert all(i.date_time == (2024, 1, 1, 0, 0, 0) for i in zf.infolist())
        record = zf.read("demo_pkg-1.2.0.dist-info/RECORD").decode().splitlines()
        wheel_meta = zf.read("demo_pkg-1.2.0.dist-info/WHEEL").decode()
        for line in record:
            name, digest, size = line.rsplit(",", 2)
            if name.endswith("RECORD"):
                assert (digest, size) == ("", "")
                continue
            data = zf.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert digest == "sha256=" + expected.decode()
            assert int(size) == len(data)
        assert sorted(line.split(",")[0] for line in record) == sorted(names)
    assert "Tag: py3-none-any" in wheel_meta
    assert "Root-Is-Purelib: true" in wheel_meta


def test_sdist_builds_through_pyproject_hooks(tmp_path: Path) -> None:
    sdist = build_sdist(RICH, tmp_path / "dist")
    with tarfile.open(sdist) as tf:
        tf.extractall(tmp_path / "src", filter="data")
    src = tmp_path / "src" / "demo_pkg-1.2.0"
    hooks = BuildBackendHookCaller(str(src), "fixture_backend", backend_path=["_fixture_backend"])
    assert hooks.get_requires_for_build_wheel() == []
    meta_dir = tmp_path / "meta"
    meta_dir.mkdir()
    info = hooks.prepare_metadata_for_build_wheel(str(meta_dir))
    metadata = (meta_dir / info / "METADATA").read_text()
    assert _metadata(metadata)["Name"] == "Demo.Pkg"
    out = tmp_path / "out"
    out.mkdir()
    wheel_name = hooks.build_wheel(str(out))
    built = (out / wheel_name).read_bytes()
    # The backend and the builder share one implementation: same bytes as published.
    assert built == build_wheel(RICH, "py3-none-any", tmp_path / "ref").read_bytes()
    with zipfile.ZipFile(io.BytesIO(built)) as zf:
        assert zf.read(f"{info}/METADATA").decode() == metadata
    sdist_name = hooks.build_sdist(str(out))
    with tarfile.open(out / sdist_name) as tf:
        assert "demo_pkg-1.2.0/demo_pkg/util.py" in tf.getnames()


def test_index_pages_html_and_json(tmp_path: Path) -> None:
    old = Release("demo", "1.0", upload_time="2023-05-01T12:00:00Z")
    new = Release(
        "demo", "2.0", requires_python=">=3.10", yanked="broken <build>", core_metadata_file=False
    )
    index = build_index([new, old], tmp_path / "idx")
    assert index.file_url.startswith("file://") and index.file_url.endswith("/simple/")
    page = (index.simple_dir / "demo" / "index.html").read_text()
    anchors = re.findall(r"<a ([^>]*)>", page)
    assert len(anchors) == 4
    assert all('href="../../files/' in a and "#sha256=" in a for a in anchors)
    assert 'data-requires-python="&gt;=3.10"' in page
    assert 'data-yanked="broken &lt;build&gt;"' in page
    assert page.count("data-core-metadata=") == 1 == page.count("data-dist-info-metadata=")
    doc = json.loads((index.simple_dir / "demo" / "index.json").read_text())
    assert doc["meta"] == {"api-version": "1.1"}
    assert doc["name"] == "demo" and doc["versions"] == ["1.0", "2.0"]
    by_name = {f["filename"]: f for f in doc["files"]}
    whl = by_name["demo-1.0-py3-none-any.whl"]
    assert whl["url"] == "../../files/demo-1.0-py3-none-any.whl"
    assert whl["upload-time"] == "2023-05-01T12:00:00Z"
    assert whl["yanked"] is False
    meta_bytes = (index.files_dir / "demo-1.0-py3-none-any.whl.metadata").read_bytes()
    assert whl["core-metadata"] == {"sha256": hashlib.sha256(meta_bytes).hexdigest()}
    assert whl["dist-info-metadata"] == whl["core-metadata"]
    with zipfile.ZipFile(index.files_dir / "demo-1.0-py3-none-any.whl") as zf:
        assert zf.read("demo-1.0.dist-info/METADATA") == meta_bytes
    for name, entry in by_name.items():
        data = (index.files_dir / name).read_bytes()
        assert entry["hashes"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["size"] == len(data)
    assert by_name["demo-2.0.tar.gz"]["yanked"] == "broken <build>"
    assert by_name["demo-2.0-py3-none-any.whl"]["core-metadata"] is False
    assert not (index.files_dir / "demo-2.0-py3-none-any.whl.metadata").exists()
    assert '<a href="demo/">demo</a>' in (index.simple_dir / "index.html").read_text()


def test_publish_and_replace_file(make_index: Callable[..., FixtureIndex]) -> None:
    index = make_index([Release("pkg", "1.0")])
    index.publish(Release("pkg", "1.1"), Release("newcomer", "0.1"))
    doc = json.loads((index.simple_dir / "pkg" / "index.json").read_text())
    assert doc["versions"] == ["1.0", "1.1"]
    assert "newcomer" in (index.simple_dir / "index.html").read_text()
    before = (index.simple_dir / "pkg" / "index.json").read_bytes()
    index.replace_file("pkg-1.0.tar.gz", b"tampered")
    assert (index.files_dir / "pkg-1.0.tar.gz").read_bytes() == b"tampered"
    assert (index.simple_dir / "pkg" / "index.json").read_bytes() == before
    with pytest.raises(FileNotFoundError):
        index.replace_file("nope-1.0.tar.gz", b"")


def test_load_releases(tmp_path: Path) -> None:
    toml = tmp_path / "r.toml"
    toml.write_text(
        '[[release]]\nname = "a"\nversion = "1.0"\nrequires-dist = ["b>=1"]\n'
        'yanked = true\nwheels = []\nupload-time = "2024-02-02T00:00:00Z"\n'
        '[release.files]\n"a/extra.py" = "Y = 2\\n"\n'
        '[[release]]\nname = "b"\nversion = "2.0"\nbuild-requires = ["a"]\n'
    )
    a, b = load_releases(toml)
    assert a == Release(
        "a",
        "1.0",
        requires_dist=("b>=1",),
        yanked="",
        wheels=(),
        upload_time="2024-02-02T00:00:00Z",
        files={"a/extra.py": "Y = 2\n"},
    )
    assert b.build_requires == ("a",)
    assert hash(a) != hash(b)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[release]]\nname = "a"\nversion = "1"\nrequires = []\n')
    with pytest.raises(ValueError, match="requires"):
        load_releases(bad)


# --- server -------------------------------------------------------------------------


@pytest.fixture
def served(
    make_index: Callable[..., FixtureIndex], serve: Callable[..., IndexServer]
) -> IndexServer:
    return serve(make_index([Release("demo", "1.0"), Release("demo", "1.1")]))


def test_negotiation(served: IndexServer) -> None:
    with httpx.Client() as client:
        r = client.get(served.url + "demo/", headers={"Accept": JSON})
        assert r.headers["content-type"] == JSON
        assert r.json()["name"] == "demo"
        pip_accept = f"{JSON}, {HTML}; q=0.1, text/html; q=0.01"
        assert client.get(served.url + "demo", headers={"Accept": pip_accept}).json()
        r = client.get(served.url + "demo/", headers={"Accept": f"{JSON};q=0.2, {HTML}"})
        assert r.headers["content-type"] == HTML and "<a href" in r.text
        r = client.get(served.url + "demo/", headers={"Accept": "text/html"})
        assert r.headers["content-type"] == "text/html"
        r = client.get(served.url, headers={"Accept": JSON})
        assert r.json()["projects"] == [{"name": "demo"}]
        assert client.get(served.url + "missing/").status_code == 404
        assert client.get(served.url + "demo/", headers={"Accept": "image/png"}).status_code == 406
        r = client.get(served.url + "Demo/")
        assert (r.status_code, r.headers["location"]) == (301, "/simple/demo/")
    assert negotiate(JSON, ("html",)) is None
    assert negotiate("*/*", ("json", "html")) == ("json", JSON)


def test_html_only_server_and_relative_urls(
    make_index: Callable[..., FixtureIndex], serve: Callable[..., IndexServer]
) -> None:
    index = make_index([Release("demo", "1.0", wheels=())])
    server = serve(index, formats=("html",))
    with httpx.Client() as client:
        r = client.get(server.url + "demo/", headers={"Accept": f"{JSON}, text/html;q=0.5"})
        assert r.headers["content-type"] == "text/html"
        href = re.search(r'href="([^"]+)"', r.text)
        assert href is not None
        url = r.url.join(href.group(1))
        assert url.path == "/files/demo-1.0.tar.gz"
        file = client.get(url)
        assert file.headers["content-type"] == "application/octet-stream"
        assert int(file.headers["content-length"]) == len(file.content)
        assert hashlib.sha256(file.content).hexdigest() == url.fragment.split("=")[1]


def test_etag_and_304(served: IndexServer) -> None:
    with httpx.Client() as client:
        first = client.get(served.url + "demo/", headers={"Accept": JSON})
        etag = first.headers["etag"]
        assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
        assert first.headers["cache-control"] == "max-age=0, must-revalidate"
        again = client.get(served.url + "demo/", headers={"Accept": JSON, "If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
        other = client.get(
            served.url + "demo/", headers={"Accept": "text/html", "If-None-Match": etag}
        )
        assert other.status_code == 200  # a different representation, a different ETag
    assert [r.status for r in served.requests] == [200, 304, 200]
    assert served.requests[1].headers["if-none-match"] == etag


def test_fault_status_and_slow(served: IndexServer) -> None:
    served.add_fault(r"/demo/", "status", times=2, status=502)
    with httpx.Client() as client:
        codes = [client.get(served.url + "demo/").status_code for _ in range(3)]
        assert codes == [502, 502, 200]
        served.add_fault(r"\.tar\.gz$", "slow", delay=0.5)
        with pytest.raises(httpx.ReadTimeout):
            client.get(served.base_url + "/files/demo-1.0.tar.gz", timeout=0.1)
        assert client.get(served.base_url + "/files/demo-1.0.tar.gz").status_code == 200


def test_fault_reset_truncate_corrupt(served: IndexServer) -> None:
    url = served.base_url + "/files/demo-1.0.tar.gz"
    good = httpx.get(url).content
    served.add_fault(r"demo-1\.0\.tar", "reset")
    with pytest.raises(httpx.ReadError):
        httpx.get(url)
    served.add_fault(r"demo-1\.0\.tar", "truncate")
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url)
    served.add_fault(r"demo-1\.0\.tar", "corrupt")
    bad = httpx.get(url)
    assert bad.status_code == 200 and len(bad.content) == len(good) and bad.content != good
    assert httpx.get(url).content == good
    served.add_fault(r"demo", "status", times=5)
    served.clear_faults()
    assert httpx.get(url).status_code == 200
    assert [r.status for r in served.requests_for(r"demo-1\.0\.tar")] == [
        200,
        None,
        200,
        200,
        200,
        200,
    ]


@pytest.mark.parametrize("formats", [("json", "html"), ("html",)])
def test_real_installer_accepts_the_index(
    tmp_path: Path, serve: Callable[..., IndexServer], formats: tuple[str, ...]
) -> None:
    # The venv's pip, as an independent client: negotiation, PEP 658, yanked, hashes.
    server = serve(build_example_index(tmp_path / "idx"), formats=formats)
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check"]
    cmd += ["--no-cache-dir", "--only-binary", ":all:", "--index-url", server.url]
    cmd += ["-d", str(tmp_path / "dl"), "pebble-text[color]", "pebble-lint"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == [
        "pebble_color-0.4.0-py3-none-any.whl",
        "pebble_core-1.0.0-py3-none-any.whl",
        "pebble_lint-0.9.0-py3-none-any.whl",  # 0.9.1 is yanked
        "pebble_text-2.0.0-py3-none-any.whl",
    ]
    assert server.requests_for(r"\.whl\.metadata$")
    pages = server.requests_for(r"^/simple/")
    assert pages and all(r.status == 200 for r in pages)


def test_server_stops(make_index: Callable[..., FixtureIndex]) -> None:
    index = make_index([Release("demo", "1.0")])
    with IndexServer(index.root) as server:
        url = server.url
        assert httpx.get(url).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)


# --- git ----------------------------------------------------------------------------


def test_git_package_deterministic(tmp_path: Path) -> None:
    v1 = Release("gitpkg", "1.0", files={"gitpkg/a.py": "A = 1\n"})
    v2 = Release("gitpkg", "2.0", upload_time="2024-03-01T00:00:00Z")
    first = make_git_package(tmp_path / "one", v1, tag="v1.0")
    assert make_git_package(tmp_path / "two", v1, tag="v1.0") == first
    second = make_git_package(tmp_path / "one", v2, tag="v2.0", annotated=True)
    assert second != first
    repo = pygit2.Repository(str(tmp_path / "one"))
    head = repo.head
    assert head.shorthand == "main"
    commit = repo.get(head.target)
    assert isinstance(commit, pygit2.Commit)
    assert [str(p) for p in commit.parent_ids] == [first]
    assert "gitpkg/a.py" not in [e.name for e in commit.tree["gitpkg"]]  # removed in 2.0
    assert str(repo.revparse_single("v1.0").id) == first
    assert str(repo.revparse_single("v2.0").peel(pygit2.Commit).id) == second
    assert (tmp_path / "one" / "_fixture_backend" / "fixture_backend.py").is_file()
    assert not (tmp_path / "one" / "PKG-INFO").exists()
    assert repo.status() == {}


# --- the bundled example ------------------------------------------------------------


def test_example_index_builds_idempotently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "build" / "example-index"
    assert main([str(dest)]) == 0
    assert capsys.readouterr().out.strip() == str(dest.resolve())
    first = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    (dest / "files" / "stale-0.1.tar.gz").write_bytes(b"left over")
    index = build_example_index(dest)
    second = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert first == second
    assert index.root == dest.resolve()
    assert [p.name for p in dest.parent.iterdir()] == ["example-index"]  # no staging left
    assert len(index.releases) == len(example_releases()) >= 8
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main([str(other)]) == 1
    assert (other / "notes.txt").read_text() == "keep me"


def test_example_project_matches_example_index() -> None:
    data = tomllib.loads((EXAMPLE_PROJECT / "pyproject.toml").read_text())
    index_url = data["tool"]["monorepo"]["index-url"]
    assert not re.match(r"^[a-z]+://", index_url)  # relative, resolved against the project
    assert (EXAMPLE_PROJECT / index_url).resolve() == (DEFAULT_DEST / "simple").resolve()
    releases = example_releases()
    names = {r.project for r in releases}
    requirements = list(data["project"]["dependencies"])
    for reqs in data["project"]["optional-dependencies"].values():
        requirements += reqs
    groups = data["dependency-groups"]
    dev = resolve_dependency_groups(groups, "dev")
    assert set(resolve_dependency_groups(groups, "lint")) < set(dev)
    requirements += dev
    for release in releases:
        requirements += release.requires_dist
        requirements += release.build_requires
    assert {canonicalize_name(Requirement(r).name) for r in requirements} <= names
    built_with_helper = [r for r in releases if r.build_requires]
    assert built_with_helper and all(r.sdist and not r.wheels for r in built_with_helper)
    assert any(r.yanked for r in releases)
    assert any(Requirement(r).marker for rel in releases for r in rel.requires_dist)
    assert any(rel.all_extras for rel in releases)


def test_example_build_requirement_is_really_needed(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    releases = {(r.project, r.version): r for r in example_releases()}
    core = releases[("pebble-core", "1.1.0")]
    helper = releases[("pebble-buildhelper", "1.0.0")]
    with tarfile.open(build_sdist(core, tmp_path / "dist")) as tf:
        tf.extractall(tmp_path / "src", filter="data")
    src = tmp_path / "src" / "pebble_core-1.1.0"
    with zipfile.ZipFile(build_wheel(helper, "py3-none-any", tmp_path / "dist")) as zf:
        zf.extractall(tmp_path / "site")
    out = tmp_path / "out"
    out.mkdir()

    def runner_with(path: str) -> Callable[..., None]:
        def run(
            cmd: list[str], cwd: str | None = None, extra_environ: dict[str, str] | None = None
        ) -> None:
            env = dict(extra_environ or {}, PYTHONPATH=path)
            default_subprocess_runner(cmd, cwd, env)

        return run

    bare = BuildBackendHookCaller(
        str(src), "fixture_backend", backend_path=["_fixture_backend"], runner=runner_with("")
    )
    with pytest.raises(subprocess.CalledProcessError):
        bare.build_wheel(str(out))
    assert "No module named 'pebble_buildhelper'" in capfd.readouterr().err
    assert list(out.iterdir()) == []
    ready = BuildBackendHookCaller(
        str(src),
        "fixture_backend",
        backend_path=["_fixture_backend"],
        runner=runner_with(str(tmp_path / "site")),
    )
    assert ready.build_wheel(str(out)) == "pebble_core-1.1.0-py3-none-any.whl"


# --- conftest ------------------------------------------------------------------------


def test_environment_is_isolated(tmp_path: Path) -> None:
    cache = Path(os.environ["MONOREPO_CACHE_DIR"])
    assert cache.is_dir() and not cache.is_relative_to(Path.home() / ".cache")
    for name in ("MONOREPO_INDEX_URL", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"):
        assert name not in os.environ
    assert os.environ["PIP_CONFIG_FILE"] == os.devnull


def test_make_project_and_make_index(
    make_project: Callable[..., Path], make_index: Callable[..., FixtureIndex]
) -> None:
    project = make_project('[project]\nname = "p"\nversion = "0"\n', name="here")
    assert tomllib.loads((project / "pyproject.toml").read_text())["project"]["name"] == "p"
    first, second = make_index([Release("a", "1")]), make_index([Release("b", "1")])
    assert first.root != second.root and first.projects() == ["a"] and second.projects() == ["b"]


@pytest.mark.parametrize(("index_set", "outcome"), [(False, "1 skipped"), (True, "1 failed")])
def test_network_marker_needs_an_index(tmp_path: Path, index_set: bool, outcome: str) -> None:
    root = Path(__file__).resolve().parent.parent
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n"
    )
    (tmp_path / "test_net.py").write_text(
        "import pytest\n\n@pytest.mark.network\ndef test_reaches_out():\n    assert False\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "MONOREPO_TEST_INDEX_URL"}
    environ["PYTHONPATH"] = str(root)
    if index_set:
        environ["MONOREPO_TEST_INDEX_URL"] = "http://127.0.0.1:9/simple/"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "network",
            "-W",
            "ignore::pytest.PytestUnknownMarkWarning",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert outcome in result.stdout, result.stdout + result.stderr
