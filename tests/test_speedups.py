"""Speed-only machinery: marked as such, each with its switch, and none changes a result.

Every module under a ``speed/`` directory only saves time.  ``MONOREPO_NO_SPEEDUPS``
turns them off by name (or ``all``); a lock and a pull with all of them off must give
the same pylock.toml, byte for byte, and the same trees as with all of them on.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fixtures.builder import Release
from monorepo._core.speed.switches import ENV, NAMES, parse
from monorepo.sources.treehash import tree_hash
from tests.helpers import MakeIndex, Serve

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "monorepo"


def speed_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("speed/*.py") if p.name != "__init__.py")


def test_speed_machinery_lives_in_speed_directories_and_says_how_to_turn_it_off() -> None:
    """Each speed module's docstring names its switch, and every switch is used."""
    named: set[str] = set()
    for path in speed_modules():
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        switches = {n for n in NAMES if f"{ENV}={n}" in doc or f",{n}" in doc}
        if path.name != "switches.py":
            assert switches, f"{path.relative_to(ROOT)} names no {ENV} switch"
        named |= switches
    code = "\n".join(p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py"))
    for name in NAMES:
        assert f'enabled("{name}")' in code, f"switch {name!r} is not honoured anywhere"


def test_the_switch_takes_names_or_all() -> None:
    assert parse({}) == frozenset()
    assert parse({ENV: "page-cache, tarscan,nonsense"}) == {"page-cache", "tarscan"}
    assert parse({ENV: "all"}) == frozenset(NAMES)


RELEASES = [
    Release("app", "1.0", requires_dist=("lib>=1",)),
    Release("lib", "1.0"),
    Release("lib", "2.0", requires_dist=("dep",)),
    Release("dep", "0.5"),
]


def _run(project: Path, env: dict[str, str], *command: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "monorepo", "--project", str(project), *command],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("twice", [False, True], ids=["cold", "warm"])
def test_a_lock_and_a_pull_without_speed_ups_give_the_same_lock_and_trees(
    make_index: MakeIndex,
    serve: Serve,
    make_project: Callable[..., Path],
    tmp_path: Path,
    twice: bool,
) -> None:
    server = serve(make_index(RELEASES))
    text = (
        '[project]\nname = "p"\nversion = "0"\ndependencies = ["app"]\n\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\n'
    )
    results: list[tuple[bytes, dict[str, str]]] = []
    for name, off in (("fast", ""), ("slow", "all")):
        project = make_project(text, name=name)
        env = {**os.environ, "MONOREPO_CACHE_DIR": str(tmp_path / f"cache-{name}"), ENV: off}
        for _ in range(2 if twice else 1):  # warm: the caches and memos are used
            _run(project, env, "lock")
            _run(project, env, "pull")
        duni = project / "duni"
        trees = {d.name: tree_hash(d) for d in duni.iterdir() if d.is_dir() and d.name[0] != "."}
        results.append(((project / "pylock.toml").read_bytes(), trees))
    (fast_lock, fast_trees), (slow_lock, slow_trees) = results
    assert slow_lock == fast_lock
    assert slow_trees == fast_trees and set(fast_trees) >= {"app", "lib", "dep"}
