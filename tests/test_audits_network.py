"""The audits on the small real set (requests, pyyaml, markupsafe and their build closure).

Off by default: set ``MONOREPO_TEST_INDEX_URL`` to the public index's simple URL.
The set is locked, pulled and built once per session; the tests then rebuild it in
other directories and compare it with the index's wheels.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import monorepo
from monorepo.building.builder import build
from monorepo.building.published import verify_published
from monorepo.building.rebuild import verify_rebuild
from monorepo.building.record import read_build_record
from monorepo.project.targets import host_target

pytestmark = pytest.mark.network

HOST = host_target()
SMALL = Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "small"
TARGET = (
    f'{{ name = "native", python = "{HOST.python}", platform = "{HOST.platform}",'
    f' machine = "{HOST.machine}" }}'
)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small set locked, pulled and built (pyyaml and markupsafe with their C code)."""
    if not (SMALL / "pyproject.toml").is_file():
        pytest.skip(f"{SMALL} is not present")
    proj = tmp_path_factory.mktemp("audits") / "small"
    proj.mkdir()
    text = (SMALL / "pyproject.toml").read_text()
    (proj / "pyproject.toml").write_text(text + f"\n[tool.monorepo]\ntargets = [{TARGET}]\n")
    monorepo.lock(proj, index_url=os.environ["MONOREPO_TEST_INDEX_URL"])
    # Frozen: the lock was made with --index-url alone, and this machine's pip configuration
    # may add extra indexes that would make pull and build call it stale.
    monorepo.pull(proj, frozen=True)
    result = build(proj, frozen=True)
    assert result.ok, [(p.label, p.reason, p.tail) for p in result.failed]
    return proj


def test_small_set_builds_twice_in_two_directories_with_the_same_hashes(
    small: Path, tmp_path: Path
) -> None:
    first = read_build_record(small / "duni-build" / "native" / "build.toml")
    for name in ("pyyaml", "markupsafe", "setuptools", "cython", "requests"):
        assert any(e.name == name for e in first.packages.values()), name
    for binary in ("pyyaml", "markupsafe"):
        entry = next(e for e in first.packages.values() if e.name == binary)
        assert entry.wheel.endswith(f"linux_{HOST.machine}.whl"), entry.wheel
        assert entry.inputs.toolchain is not None
    again = build(small, build_root=tmp_path / "second", build_cache=False, frozen=True)
    assert again.ok, [(p.label, p.reason, p.tail) for p in again.failed]
    second = read_build_record(tmp_path / "second" / "native" / "build.toml")
    assert {d: e.sha256 for d, e in second.packages.items()} == {
        d: e.sha256 for d, e in first.packages.items()
    }
    report = verify_rebuild(small, scratch_parent=tmp_path)
    bad = [p.to_dict() for p in report.packages if p.status != "reproducible"]
    assert report.passed, bad
    shutil.rmtree(tmp_path / "second")


def test_published_wheels_of_the_small_set(small: Path) -> None:
    """Which of our wheels hold the same code as the index's: the pure ones should."""
    report = verify_published(small)
    statuses = {p.name: p.status for p in report.packages}
    for pure in ("requests", "idna", "certifi"):
        assert statuses[pure] == "same", report.status(pure).to_dict()
        assert report.status(pure).pure
    for native in ("pyyaml", "markupsafe"):
        assert statuses[native] in ("native", "same"), report.status(native).to_dict()
        assert not report.status(native).python_files, report.status(native).to_dict()
    check = report.check()
    assert "wheels compared with the index's" in check.summary
