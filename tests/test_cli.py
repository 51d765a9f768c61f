"""The command line's conventions, each checked by running ``python -m monorepo`` as a user
would: global flags anywhere, project discovery, no abbreviations, help texts, exit
codes per failure class, ``--json`` errors, Ctrl-C timing.  Everything runs against a
fixture index served over loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures.builder import BACKEND_SOURCE, Release
from fixtures.server import IndexServer
from monorepo.cli.parser import parse, parser, subcommands
from tests.helpers import MakeIndex, Serve

TARGET = '{ name = "linux", python = "3.11", platform = "linux", machine = "x86_64" }'
BACKEND_FILE = "_fixture_backend/fixture_backend.py"

BROKEN_BACKEND = (
    BACKEND_SOURCE
    + r"""

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("fixture failure for the test")
"""
)

SLEEPY_BACKEND = (
    BACKEND_SOURCE
    + r"""

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    import time

    with open(os.environ["SLEEPY_STARTED"] + ".tmp", "w") as fh:
        fh.write(str(os.getpid()))
    os.rename(os.environ["SLEEPY_STARTED"] + ".tmp", os.environ["SLEEPY_STARTED"])
    time.sleep(60)
"""
)


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.out)


def cli(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> Run:
    """``python -m monorepo ARGS`` in a fresh process (the console script's entry point)."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "monorepo", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=300,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


@dataclass
class Proj:
    root: Path
    server: IndexServer


@pytest.fixture
def proj(
    make_index: MakeIndex, serve: Serve, make_project: Callable[..., Path]
) -> Callable[..., Proj]:
    """``proj(releases, deps)``: a project whose index is a fixture server."""
    counter = iter(range(100))

    def factory(releases: list[Release], deps: list[str], name: str | None = None) -> Proj:
        server = serve(make_index(releases))
        deps_toml = ", ".join(f'"{d}"' for d in deps)
        root = make_project(
            f'[project]\nname = "p"\nversion = "0"\ndependencies = [{deps_toml}]\n'
            f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}]\n',
            name=name or f"proj{next(counter)}",
        )
        return Proj(root, server)

    return factory


LIB = Release("lib", "1.0")
APP = Release("app", "1.0", requires_dist=("lib>=1",))


# ------------------------------------------------------------------ flags anywhere


@pytest.mark.parametrize(
    "args",
    [
        ["--project", "{p}", "-q", "lock"],
        ["lock", "--project", "{p}", "-q"],
        ["-q", "lock", "--project", "{p}"],
        ["lock", "-q", "--no-progress", "--color", "never", "--project", "{p}"],
    ],
)
def test_global_options_before_or_after_the_subcommand(
    proj: Callable[..., Proj], args: list[str]
) -> None:
    p = proj([LIB, APP], ["app"])
    run = cli(*(a.replace("{p}", str(p.root)) for a in args))
    assert run.code == 0, run.err
    assert run.err == ""  # -q, wherever it was given
    assert (p.root / "pylock.toml").is_file()


def test_json_before_or_after_gives_the_same_output(proj: Callable[..., Proj]) -> None:
    p = proj([LIB], ["lib"])
    assert cli("--project", p.root, "lock").code == 0
    before = cli("--json", "--project", p.root, "list")
    after = cli("list", "--project", p.root, "--json")
    assert before.code == after.code == 0
    assert before.json() == after.json() and before.json()[0]["name"] == "lib"


def test_verbose_counts_on_both_sides() -> None:
    assert parse(["-v", "lock", "-v"]).verbose == 2
    assert parse(["lock", "-vv"]).verbose == 2
    assert parse(["lock"]).verbose == 0
    args = parse(["--project", "a", "lock", "--project", "b"])
    assert args.project == Path("b")  # the later one wins, as with any option


# ------------------------------------------------------------------ project discovery


def test_the_project_is_found_upward_from_the_working_directory(
    proj: Callable[..., Proj],
) -> None:
    p = proj([LIB], ["lib"])
    deep = p.root / "src" / "pkg" / "deeper"
    deep.mkdir(parents=True)
    # A pyproject.toml without [project] or [tool.monorepo] (a tool's settings) is passed over.
    (p.root / "src" / "pyproject.toml").write_text("[tool.ruff]\nline-length = 99\n")
    run = cli("lock", cwd=deep)
    assert run.code == 0, run.err
    assert (p.root / "pylock.toml").is_file()
    assert not (p.root / "src" / "pylock.toml").exists()
    listed = cli("list", "--json", cwd=deep)
    assert [row["name"] for row in listed.json()] == ["lib"]


def test_no_project_anywhere_is_a_usage_error(tmp_path: Path) -> None:
    empty = tmp_path / "nothing" / "here"
    empty.mkdir(parents=True)
    run = cli("lock", cwd=empty)
    assert run.code == 2
    assert "no pyproject.toml with a [project] or [tool.monorepo] table" in run.err
    assert "--project" in run.err and "Traceback" not in run.err
    data = cli("lock", "--json", cwd=empty).json()["error"]
    assert data["code"] == "usage" and data["exit_code"] == 2 and data["path"] == str(empty)


# ------------------------------------------------------------------ abbreviations and help


def test_options_are_never_abbreviated(proj: Callable[..., Proj]) -> None:
    p = proj([LIB], ["lib"])
    assert cli("--project", p.root, "lock").code == 0
    p.server.clear_requests()
    for args in (["verify", "--res"], ["lock", "--upgrade-pack", "lib"], ["list", "--proj", "x"]):
        run = cli("--project", p.root, *args)
        assert run.code == 2, args
        assert "unrecognized arguments" in run.err and "never abbreviated" in run.err
    assert p.server.requests == []  # `verify --res` did not run the network check


def test_every_subcommand_has_a_description_an_example_and_defaults() -> None:
    commands = subcommands(parser())
    assert {"lock", "pull", "verify", "build", "list", "why", "tree", "export"} <= set(commands)
    assert {"cache", "completion", "help"} <= set(commands)
    for name in commands:
        run = cli(name, "--help")
        assert run.code == 0, name
        lines = run.out.splitlines()
        description = lines[lines.index("") + 1]
        assert description.endswith(".") and len(description) > 10, (name, description)
        assert "examples:\n  monorepo " in run.out, name
        assert "global options:" in run.out and "--project DIR" in run.out, name
    lock = cli("help", "lock")
    assert lock.code == 0 and lock.out == cli("lock", "--help").out
    why = cli("why", "--help").out
    assert "PACKAGE               a locked package's name" in why
    for name in ("pull", "build", "verify"):
        text = " ".join(cli(name, "--help").out.split())
        assert "--jobs N, -j N" in text and "(default: " in text.split("--jobs N, -j N")[1][:120]
    assert "(default: if-necessary" in " ".join(cli("lock", "--help").out.split()).replace(
        "[tool.monorepo] prereleases, else ", ""
    )
    unknown = cli("help", "nosuch")
    assert unknown.code == 2 and "no command 'nosuch'" in unknown.err


def test_version_and_top_level_help() -> None:
    assert cli("--version").out.startswith("monorepo ")
    run = cli("--help")
    assert run.code == 0 and "Exit status: 0 success, 1 the operation failed" in run.out


# ------------------------------------------------------------------ exit codes per class


def test_exit_codes_per_failure_class(proj: Callable[..., Proj]) -> None:
    # 2: usage and configuration.
    assert cli("lock", "--no-such-flag").code == 2
    broken = proj([LIB], ["lib"], name="broken")
    (broken.root / "pyproject.toml").write_text(
        '[project]\nname = "p"\nversion = "0"\ndependencies = ["not a req!!"]\n'
    )
    run = cli("--project", broken.root, "lock")
    assert run.code == 2 and "dependencies" in run.err and "Traceback" not in run.err

    # 1: resolution impossible.
    conflict = proj(
        [
            Release("a", "1.0", requires_dist=("shared>=2",)),
            Release("b", "1.0", requires_dist=("shared<2",)),
            Release("shared", "1.0"),
            Release("shared", "2.0"),
        ],
        ["a", "b"],
    )
    run = cli("--project", conflict.root, "lock")
    assert run.code == 1 and "shared" in run.err and run.err.startswith("error: ")

    # 1: a stale lock (lock --check, and pull refusing it).
    p = proj([LIB, Release("lib", "2.0"), APP], ["app"])
    assert cli("--project", p.root, "lock").code == 0
    text = (p.root / "pyproject.toml").read_text().replace('["app"]', '["app", "lib>=2"]')
    (p.root / "pyproject.toml").write_text(text)
    assert cli("--project", p.root, "lock", "--check").code == 1
    assert cli("--project", p.root, "pull").code == 1
    assert cli("--project", p.root, "lock").code == 0

    # 1: a hash mismatch (the index serves other bytes than the lock records).
    # (A fresh cache directory: the lock's own download of the sdist is in the default one.)
    p.server.add_fault(r"/files/lib-2\.0\.tar\.gz", "corrupt", times=100)
    run = cli("--project", p.root, "pull", "--cache-dir", p.root.parent / "fresh-cache")
    assert run.code == 1 and "sha256" in run.err, run.err
    p.server.clear_faults()
    assert cli("--project", p.root, "pull").code == 0

    # 1: verify found a difference.
    (p.root / "duni" / "lib" / "added.txt").write_text("x")
    assert cli("--project", p.root, "verify").code == 1

    # 1: a network error (the index is gone).
    p.server.stop()
    run = cli("--project", p.root, "lock", "--upgrade")
    assert run.code == 1 and "127.0.0.1" in run.err, run.err


def test_a_failed_build_exits_1(proj: Callable[..., Proj]) -> None:
    broken = Release("broken", "1.0", files={BACKEND_FILE: BROKEN_BACKEND})
    p = proj([broken], ["broken"])
    assert cli("--project", p.root, "lock").code == 0
    assert cli("--project", p.root, "pull").code == 0
    run = cli("--project", p.root, "build", "--jobs", "1")
    assert run.code == 1 and "FAILED broken 1.0" in run.err
    unknown = cli("--project", p.root, "build", "--target", "nosuch")
    assert unknown.code == 2 and "nosuch" in unknown.err


# ------------------------------------------------------------------ --json errors


def test_json_errors_go_to_stdout_with_their_fields(proj: Callable[..., Proj]) -> None:
    conflict = proj(
        [Release("a", "1.0", requires_dist=("gone>=1",))],
        ["a"],
    )
    run = cli("--project", conflict.root, "lock", "--json")
    assert run.code == 1
    error = run.json()["error"]
    assert error["code"] == "resolution" and error["type"] == "ResolutionError"
    assert error["exit_code"] == 1 and "gone" in error["message"]
    assert run.err.startswith("error: ")  # the text stays on stderr as well

    usage = cli("lock", "--json", "--nope").json()["error"]
    assert usage == {
        "code": "usage",
        "type": "UsageError",
        "exit_code": 2,
        "message": usage["message"],
        "hint": "monorepo lock --help",
    }
    assert "--nope" in usage["message"]

    p = proj([LIB], ["lib"])
    assert cli("--project", p.root, "lock").code == 0
    p.server.add_fault(r"/files/lib-1\.0\.tar\.gz", "corrupt", times=100)
    fresh = p.root.parent / "fresh-cache"
    error = cli("--project", p.root, "--json", "pull", "--cache-dir", fresh).json()["error"]
    assert error["code"] == "hash-mismatch" and error["exit_code"] == 1
    assert error["package"] == "lib" and error["url"].endswith("/files/lib-1.0.tar.gz")


# ------------------------------------------------------------------ Ctrl-C


def interrupt_when(
    command: list[str | Path], ready: Callable[[str], bool], env: dict[str, str] | None = None
) -> tuple[Run, float]:
    """Start *command*, wait until *ready* (given its stderr so far), send SIGINT;
    returns its run and the seconds from the signal to its exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "monorepo", *map(str, command)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stderr is not None
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr or ()), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not ready("".join(err)):
        assert proc.poll() is None, "".join(err)
        assert time.monotonic() < deadline, "the command never got to the point to interrupt"
        time.sleep(0.05)
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    took = time.monotonic() - sent
    reader.join(timeout=10)
    out = proc.stdout.read() if proc.stdout is not None else ""
    return Run(proc.returncode, out, "".join(err), took), took


def test_ctrl_c_stops_a_lock_within_a_second(proj: Callable[..., Proj]) -> None:
    p = proj([LIB, APP], ["app"])
    p.server.add_fault(r"^/simple/app/", "slow", times=20, delay=8.0)
    run, took = interrupt_when(
        ["--project", p.root, "lock", "-v", "--no-progress"],
        lambda err: "Resolving for linux..." in err,
    )
    assert run.code == 130, run.err
    assert took < 1.0, f"took {took:.2f}s"
    assert "interrupted" in run.err and "left unfinished" in run.err
    assert "Traceback" not in run.err
    assert not (p.root / "pylock.toml").exists()


def test_ctrl_c_stops_a_pull_within_a_second(proj: Callable[..., Proj]) -> None:
    p = proj([LIB, APP], ["app"])
    assert cli("--project", p.root, "lock").code == 0
    p.server.add_fault(r"^/files/lib-1\.0\.tar\.gz", "slow", times=20, delay=8.0)
    # An empty download cache: the lock's sources pass already stored the sdists in the
    # usual one, and this pull must be stuck downloading when it is interrupted.
    fresh = p.root / "fresh-cache"
    run, took = interrupt_when(
        ["--project", p.root, "pull", "-v", "--no-progress", "--cache-dir", fresh],
        lambda err: "Pulling 2 packages into duni/..." in err,
    )
    assert run.code == 130, run.err
    assert took < 1.0, f"took {took:.2f}s"
    assert "left unfinished: Pulling 2 packages into duni/" in run.err, run.err
    p.server.clear_faults()
    assert cli("--project", p.root, "pull").code == 0  # the next run finishes the job


def test_ctrl_c_stops_a_build_and_its_backend_within_a_second(
    proj: Callable[..., Proj], tmp_path: Path
) -> None:
    sleepy = Release("sleepy", "1.0", files={BACKEND_FILE: SLEEPY_BACKEND})
    p = proj([sleepy], ["sleepy"])
    assert cli("--project", p.root, "lock").code == 0
    assert cli("--project", p.root, "pull").code == 0
    started = tmp_path / "started"
    run, took = interrupt_when(
        ["--project", p.root, "build", "--no-progress"],
        lambda err: started.exists(),
        env={"SLEEPY_STARTED": str(started)},
    )
    assert run.code == 130, run.err
    assert took < 1.0, f"took {took:.2f}s"
    assert "left unfinished: Building 1 packages" in run.err, run.err
    assert "sleepy 1.0" in run.err.split("left unfinished")[1]
    backend = int(started.read_text())
    deadline = time.monotonic() + 1.0
    while _running(backend) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(backend), "the build backend was left running"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


# ------------------------------------------------------------------ dry runs


def test_lock_and_pull_dry_runs_change_nothing(proj: Callable[..., Proj]) -> None:
    p = proj([LIB, APP, Release("lib", "2.0")], ["app", "lib<2"])
    run = cli("--project", p.root, "lock", "--dry-run")
    assert run.code == 0 and "would change" in run.err and " + lib 1.0" in run.err
    assert not (p.root / "pylock.toml").exists()
    assert cli("--project", p.root, "lock").code == 0

    run = cli("--project", p.root, "pull", "--dry-run")
    assert run.code == 0, run.err
    assert " + app" in run.err and "2 new, 0 changed, 0 unchanged, 0 removed (dry run" in run.err
    assert not (p.root / "duni").exists()
    assert cli("--project", p.root, "pull").code == 0
    data = cli("--project", p.root, "pull", "--dry-run", "--json").json()
    assert data["unchanged"] == ["app", "lib"] and data["updated"] == []

    (p.root / "duni" / "lib" / "edited.txt").write_text("x")
    text = (p.root / "pyproject.toml").read_text()
    (p.root / "pyproject.toml").write_text(text.replace('"app", "lib<2"', '"lib>=2"'))
    assert cli("--project", p.root, "lock").code == 0
    before = sorted(str(x) for x in (p.root / "duni").rglob("*"))
    run = cli("--project", p.root, "pull", "--dry-run")
    assert run.code == 0, run.err
    assert " ~ lib" in run.err and " - app" in run.err
    assert "0 new, 1 changed, 0 unchanged, 1 removed (dry run" in run.err
    assert "duni/lib (lib 2.0) was edited or not made by pull" in run.err
    assert sorted(str(x) for x in (p.root / "duni").rglob("*")) == before
