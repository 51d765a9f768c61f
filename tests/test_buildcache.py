"""The content-addressed build cache: real builds of fixture sdists, stored and found by key."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import monorepo
from fixtures.builder import FixtureIndex, Release
from fixtures.server import IndexServer
from monorepo.building.buildenv import file_sha256
from monorepo.building.builder import build
from monorepo.building.cache import BuildCache
from monorepo.building.results import BuildResult
from monorepo.cli.commands import main
from tests.helpers import current_cache, write_overlay
from tests.test_build import APP, HELPER, LIB, TARGET, TINYBACKEND, names


def helper_patch(line: str) -> bytes:
    return (
        b"diff --git a/helper/__init__.py b/helper/__init__.py\n"
        b"--- a/helper/__init__.py\n"
        b"+++ b/helper/__init__.py\n"
        b"@@ -1,3 +1,4 @@\n"
        b' """Fixture package helper."""\n'
        b" \n"
        b" __version__ = '1.0'\n" + f"+{line}\n".encode()
    )


RULE = '[[rule]]\nversions = ""\nreason = "test"\npatches = ["patches/0001.patch"]\n'
PATCH_PATH = "packages/helper/patches/0001.patch"
OTHER = Release("other", "1.0", requires_dist=("lib",))


@pytest.fixture
def patched_project(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
    tmp_path: Path,
) -> Path:
    """app (built by tinybackend, which needs helper), lib, other; helper patched by an
    overlay; locked and pulled, the index kept up for a relock."""
    server = serve(make_index([TINYBACKEND, HELPER, APP, LIB, OTHER]))
    write_overlay(
        tmp_path / "proj" / "fixes", "fixes", {"helper": RULE}, {PATCH_PATH: helper_patch("A = 1")}
    )
    proj = make_project(
        '[project]\nname = "p"\nversion = "0"\ndependencies = ["app", "other"]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}]\n'
        'overlays = ["fixes"]\n'
    )
    monorepo.lock(proj)
    monorepo.pull(proj)
    return proj


def wheel_hashes(result: BuildResult) -> dict[str, str]:
    every = result.built + result.cached + result.skipped
    return {p.dir: file_sha256(p.wheel) for p in every if p.wheel is not None}


ALL = ["app", "helper", "lib", "other", "tinybackend"]


def test_an_empty_output_directory_is_filled_from_the_cache(
    patched_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proj = patched_project
    cache = tmp_path / "shared-cache"  # as on a shared file system
    started = time.monotonic()
    first = build(proj, out=tmp_path / "first", build_cache=cache)
    cold = time.monotonic() - started
    assert first.ok, [(p.label, p.reason, p.tail) for p in first.failed]
    assert names(first.built) == ALL and first.cached == []
    built = wheel_hashes(first)
    assert len(list(cache.glob("*/*/entry.json"))) == len(ALL)
    assert not current_cache().builds.exists()  # only the cache it was given
    # everything of the first build gone but the cache: nothing is built
    shutil.rmtree(proj / "duni-build")
    started = time.monotonic()
    second = build(proj, out=tmp_path / "second", build_cache=cache)
    warm = time.monotonic() - started
    assert second.ok
    assert second.built == [] and names(second.cached) == ALL
    assert wheel_hashes(second) == built
    assert all(p.log is not None and "build_wheel" in p.log.read_text() for p in second.cached)
    assert warm < cold / 2, (warm, cold)
    # a damaged entry is noticed, removed and built again; the rest still comes from the cache
    (stored,) = cache.glob("*/*/lib-1.0-py3-none-any.whl")
    stored.write_bytes(b"not the wheel")
    third = build(proj, out=tmp_path / "third", build_cache=cache)
    assert names(third.built) == ["lib"] and len(third.cached) == len(ALL) - 1
    assert wheel_hashes(third) == built
    # without the cache, into a new directory, a package is built
    assert names(build(proj, out=tmp_path / "x", build_cache=False, packages=["lib"]).built) == [
        "lib"
    ]
    # the command line's summary counts what came from the cache
    out = tmp_path / "cli"
    assert (
        main(["--project", str(proj), "build", "--build-cache", str(cache), "--out", str(out)]) == 0
    )
    assert "0 built, 5 cached, 0 up to date, 0 failed" in capsys.readouterr().err


def test_changing_one_overlay_patch_rebuilds_that_package_and_its_dependents(
    patched_project: Path, tmp_path: Path
) -> None:
    proj = patched_project
    first = build(proj)
    assert first.ok and names(first.built) == ALL
    built = wheel_hashes(first)
    (proj / "fixes" / PATCH_PATH).write_bytes(helper_patch("A = 2"))
    monorepo.lock(proj)
    monorepo.pull(proj)
    shutil.rmtree(proj / "duni-build")  # no up-to-date check: only the cache can help
    second = build(proj)
    assert second.ok, [(p.label, p.reason, p.tail) for p in second.failed]
    # helper changed; app's build installed helper (tinybackend needs it): two rebuilt
    assert names(second.built) == ["app", "helper"]
    assert names(second.cached) == ["lib", "other", "tinybackend"]
    assert wheel_hashes(second)["helper"] != built["helper"]
    # changing it back finds the first wheels again
    (proj / "fixes" / PATCH_PATH).write_bytes(helper_patch("A = 1"))
    monorepo.lock(proj)
    monorepo.pull(proj)
    third = build(proj)
    assert third.built == []
    assert names(third.cached) == ["app", "helper"]
    assert wheel_hashes(third) == built


def test_dynamic_build_requirements_are_found_through_a_hint(tmp_path: Path) -> None:
    wheel = tmp_path / "w" / "x-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"wheel bytes")
    cache = BuildCache(tmp_path / "cache")
    cache.put("k1" * 32, wheel, None, {"dep"})
    cache.hint("k0" * 32, {"dep"})
    hint = cache.get("k0" * 32)
    assert hint is not None and hint.wheel is None and hint.dynamic == {"dep"}
    full = cache.get("k1" * 32)
    assert full is not None and full.wheel == wheel.name
    out = cache.fetch(full, tmp_path / "out")
    assert out is not None and out.read_bytes() == b"wheel bytes"
    assert cache.get("k2" * 32) is None
