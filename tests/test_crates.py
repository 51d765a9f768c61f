"""Rust extensions: Cargo.lock crates locked, vendored into duni/.crates, built offline.

The crate registry is the fixture server (over loopback) with real ``.crate`` files
made by ``fixtures.crates``; the extension is a real sdist whose in-tree backend runs
cargo like setuptools-rust does.  Builds use Rust from PATH (``~/.cargo/bin`` or
Debian's cargo and rustc) and skip without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import monorepo
from fixtures import realdists
from fixtures.builder import FixtureIndex
from fixtures.crates import (
    CRATE_SOURCE,
    CRATES,
    PEBBLE_ANSWER,
    PEBBLE_TWO,
    FixtureCrate,
    cargo_lock,
    crate_bytes,
    crate_checksum,
    default_registry_source,
    on_registry,
    publish_crates,
    rust_extension,
    setuptools_rust_extension,
    write_registry_config,
)
from fixtures.server import IndexServer
from monorepo.building.builder import build
from monorepo.building.cargo import (
    cargo_config,
    explain_cargo_failure,
    is_default_registry,
    missing_standard_library,
)
from monorepo.building.elfcheck import EM_AARCH64, EM_X86_64, read_elf_header
from monorepo.errors import ConfigError, HashMismatchError, MonorepoError, PullError
from monorepo.project.config import parse_config
from monorepo.project.targets import host_target
from monorepo.sources.crates import (
    CHECKSUM_FILE,
    Crate,
    CrateError,
    cargo_lock_paths,
    crate_url,
    parse_cargo_lock,
)

HOST = host_target()
TARGET = (
    f'{{ name = "native", python = "{HOST.python}", platform = "{HOST.platform}",'
    f' machine = "{HOST.machine}" }}'
)
HAS_RUST = shutil.which("cargo") is not None and shutil.which("rustc") is not None
needs_rust = pytest.mark.skipif(not HAS_RUST, reason="needs cargo and rustc on PATH")
needs_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux builds")

SUM = "a" * 64


# ------------------------------------------------------------------ Cargo.lock


def test_parse_cargo_lock_keeps_registry_crates_sorted() -> None:
    text = cargo_lock("ext", "1.0.0", list(CRATES))
    crates = parse_cargo_lock(text, where="ext: Cargo.lock")
    assert [(c.name, c.version, c.source) for c in crates] == [
        ("pebble-answer", "0.1.0", CRATE_SOURCE),
        ("pebble-two", "0.1.0", CRATE_SOURCE),
    ]
    assert crates[0].checksum == crate_checksum(PEBBLE_ANSWER)


def test_parse_cargo_lock_format_1_reads_metadata_checksums() -> None:
    text = (
        '[[package]]\nname = "a"\nversion = "1.0.0"\nsource = "registry+https://r.example/i"\n\n'
        '[[package]]\nname = "me"\nversion = "0.1.0"\ndependencies = ["a"]\n\n'
        f'[metadata]\n"checksum a 1.0.0 (registry+https://r.example/i)" = "{SUM}"\n'
    )
    (crate,) = parse_cargo_lock(text, where="x")
    assert crate == Crate("a", "1.0.0", "registry+https://r.example/i", SUM)


def test_parse_cargo_lock_refuses_git_crates_naming_them() -> None:
    text = (
        '[[package]]\nname = "gitty"\nversion = "0.3.0"\nsource = "git+https://g.example/x#abc"\n'
    )
    with pytest.raises(
        CrateError, match=r"pkg 1\.0: Cargo\.lock: crate gitty 0\.3\.0 comes from git"
    ):
        parse_cargo_lock(text, where="pkg 1.0: Cargo.lock")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[package]]\nname = "a"\nversion = "1"\nsource = "registry+x"\n', "no checksum"),
        (
            f'[[package]]\nname = "../a"\nversion = "1"\nsource = "registry+x"\nchecksum = "{SUM}"\n',
            "not a valid crate name",
        ),
        (
            '[[package]]\nname = "a"\nversion = "1"\nsource = "registry+x"\nchecksum = "zz"\n',
            "not a sha256",
        ),
        ("package = 3\n", "not a Cargo.lock"),
        ("[[package]\n", "not valid TOML"),
    ],
)
def test_parse_cargo_lock_refuses_hostile_input(text: str, message: str) -> None:
    with pytest.raises(CrateError, match=message):
        parse_cargo_lock(text, where="x")


def test_cargo_lock_paths_follow_maturin_and_setuptools_rust(tmp_path: Path) -> None:
    (tmp_path / "rust" / "inner").mkdir(parents=True)
    (tmp_path / "rust" / "Cargo.lock").write_text("")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.maturin]\nmanifest-path = "rust/inner/Cargo.toml"\n'
        '[tool.setuptools-rust]\next-modules = [{ path = "../../etc/Cargo.toml" }]\n'
    )
    assert cargo_lock_paths(tmp_path) == ["rust/Cargo.lock"]
    (tmp_path / "Cargo.lock").write_text("")
    assert cargo_lock_paths(tmp_path) == ["Cargo.lock", "rust/Cargo.lock"]
    other = tmp_path / "other"
    (other / "ext").mkdir(parents=True)
    (other / "ext" / "Cargo.lock").write_text("")
    (other / "setup.py").write_text('RustExtension("x._x", path="ext/Cargo.toml")\n')
    assert cargo_lock_paths(other) == ["ext/Cargo.lock"]


def test_crate_url_follows_cargos_dl_conventions() -> None:
    crate = Crate("Serde", "1.0.0", "registry+x", SUM)
    assert crate_url("https://dl.example/c/", crate) == "https://dl.example/c/Serde/1.0.0/download"
    assert (
        crate_url("https://dl.example/{lowerprefix}/{crate}-{version}.crate", crate)
        == "https://dl.example/se/rd/Serde-1.0.0.crate"
    )
    short = Crate("cc", "1.0.0", "registry+x", SUM)
    assert crate_url("https://d.example/{prefix}/{crate}?h={sha256-checksum}", short) == (
        f"https://d.example/2/cc?h={SUM}"
    )


def test_crate_index_setting_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="crate-index"):
        parse_config(
            {"tool": {"monorepo": {"crate-index": "crates.example"}}},
            pyproject=tmp_path / "pyproject.toml",
        )
    config = parse_config(
        {"tool": {"monorepo": {"crate-index": "sparse+https://crates.example/index/"}}},
        pyproject=tmp_path / "pyproject.toml",
    )
    assert config.crate_index == "sparse+https://crates.example/index/"


# ------------------------------------------------------------------ lock and pull


@pytest.fixture
def registry(
    make_index: Callable[..., FixtureIndex], serve: Callable[..., IndexServer]
) -> Callable[..., tuple[IndexServer, str]]:
    """``registry(releases)``: one loopback server for the package index and the crates."""

    def factory(
        releases: list[object],
        crates: Sequence[FixtureCrate] = CRATES,
        real: Sequence[realdists.Pin] = (),
    ) -> tuple[IndexServer, str]:
        index = make_index(releases)
        if real:
            realdists.publish(index, realdists.default_dir(), real)
        publish_crates(index.root, crates)
        server = serve(index)
        return server, write_registry_config(index.root, server.base_url)

    return factory


@pytest.fixture
def rust_project(
    registry: Callable[..., tuple[IndexServer, str]],
    make_project: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Callable[..., tuple[Path, IndexServer]]:
    monkeypatch.delenv("MONOREPO_CRATE_INDEX", raising=False)
    monkeypatch.setenv("CARGO_HOME", str(tmp_path / "user-cargo-home"))

    def factory(targets: str = TARGET, *, crate_index: bool = True) -> tuple[Path, IndexServer]:
        server, index = registry([rust_extension()])
        setting = f'crate-index = "{index}"\n' if crate_index else ""
        proj = make_project(
            '[project]\nname = "p"\nversion = "0"\ndependencies = ["rustthing"]\n'
            f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{targets}]\n{setting}'
        )
        return proj, server

    return factory


def _locked_crates(proj: Path) -> list[dict[str, str]]:
    lock = tomllib.loads((proj / "pylock.toml").read_text())
    (pkg,) = [p for p in lock["packages"] if p["name"] == "rustthing"]
    return list(pkg["tool"]["monorepo"]["crates"])


def test_lock_records_each_crate_and_pull_vendors_it(
    rust_project: Callable[..., tuple[Path, IndexServer]],
) -> None:
    proj, server = rust_project()
    monorepo.lock(proj)
    crates = _locked_crates(proj)
    assert [(c["name"], c["version"]) for c in crates] == [
        ("pebble-answer", "0.1.0"),
        ("pebble-two", "0.1.0"),
    ]
    for crate, fixture in zip(crates, (PEBBLE_ANSWER, PEBBLE_TWO), strict=True):
        assert list(crate) == ["name", "version", "source", "checksum", "url", "tree-hash"]
        assert crate["source"] == CRATE_SOURCE
        assert crate["checksum"] == crate_checksum(fixture)
        assert crate["url"] == f"{server.base_url}/files/crates/{fixture.name}/0.1.0/download"
    first = (proj / "pylock.toml").read_bytes()
    monorepo.lock(proj, upgrade=True)
    assert (proj / "pylock.toml").read_bytes() == first  # deterministic

    result = monorepo.pull(proj)
    assert result.crates_updated == ["pebble-answer-0.1.0", "pebble-two-0.1.0"]
    vendored = proj / "duni" / ".crates" / "pebble-two-0.1.0"
    assert (vendored / "src" / "lib.rs").read_text() == PEBBLE_TWO.lib_rs
    checksums = json.loads((vendored / CHECKSUM_FILE).read_text())
    assert checksums["package"] == crate_checksum(PEBBLE_TWO)
    assert set(checksums["files"]) == {"Cargo.toml", "src/lib.rs"}
    assert not (proj / "duni" / "rustthing" / ".crates").exists()  # the sdist stays itself
    report = monorepo.verify(proj)
    assert report.passed, [str(i) for c in report.checks for i in c.items]

    # a second pull touches nothing; a hand edit is found by verify and refused by pull
    assert monorepo.pull(proj).crates_updated == []
    (vendored / "src" / "lib.rs").write_text("pub fn two() -> i64 { 3 }\n")
    report = monorepo.verify(proj)
    items = [str(i) for c in report.checks for i in c.items]
    assert not report.passed
    assert any("crate pebble-two" in i and "src/lib.rs" in i for i in items), items
    with pytest.raises(PullError, match=r"\.crates/pebble-two-0\.1\.0.*edited: src/lib\.rs"):
        monorepo.pull(proj)
    assert monorepo.pull(proj, force=True).crates_updated == ["pebble-two-0.1.0"]
    assert monorepo.verify(proj).passed
    # a crate directory nobody locks is reported, then removed by a full pull
    shutil.copytree(vendored, proj / "duni" / ".crates" / "stray-1.0.0")
    items = [str(i) for c in monorepo.verify(proj).checks for i in c.items]
    assert any("stray-1.0.0" in i for i in items)
    assert monorepo.pull(proj).crates_removed == ["stray-1.0.0"]


def test_verify_remote_downloads_every_crate_again(
    rust_project: Callable[..., tuple[Path, IndexServer]], capsys: pytest.CaptureFixture[str]
) -> None:
    from monorepo.cli.commands import main

    proj, server = rust_project()
    monorepo.lock(proj)
    assert main(["--project", str(proj), "pull"]) == 0
    assert ".crates: 2 crates vendored, 0 removed" in capsys.readouterr().err
    report = monorepo.verify(proj, remote=True)
    assert report.passed, [str(i) for c in report.checks for i in c.items]
    assert "2 crates" in report.check("remote").summary
    download = server.root / "files" / "crates" / "pebble-two" / "0.1.0" / "download"
    download.write_bytes(crate_bytes(PEBBLE_ANSWER))
    items = [str(i) for i in monorepo.verify(proj, remote=True).check("remote").items]
    assert any(i.startswith("crate pebble-two: 0.1.0") and "do not trust" in i for i in items)


def test_lock_without_a_crate_registry_says_how_to_configure_one(
    rust_project: Callable[..., tuple[Path, IndexServer]],
) -> None:
    proj, _ = rust_project(crate_index=False)
    with pytest.raises(MonorepoError, match=r"rustthing 1\.0 has a Cargo\.lock.*crate-index"):
        monorepo.lock(proj)


def test_lock_takes_the_registry_from_the_environment(
    rust_project: Callable[..., tuple[Path, IndexServer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    proj, server = rust_project(crate_index=False)
    monkeypatch.setenv("MONOREPO_CRATE_INDEX", f"{server.base_url}/files/crates")
    monorepo.lock(proj)
    assert _locked_crates(proj)[0]["url"].startswith(f"{server.base_url}/files/crates/")
    # another registry: a relock (even one that would reuse its resolution) takes it
    monkeypatch.setenv("MONOREPO_CRATE_INDEX", f"{server.base_url}/mirror/{{crate}}-{{version}}")
    monorepo.lock(proj)
    assert _locked_crates(proj)[0]["url"] == f"{server.base_url}/mirror/pebble-answer-0.1.0"


def test_a_crate_that_does_not_match_its_checksum_fails_the_lock(
    rust_project: Callable[..., tuple[Path, IndexServer]],
) -> None:
    proj, server = rust_project()
    download = server.root / "files" / "crates" / "pebble-two" / "0.1.0" / "download"
    download.write_bytes(crate_bytes(PEBBLE_ANSWER))
    with pytest.raises(HashMismatchError, match="pebble-two"):
        monorepo.lock(proj)


# ------------------------------------------------------------------ build


def test_cargo_config_replaces_every_registry_by_the_vendored_crates(tmp_path: Path) -> None:
    crates = [Crate("a", "1.0.0", "registry+https://r.example/index", SUM)]
    text = cargo_config(crates, tmp_path / "duni" / ".crates", shutil.which("cargo") or "cargo")
    data = tomllib.loads(text)
    assert data["source"]["crates-io"]["replace-with"] == "vendored-sources"
    assert data["source"]["monorepo-registry-1"] == {
        "registry": "https://r.example/index",
        "replace-with": "vendored-sources",
    }
    assert data["source"]["vendored-sources"]["directory"] == str(tmp_path / "duni" / ".crates")
    assert data["net"]["offline"] is True


def test_explain_cargo_failure_names_the_crate() -> None:
    log = (
        "error: no matching package named `pebble-two` found\n"
        "location searched: directory source `/x/duni/.crates`\n"
    )
    text = explain_cargo_failure(log, "rustthing 1.0")
    assert text is not None and "`pebble-two`" in text and "rustthing 1.0" in text
    assert explain_cargo_failure("error: linker `cc` not found", "x 1") is None


@needs_rust
def test_missing_standard_library_is_named() -> None:
    rustc = shutil.which("rustc")
    assert rustc is not None
    host = subprocess.run([rustc, "-vV"], capture_output=True, text=True, check=True).stdout
    triple = next(line.split()[1] for line in host.splitlines() if line.startswith("host:"))
    assert missing_standard_library(rustc, triple) is None
    problem = missing_standard_library(rustc, "nonsense-unknown-nowhere")
    assert problem is not None and "nonsense-unknown-nowhere" in problem


@needs_linux
@needs_rust
def test_rust_extension_builds_offline_from_vendored_crates(
    rust_project: Callable[..., tuple[Path, IndexServer]], tmp_path: Path
) -> None:
    proj, server = rust_project()
    monorepo.lock(proj)
    monorepo.pull(proj)
    server.stop()  # nothing may reach the registry or the index any more
    result = build(proj)
    assert result.ok, [(p.label, p.reason, p.tail) for p in result.failed]
    (built,) = [p for p in result.built if p.dir == "rustthing"]
    assert built.wheel is not None
    with zipfile.ZipFile(built.wheel) as zf:
        (so,) = [n for n in zf.namelist() if n.endswith(".so")]
        header = read_elf_header(zf.read(so)[:64])
        zf.extractall(tmp_path / "unpacked")
    assert header is not None
    assert header.machine == EM_X86_64 or HOST.machine != "x86_64"
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(tmp_path / 'unpacked')!r});"
            " import rustthing._rust as r; print(r.ANSWER)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "42"
    config = proj / "duni-build" / "native" / "cargo" / "rustthing" / "config.toml"
    assert "replace-with" in config.read_text()
    assert not list((proj / "duni").rglob("config.toml"))  # nothing written into duni/
    log = built.log
    assert log is not None and "pebble-two" in log.read_text()
    # the build record keys the wheel by the Rust toolchain too (another rustc, other bytes)
    record = tomllib.loads((proj / "duni-build" / "native" / "build.toml").read_text())
    assert "rustc" in json.dumps(record)
    # built again elsewhere (another scratch path, new CARGO_HOME): the same wheel
    from monorepo.building.rebuild import verify_rebuild

    rebuilt = verify_rebuild(proj, packages=["rustthing"])
    assert rebuilt.passed, rebuilt.to_dict()


@needs_linux
@needs_rust
def test_rust_wheels_do_not_depend_on_where_the_project_is(
    registry: Callable[..., tuple[IndexServer, str]],
    make_project: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MONOREPO_CRATE_INDEX", raising=False)
    server, index = registry([rust_extension()])
    digests = []
    for name in ("one", "elsewhere-two"):
        proj = make_project(
            '[project]\nname = "p"\nversion = "0"\ndependencies = ["rustthing"]\n'
            f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}]\n'
            f'crate-index = "{index}"\n',
            name=name,
        )
        monorepo.lock(proj)
        monorepo.pull(proj)
        result = build(proj, build_cache=False)  # the cache would hand the first one back
        assert result.ok, [(p.label, p.reason, p.tail) for p in result.failed]
        (wheel,) = [p.wheel for p in result.built if p.dir == "rustthing"]
        assert wheel is not None
        with zipfile.ZipFile(wheel) as zf:
            (so,) = [n for n in zf.namelist() if n.endswith(".so")]
            assert str(proj).encode() not in zf.read(so)
        digests.append(hashlib.sha256(wheel.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


@needs_linux
@needs_rust
def test_crates_of_cargos_default_registry_build(
    registry: Callable[..., tuple[IndexServer, str]],
    make_project: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The usual case: the Cargo.lock names cargo's default registry (replaced as crates-io)."""
    monkeypatch.delenv("MONOREPO_CRATE_INDEX", raising=False)
    cargo = shutil.which("cargo")
    assert cargo is not None
    source = default_registry_source(cargo, tmp_path / "probe")
    assert is_default_registry(cargo, source)
    assert not is_default_registry(cargo, CRATE_SOURCE)
    crates = on_registry(CRATES, source)
    server, index = registry([rust_extension(crates=crates)], crates)
    proj = make_project(
        '[project]\nname = "p"\nversion = "0"\ndependencies = ["rustthing"]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}]\n'
        f'crate-index = "{index}"\n'
    )
    monorepo.lock(proj)
    assert {c["source"] for c in _locked_crates(proj)} == {source}
    monorepo.pull(proj)
    server.stop()
    result = build(proj)
    assert result.ok, [(p.label, p.reason, p.tail) for p in result.failed]
    config = tomllib.loads(
        (proj / "duni-build" / "native" / "cargo" / "rustthing" / "config.toml").read_text()
    )
    assert sorted(config["source"]) == ["crates-io", "vendored-sources"]
    (wheel,) = [p.wheel for p in result.built if p.dir == "rustthing"]
    assert wheel is not None
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path / "unpacked")
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(tmp_path / 'unpacked')!r});"
            " import rustthing._rust as r; print(r.ANSWER)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "42"


@needs_linux
@needs_rust
def test_the_real_setuptools_rust_builds_from_vendored_crates(
    registry: Callable[..., tuple[IndexServer, str]],
    make_project: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """setuptools-rust itself (and its whole build closure, real sdists) runs cargo offline."""
    pins = (*realdists.PINS, *realdists.RUST_PINS)
    if realdists.missing(realdists.default_dir(), pins):
        pytest.skip(
            f"needs the real sdists in {realdists.default_dir()} (python -m fixtures.realdists)"
        )
    monkeypatch.delenv("MONOREPO_CRATE_INDEX", raising=False)
    server, index = registry([setuptools_rust_extension()], CRATES, real=pins)
    proj = make_project(
        '[project]\nname = "p"\nversion = "0"\ndependencies = ["rustthing"]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}]\n'
        f'crate-index = "{index}"\n'
    )
    lock = monorepo.lock(proj)
    assert {"setuptools", "setuptools-rust", "semantic-version"} <= {
        str(p.name) for p in lock.document.packages
    }
    monorepo.pull(proj)
    server.stop()
    result = build(proj)
    assert result.ok, [(p.label, p.reason, p.tail) for p in result.failed]
    (wheel,) = [p.wheel for p in result.built if p.dir == "rustthing"]
    assert wheel is not None
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path / "unpacked")
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(tmp_path / 'unpacked')!r});"
            " import rustthing._rust as r; print(r.ANSWER)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "42"


@needs_linux
@needs_rust
def test_a_crate_cargo_lacks_is_named(
    rust_project: Callable[..., tuple[Path, IndexServer]],
) -> None:
    proj, server = rust_project()
    monorepo.lock(proj)
    monorepo.pull(proj)
    server.stop()
    shutil.rmtree(proj / "duni" / ".crates" / "pebble-two-0.1.0")
    result = build(proj)
    (failed,) = result.failed
    assert "cargo could not find the crate `pebble-two`" in failed.reason, failed.reason


def test_build_without_cargo_says_so(
    rust_project: Callable[..., tuple[Path, IndexServer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    proj, server = rust_project()
    monorepo.lock(proj)
    monorepo.pull(proj)
    server.stop()
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(sys, "executable", sys.executable)
    result = build(proj)
    (failed,) = result.failed
    assert "rustthing 1.0 is a Rust extension" in failed.reason
    assert "cargo" in failed.reason and "apt-get install cargo rustc" in failed.reason


# ------------------------------------------------------------------ cross


SYSROOT = os.environ.get("MONOREPO_TEST_SYSROOT", "")
needs_cross = pytest.mark.skipif(
    not (
        SYSROOT
        and Path(SYSROOT, "monorepo-sysroot.toml").is_file()
        and shutil.which("qemu-aarch64")
        and shutil.which("aarch64-linux-gnu-gcc")
        and HOST.machine == "x86_64"
        and HAS_RUST
    ),
    reason="needs cargo, qemu-aarch64, aarch64-linux-gnu-gcc and MONOREPO_TEST_SYSROOT",
)
AARCH64 = (
    '{ name = "arm", python = "3.11", platform = "linux", machine = "aarch64",'
    f' cc = "aarch64-linux-gnu-gcc", sysroot = "{SYSROOT}", runner = "qemu-aarch64 -L {{sysroot}}" }}'
)


@needs_cross
def test_rust_extension_cross_compiles_for_aarch64_or_says_what_is_missing(
    rust_project: Callable[..., tuple[Path, IndexServer]], tmp_path: Path
) -> None:
    proj, server = rust_project(f"{TARGET}, {AARCH64}")
    monorepo.lock(proj)
    monorepo.pull(proj)
    server.stop()
    rustc = shutil.which("rustc")
    assert rustc is not None
    missing = missing_standard_library(rustc, "aarch64-unknown-linux-gnu")
    result = build(proj, target="arm")
    if missing is not None:
        (failed,) = result.failed
        assert failed.reason.startswith("rustthing 1.0 is a Rust extension"), failed.reason
        assert "no standard library for aarch64-unknown-linux-gnu" in failed.reason
        assert "rustup target add aarch64-unknown-linux-gnu" in failed.reason
        return
    assert result.ok, [(p.label, p.reason, p.tail) for p in result.failed]
    (built,) = [p for p in result.built if p.dir == "rustthing" and not p.host]
    assert built.wheel is not None and built.wheel.name.endswith("linux_aarch64.whl")
    with zipfile.ZipFile(built.wheel) as zf:
        (so,) = [n for n in zf.namelist() if n.endswith(".so")]
        header = read_elf_header(zf.read(so)[:64])
        zf.extractall(tmp_path / "unpacked")
    assert header is not None and header.machine == EM_AARCH64
    out = subprocess.run(
        [
            "qemu-aarch64",
            "-L",
            SYSROOT,
            str(Path(SYSROOT) / "usr/bin/python3.11"),
            "-c",
            f"import sys; sys.path.insert(0, {str(tmp_path / 'unpacked')!r});"
            " import rustthing._rust as r; print(r.ANSWER)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "42"
