"""Real-index tests (marked `network`, off by default).

They lock the package sets in ../shared/bench against the index named by
MONOREPO_TEST_INDEX_URL and, when uv is installed, compare names and versions
with `uv pip compile` for the same target.  Run with:
MONOREPO_TEST_INDEX_URL=<index> pytest -m network
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.pylock import Pylock

import monorepo

pytestmark = pytest.mark.network

# ../shared/bench beside the checkout (or beside the directory of worktrees)
BENCH = next(
    (
        d / "shared" / "bench"
        for d in Path(__file__).resolve().parents[1:4]
        if (d / "shared" / "bench").is_dir()
    ),
    Path(__file__).resolve().parent.parent.parent / "shared" / "bench",
)
TARGET = '{ name = "linux-x86_64", python = "3.11", platform = "linux", machine = "x86_64" }'


def _project(tmp_path: Path, name: str, build: bool) -> Path:
    source = BENCH / name / "pyproject.toml"
    if not source.is_file():
        pytest.skip(f"{source} is not present")
    proj = tmp_path / name
    proj.mkdir()
    text = source.read_text() + (
        f"\n[tool.monorepo]\ntargets = [{TARGET}]\nbuild-dependencies = {'true' if build else 'false'}\n"
    )
    (proj / "pyproject.toml").write_text(text)
    return proj


def _uv_versions(proj: Path, index: str) -> dict[str, str] | None:
    uv = shutil.which("uv")
    if uv is None:
        return None
    out = subprocess.run(
        [
            uv,
            "pip",
            "compile",
            "--python-version",
            "3.11",
            "--python-platform",
            "x86_64-unknown-linux-gnu",
            "--index-url",
            index,
            "--no-header",
            "--no-annotate",
            "pyproject.toml",
        ],
        cwd=proj,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if m:
            found[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return found


@pytest.mark.parametrize("name", ["small", "web", "data"])
def test_bench_set_locks_like_uv(tmp_path: Path, name: str) -> None:
    index = os.environ["MONOREPO_TEST_INDEX_URL"]
    proj = _project(tmp_path, name, build=False)
    monorepo.lock(proj, index_url=index)
    data = tomllib.loads((proj / "pylock.toml").read_text())
    Pylock.from_dict(data)
    mine = {p["name"]: p["version"] for p in data["packages"]}
    for p in data["packages"]:
        assert len(p["sdist"]["hashes"]["sha256"]) == 64
    theirs = _uv_versions(proj, index)
    if theirs is not None:
        assert mine == theirs


def test_small_set_locks_with_build_dependencies_and_pulls(tmp_path: Path) -> None:
    index = os.environ["MONOREPO_TEST_INDEX_URL"]
    proj = _project(tmp_path, "small", build=True)
    result = monorepo.lock(proj, index_url=index)
    roles: dict[str, str] = {p.name: p.role for p in result.document.packages}
    assert roles["requests"] == "runtime"
    assert "setuptools" in roles and roles["setuptools"] == "build"
    pulled = monorepo.pull(proj)
    for p in result.document.packages:
        assert (pulled.duni / p.dir / "pyproject.toml").exists() or (
            pulled.duni / p.dir / "setup.py"
        ).exists()


@pytest.mark.parametrize("name", ["web", "requests-pyyaml-rich"])
def test_build_closure_is_the_same_from_any_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Locked from an empty cache, again warm, with -U, and from another empty cache with
    the lock present: the same bytes, which `lock --check` and `verify --resolve` accept.
    (Resolving each package's build requirements apart gave setuptools 82.0.1 and 84.2.1
    for web, flit-core 3.12.0 and 4.2.0 for requests, pyyaml and rich, and a relock
    collapsed them.)"""
    index = os.environ["MONOREPO_TEST_INDEX_URL"]
    if name == "web":
        proj = _project(tmp_path, "web", build=True)
    else:
        proj = tmp_path / name
        proj.mkdir()
        (proj / "pyproject.toml").write_text(
            '[project]\nname = "rpr"\nversion = "0"\nrequires-python = ">=3.11"\n'
            'dependencies = ["requests", "pyyaml", "rich"]\n'
            f"[tool.monorepo]\ntargets = [{TARGET}]\n"
        )
    path = proj / "pylock.toml"

    def run(cache: str, **kwargs: Any) -> str:
        monkeypatch.setenv("MONOREPO_CACHE_DIR", str(tmp_path / cache))
        monorepo.lock(proj, index_url=index, **kwargs)
        return path.read_text()

    first = run("c1")
    assert run("c1") == first
    assert run("c1", upgrade=True) == first
    assert run("c2") == first
    assert monorepo.check(proj, index_url=index).fresh
    report = monorepo.verify(proj, resolve=True, index_url=index)
    checks = {c.name: c for c in report.checks}
    assert checks["lock"].passed, checks["lock"].items
    assert checks["resolve"].passed, checks["resolve"].items


def test_real_rust_package_locks_and_vendors_its_crates(tmp_path: Path) -> None:
    """A real Rust extension (rpds-py: maturin and pyo3) against the real crate registry.

    The registry is named by MONOREPO_TEST_CRATE_INDEX (``sparse+URL`` of its index, or
    its download URL), never by this code; the test skips when it is not set or not
    reachable from here.  Every crate of the sdist's Cargo.lock must be locked with its
    checksum and download URL, download with that checksum, and vendor into duni/.crates.
    """
    from monorepo.errors import MonorepoError
    from monorepo.index.http import HttpClient
    from monorepo.sources.crates import download_template, parse_cargo_lock

    index = os.environ["MONOREPO_TEST_INDEX_URL"]
    crate_index = os.environ.get("MONOREPO_TEST_CRATE_INDEX")
    if not crate_index:
        pytest.skip("set MONOREPO_TEST_CRATE_INDEX to the crate registry (sparse+URL or its dl)")
    try:
        with HttpClient(retries=0, timeout=15) as http:
            download_template(crate_index, lambda url: http.get(url).body)
    except MonorepoError as error:
        pytest.skip(f"the crate registry {crate_index} is not reachable from here: {error}")
    proj = tmp_path / "rusty"
    proj.mkdir()
    (proj / "pyproject.toml").write_text(
        '[project]\nname = "rusty"\nversion = "0"\ndependencies = ["rpds-py"]\n'
        f'[tool.monorepo]\ntargets = [{TARGET}]\ncrate-index = "{crate_index}"\n'
    )
    result = monorepo.lock(proj, index_url=index)
    (rpds,) = [p for p in result.document.packages if p.name == "rpds-py"]
    crates = rpds.tool["crates"]
    names = {c["name"] for c in crates}
    assert "pyo3" in names
    pulled = monorepo.pull(proj)
    lock_text = (pulled.duni / rpds.dir / "Cargo.lock").read_text()
    expected = parse_cargo_lock(lock_text, where="rpds-py Cargo.lock")
    assert [(c["name"], c["version"], c["checksum"]) for c in crates] == [
        (c.name, c.version, c.checksum) for c in expected
    ]
    for crate in crates:
        assert (
            pulled.duni / ".crates" / f"{crate['name']}-{crate['version']}" / "Cargo.toml"
        ).is_file()
    assert monorepo.verify(proj).passed
