"""The library contract a build CLI relies on (docs/api.md): reporter events with stable
keys from several threads, per-package start and finish, totals that hold; typed errors
with structured fields; the example build CLI of docs/api.md, run as written; and the
CLI's inspection and housekeeping commands (tree, export, cache, completion)."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import monorepo
from fixtures.builder import Release
from monorepo._core.terminal import TerminalReporter, use_color
from monorepo.errors import HashMismatchError, MonorepoError, StaleLockError
from tests.helpers import MakeIndex, Serve

TARGET = '{ name = "linux", python = "3.11", platform = "linux", machine = "x86_64" }'
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Event:
    kind: str
    key: str
    thread: str
    total: int | None = None
    steps: int = 0


class RecordingReporter:
    """Every event with the thread it came from; thread-safe, as the contract asks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[Event] = []
        self.messages: list[tuple[str, str]] = []

    def task(self, key: str, description: str, total: int | None = None) -> None:
        with self.lock:
            self.events.append(Event("task", key, threading.current_thread().name, total))

    def advance(self, key: str, steps: int = 1) -> None:
        with self.lock:
            self.events.append(Event("advance", key, threading.current_thread().name, steps=steps))

    def done(self, key: str) -> None:
        with self.lock:
            self.events.append(Event("done", key, threading.current_thread().name))

    def message(self, level: str, text: str) -> None:
        with self.lock:
            self.messages.append((level, text))

    def by_key(self) -> dict[str, list[Event]]:
        out: dict[str, list[Event]] = {}
        for event in self.events:
            out.setdefault(event.key, []).append(event)
        return out


def check_contract(recorder: RecordingReporter) -> dict[str, list[Event]]:
    """Each key opened once, closed once, advanced only in between; steps add up to a total."""
    keys = recorder.by_key()
    for key, events in keys.items():
        kinds = [e.kind for e in events]
        assert kinds[0] == "task" and kinds[-1] == "done", (key, kinds)
        assert kinds.count("task") == 1 and kinds.count("done") == 1, (key, kinds)
        total = events[0].total
        if total is not None:
            assert sum(e.steps for e in events) == total, (key, total)
    return keys


@pytest.fixture
def project(
    make_index: MakeIndex, serve: Serve, make_project: Callable[..., Path]
) -> Callable[..., Path]:
    def factory(releases: list[Release], deps: list[str]) -> Path:
        server = serve(make_index(releases))
        deps_toml = ", ".join(f'"{d}"' for d in deps)
        return make_project(
            f'[project]\nname = "p"\nversion = "0"\ndependencies = [{deps_toml}]\n'
            f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}]\n'
        )

    return factory


SET = [
    Release(
        "app", "1.0", requires_dist=("lib>=1", "util", "extra-thing"), build_requires=("tool",)
    ),
    Release("lib", "1.0", requires_dist=("util",), build_requires=("tool",)),
    Release("util", "2.0"),
    Release("extra-thing", "0.5"),
    Release("tool", "1.0"),
]


def test_events_per_package_from_several_threads(project: Callable[..., Path]) -> None:
    proj = project(SET, ["app"])
    recorder = RecordingReporter()
    monorepo.lock(proj, reporter=recorder)
    keys = check_contract(recorder)
    assert "resolve:linux" in keys and "resolve:build" in keys and "sources" in keys

    recorder = RecordingReporter()
    monorepo.pull(proj, reporter=recorder, jobs=3)
    keys = check_contract(recorder)
    dirs = ["app", "extra-thing", "lib", "tool", "util"]
    assert sorted(k for k in keys if k.startswith("pull:")) == [f"pull:{d}" for d in dirs]
    assert keys["pull"][0].total == 5
    package_threads = {e.thread for k in dirs for e in keys[f"pull:{k}"]}
    assert all(t.startswith("pull") for t in package_threads)
    assert len(package_threads | {keys["pull"][0].thread}) > 1, "events from several threads"
    # Each package's task opens before the overall count moves past it and closes after.
    order = recorder.events
    for d in dirs:
        start = order.index(Event("task", f"pull:{d}", keys[f"pull:{d}"][0].thread))
        end = order.index(Event("done", f"pull:{d}", keys[f"pull:{d}"][-1].thread))
        assert start < end

    recorder = RecordingReporter()
    result = monorepo.build(proj, reporter=recorder, jobs=2)
    assert result.ok
    keys = check_contract(recorder)
    assert keys["build"][0].total == 5
    assert sorted(k for k in keys if k.startswith("build:")) == [f"build:{d}" for d in dirs]
    # A package starts building only after everything it needs has finished.
    position = {(e.kind, e.key): i for i, e in enumerate(recorder.events)}
    open_now, most = 0, 0  # an open package task is a running build: at most --jobs
    for event in recorder.events:
        if event.key.startswith("build:"):
            open_now += {"task": 1, "done": -1}.get(event.kind, 0)
            most = max(most, open_now)
    assert most <= 2
    assert position[("done", "build:tool")] < position[("task", "build:lib")]
    assert position[("done", "build:tool")] < position[("task", "build:app")]

    recorder = RecordingReporter()
    again = monorepo.build(proj, reporter=recorder)
    keys = check_contract(recorder)
    assert len(again.skipped) == 5 and list(keys) == ["build"]  # nothing ran: no package task


def test_terminal_reporter_is_thread_safe_and_tracks_open_tasks() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    reporter = TerminalReporter(verbose=0, quiet=False, stream=stream, color="never")
    reporter.task("all", "Everything", 8 * 50)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                key = f"pkg:{n}:{i}"
                reporter.task(key, f"pkg {n} {i}: working")
                reporter.advance(key)
                reporter.message("info", f"line {n} {i}")
                reporter.done(key)
                reporter.advance("all")
        except BaseException as error:  # pragma: no cover - the failure being tested
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    [left] = reporter.unfinished()
    assert left.key == "all" and left.completed == 400 and left.summary().endswith("(400/400 done)")
    reporter.done("all")
    reporter.close()
    assert reporter.unfinished() == []
    assert "line 7 49" in stream.getvalue()


def test_color_follows_the_flag_and_no_color() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert use_color("auto", Tty(), {}) is True
    assert use_color("auto", Tty(), {"NO_COLOR": "1"}) is False
    assert use_color("always", io.StringIO(), {"NO_COLOR": "1"}) is True
    assert use_color("never", Tty(), {}) is False
    assert use_color("auto", io.StringIO(), {}) is False
    stream = io.StringIO()
    TerminalReporter(verbose=0, quiet=False, stream=stream, color="always").message("warning", "x")
    assert stream.getvalue() == "\x1b[1;33mwarning\x1b[0m: x\n"


def test_errors_carry_fields_across_processes() -> None:
    error = HashMismatchError("lib 1.0: bad bytes", package="lib", url="http://x/lib.tar.gz")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is HashMismatchError and str(copy) == "lib 1.0: bad bytes"
    assert copy.to_dict() == {
        "code": "hash-mismatch",
        "type": "HashMismatchError",
        "message": "lib 1.0: bad bytes",
        "exit_code": 1,
        "package": "lib",
        "url": "http://x/lib.tar.gz",
    }
    stale = pickle.loads(pickle.dumps(StaleLockError("stale", ["a was added"])))
    assert stale.reasons == ("a was added",) and stale.to_dict()["reasons"] == ["a was added"]
    assert MonorepoError("x").annotate(package="p", path=Path("/a")).fields() == {
        "package": "p",
        "path": "/a",
    }


def test_every_documented_error_is_exported() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    table = text.split("| class | code | exit | raised when |")[1].split("\n\n")[0]
    rows = re.findall(r"^\| `(\w+)` \| `([\w-]+)` \| (\d) \|", table, re.M)
    assert len(rows) >= 20
    for name, code, exit_code in rows:
        cls = getattr(monorepo, name)
        assert issubclass(cls, monorepo.MonorepoError) and name in monorepo.__all__
        assert (cls.code, cls.exit_code) == (code, int(exit_code)), name


def _example_cli(tmp_path: Path) -> Path:
    text = (ROOT / "docs" / "api.md").read_text()
    block = text.split("<!-- example-build-cli -->\n```python\n")[1].split("```\n")[0]
    script = tmp_path / "mybuild.py"
    script.write_text(block)
    return script


def test_the_example_build_cli_of_the_docs_runs(
    project: Callable[..., Path], tmp_path: Path
) -> None:
    script = _example_cli(tmp_path)
    proj = project(SET, ["app"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, str(script), str(proj)], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr
    assert "mybuild: 5 built, 0 up to date" in run.stdout
    lines = run.stderr.splitlines()
    for d in ("app", "lib", "util", "extra-thing", "tool"):
        for phase in ("pull", "build"):
            starts = [i for i, x in enumerate(lines) if x.startswith(f"start {phase}:{d}:")]
            ends = [i for i, x in enumerate(lines) if x.startswith(f"end   {phase}:{d}:")]
            assert len(starts) == len(ends) == 1 and starts[0] < ends[0], (phase, d)
    assert any(x.startswith("end   build: 5/5 in ") for x in lines)

    # Its error handling: a conflict is a ResolutionError, exit 1, worded by the tool.
    conflict = project(
        [Release("a", "1.0", requires_dist=("gone>=2",)), Release("gone", "1.0")], ["a"]
    )
    run = subprocess.run(
        [sys.executable, str(script), str(conflict)], capture_output=True, text=True, env=env
    )
    assert run.returncode == 1 and "mybuild: the requirements conflict:" in run.stderr
    missing = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert missing.returncode == 2 and "mybuild: fix " in missing.stderr


# ------------------------------------------------------------------ tree, export, cache


def cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monorepo", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


BUILT_WITH = [
    Release("app", "1.0", requires_dist=("lib",), build_requires=("maker>=1",)),
    Release("lib", "1.0"),
    Release("maker", "1.0"),
]


def test_tree_marks_build_only_packages(project: Callable[..., Path]) -> None:
    proj = project(BUILT_WITH, ["app"])
    run = cli("--project", proj, "lock")
    assert run.returncode == 0, run.stderr
    assert "Locked 3 packages (2 runtime, 1 build-only)" in run.stderr
    assert " + maker 1.0  (build-only)" in run.stderr
    run = cli("tree", cwd=proj)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "target linux",
        "project",
        "└── app 1.0",
        "    ├── lib 1.0",
        "    └── maker 1.0 (build-only)",
    ]
    assert cli("tree", "--no-build", cwd=proj).stdout.count("maker") == 0
    assert cli("tree", "--depth", "1", cwd=proj).stdout.splitlines()[-1] == "└── app 1.0"
    data = json.loads(cli("tree", "--json", cwd=proj).stdout)
    app = data[0]["scopes"][0]["packages"][0]
    assert [(c["name"], c["role"], c["via"]) for c in app["children"]] == [
        ("lib", "runtime", "runtime"),
        ("maker", "build", "build"),
    ]
    bad = cli("tree", "--target", "nosuch", cwd=proj)
    assert bad.returncode == 2 and "no target 'nosuch'" in bad.stderr


def test_export_requirements_with_hashes(project: Callable[..., Path], tmp_path: Path) -> None:
    proj = project(BUILT_WITH, ["app"])
    assert cli("--project", proj, "lock").returncode == 0
    doc = monorepo.read_lock(proj / "pylock.toml")
    sha = {str(p.name): getattr(p.source, "sha256", "") for p in doc.packages}
    run = cli("export", "--format", "requirements-txt", cwd=proj)
    assert run.returncode == 0, run.stderr
    assert f"app==1.0 \\\n    --hash=sha256:{sha['app']}\n" in run.stdout
    assert f"lib==1.0 \\\n    --hash=sha256:{sha['lib']}\n" in run.stdout
    assert "maker==" not in run.stdout.split("# build-only")[0]
    assert "# build-only packages (not installed): maker==1.0" in run.stdout
    out = tmp_path / "req.txt"
    assert cli("export", "-o", out, "--target", "linux", cwd=proj).returncode == 0
    assert out.read_text() == run.stdout == monorepo.export_requirements(proj)
    assert cli("export", "--format", "nosuch", cwd=proj).returncode == 2


def test_cache_dir_and_clean(tmp_path: Path) -> None:
    cache = tmp_path / "c"
    (cache / "http").mkdir(parents=True)
    (cache / "http" / "x").write_text("x")
    (cache / "stray").write_text("y")
    run = cli("cache", "dir", "--cache-dir", cache)
    assert run.returncode == 0 and run.stdout.strip() == str(cache)
    assert cli("cache", "dir").stdout.strip() == os.environ["MONOREPO_CACHE_DIR"]
    run = cli("--cache-dir", cache, "cache", "clean")
    assert run.returncode == 0 and "2 entries removed" in run.stderr
    assert cache.is_dir() and list(cache.iterdir()) == []


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str, tmp_path: Path) -> None:
    run = cli("completion", shell)
    assert run.returncode == 0 and "lock" in run.stdout and "exclude-newer" in run.stdout
    if shell == "bash":
        script = tmp_path / "c.bash"
        script.write_text(run.stdout)
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
        probe = (
            f"source {script}; COMP_WORDS=(monorepo lock --exc); COMP_CWORD=2; _monorepo;"
            ' echo "${COMPREPLY[@]}"'
        )
        done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
        assert done.stdout.split() == ["--exclude-newer"]
    elif shutil.which(shell):  # pragma: no cover - depends on the machine
        script = tmp_path / f"c.{shell}"
        script.write_text(run.stdout)
        assert subprocess.run([shell, "-n", str(script)]).returncode == 0
