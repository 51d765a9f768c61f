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

import pytest
from packaging.pylock import Pylock

import monorepo

pytestmark = pytest.mark.network

BENCH = Path(__file__).resolve().parent.parent.parent / "shared" / "bench"
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
    roles = {p.name: p.role for p in result.document.packages}
    assert roles["requests"] == "runtime"
    assert "setuptools" in roles and roles["setuptools"] == "build"
    pulled = monorepo.pull(proj)
    for p in result.document.packages:
        assert (pulled.duni / p.dir / "pyproject.toml").exists() or (
            pulled.duni / p.dir / "setup.py"
        ).exists()
