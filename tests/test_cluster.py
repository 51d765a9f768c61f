"""``monorepo build --executor dask://``: a real Dask scheduler and worker processes on loopback.

Nothing is mocked: the scheduler and the workers are ``python -m distributed.cli.*``
subprocesses of this interpreter (so they run this checkout's monorepo), each worker
with its own scratch directory and no file of the project: what it builds from comes
through Dask, content-addressed.  One worker advertises the aarch64 target as a Dask
resource, the other does not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import monorepo
from fixtures.builder import BACKEND_SOURCE, Release
from monorepo._core.reporter import NullReporter
from monorepo.building.buildenv import file_sha256
from monorepo.building.builder import build
from monorepo.building.cluster import DaskExecutor
from monorepo.building.executors import check_executor_spec
from monorepo.building.plan import Graph, load_plan
from monorepo.building.remote import (
    WORKER_DIR_ENV,
    RemoteJob,
    machine_identity,
    pack_tree,
    run_build,
)
from monorepo.building.results import BuildResult
from monorepo.building.targets import Variant
from monorepo.errors import BuildError, ConfigError
from monorepo.project.config import load_config, parse_config
from monorepo.sources.treehash import tree_hash
from tests import test_build, test_crates
from tests.test_build import APP, HELPER, LIB, TINYBACKEND, cext, names, needs_cross, with_backend

distributed = pytest.importorskip("distributed")

# test_build's project fixtures (locked and pulled from a fixture index), and test_crates'
# Rust extension with its registry of crates, shared
project = test_build.project
cross_project = test_build.cross_project
registry = test_crates.registry
rust_project = test_crates.rust_project

ARM_RESOURCE = "target-linux-aarch64"


class Cluster:
    """A Dask scheduler and named worker processes, started and killed by the test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        self.env.pop("MONOREPO_CACHE_DIR", None)
        scheduler_file = root / "scheduler.json"
        self.scheduler_file = scheduler_file
        self.procs["scheduler"] = self._spawn(
            "scheduler",
            [
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
        )
        deadline = time.monotonic() + 60
        while not scheduler_file.is_file() or not scheduler_file.read_text().strip():
            assert time.monotonic() < deadline, self.log("scheduler")
            time.sleep(0.1)
        self.address = str(json.loads(scheduler_file.read_text())["address"])
        self.client: Any = distributed.Client(self.address, timeout=30, set_as_default=False)

    @property
    def url(self) -> str:
        return "dask://" + self.address.removeprefix("tcp://")

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Any:
        log = (self.root / f"{name}.log").open("wb")
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env or self.env,
            cwd=self.root,
        )

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")[-3000:]

    def scratch(self, name: str) -> Path:
        return self.root / "work" / name

    def start_worker(self, name: str, *, resources: str = "") -> None:
        args = [
            "distributed.cli.dask_worker",
            "--scheduler-file",
            str(self.scheduler_file),
            "--name",
            name,
            "--nthreads",
            "1",
            "--no-nanny",
            "--no-dashboard",
            "--local-directory",
            str(self.root / "dask" / name),
        ]
        if resources:
            args += ["--resources", resources]
        env = {**self.env, WORKER_DIR_ENV: str(self.scratch(name))}
        self.procs[name] = self._spawn(name, args, env)
        deadline = time.monotonic() + 60
        while name not in self.workers():
            assert self.procs[name].poll() is None and time.monotonic() < deadline, self.log(name)
            time.sleep(0.1)

    def workers(self) -> dict[str, str]:
        """Worker name -> address."""
        info = self.client.scheduler_info()["workers"]
        return {str(w["name"]): str(addr) for addr, w in info.items()}

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        self.client.close()
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One scheduler, a worker with the aarch64 target and one without, for the module."""
    cluster = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        cluster.start_worker("cross", resources=f"{ARM_RESOURCE}=1")
        cluster.start_worker("plain")
        yield cluster
    finally:
        cluster.stop()


def hashes(result: BuildResult) -> dict[str, str]:
    return {p.dir: file_sha256(p.wheel) for p in result.built + result.skipped if p.wheel}


def built_on(result: BuildResult) -> dict[str, str]:
    """Package dir -> the worker address its log says it was built on."""
    where: dict[str, str] = {}
    for p in result.built:
        assert p.log is not None
        lines = [ln for ln in p.log.read_text().splitlines() if "built on Dask worker" in ln]
        where[p.dir] = lines[-1].split("worker ")[1].split(" ")[0]
    return where


# ---------------------------------------------------------------------------- tests


def test_pack_tree_round_trips_to_the_same_tree_hash(tmp_path: Path) -> None:
    from monorepo.extract.archive import extract_archive

    src = tmp_path / "src"
    (src / "pkg" / "empty").mkdir(parents=True)
    (src / "pkg" / "a.py").write_text("a = 1\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    (src / "link").symlink_to("pkg/a.py")
    data = pack_tree(src)
    assert pack_tree(src) == data  # the same bytes every time
    extract_archive(data, tmp_path / "out", package="t", name="tree.tar", layout="tree")
    assert tree_hash(tmp_path / "out") == tree_hash(src)


def test_a_worker_refuses_inputs_that_are_not_what_their_address_says(
    project: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_build in this process (the task a worker runs): hostile or mismatched inputs
    are refused before anything is built, with a message naming the worker and the fix."""
    monkeypatch.setenv(WORKER_DIR_ENV, str(tmp_path / "worker"))
    proj = project([LIB, HELPER], ["lib", "helper"])
    config = load_config(proj)
    _, pkgs = load_plan(config)
    variant = Variant(config.targets[0], tmp_path / "v", tmp_path / "v" / "wheels", cross=False)
    tree = tree_hash(config.duni / "lib")
    job = RemoteJob(
        config=config,
        pkg=pkgs["lib"],
        variant=variant,
        graph=Graph(pkgs),
        needs=frozenset(),
        wheels={},
        tree=tree,
        isolate=False,
        machine=machine_identity(),
    )
    good = pack_tree(config.duni / "lib")
    other = pack_tree(config.duni / "helper")
    refused = run_build(job, other, {})
    assert refused.kind == "failed" and "damaged on the way" in refused.reason
    assert not (tmp_path / "worker" / "trees" / tree.removeprefix("sha256:") / "lib").exists()
    old = dataclasses.replace(job, machine=("0.0.1", *job.machine[1:]))
    refused = run_build(old, good, {})
    assert "client runs monorepo 0.0.1" in refused.reason and "same installation" in refused.reason
    bad_wheel = dataclasses.replace(
        job,
        needs=frozenset({"helper"}),
        wheels={"helper": ("helper-1.0-py3-none-any.whl", "0" * 64)},
    )
    refused = run_build(bad_wheel, good, {"helper": b"PK not a wheel"})
    assert "arrived damaged" in refused.reason
    built = run_build(job, good, {})
    assert built.kind == "built", built.reason
    assert built.wheel_name == "lib-1.0-py3-none-any.whl"
    assert hashlib.sha256(built.wheel).hexdigest() == built.sha256
    assert b"build_wheel" in built.log


def test_cluster_build_gives_the_local_wheels(
    project: Callable[..., Path], cluster: Cluster, tmp_path: Path
) -> None:
    # dyn's backend asks for helper only when asked (get_requires_for_build_wheel)
    dyn = with_backend(
        "dyn", test_build.DYNAMIC_BACKEND, files={"dynamic-requires.txt": "helper>=1\n"}
    )
    proj = project(
        [TINYBACKEND, HELPER, APP, LIB, cext("fastthing"), dyn], ["app", "fastthing", "dyn"]
    )
    remote = build(proj, executor=cluster.url, out=tmp_path / "remote")
    assert remote.ok, [(p.label, p.reason, p.tail) for p in remote.failed]
    assert names(remote.built) == ["app", "dyn", "fastthing", "helper", "lib", "tinybackend"]
    where = built_on(remote)
    assert set(where.values()) <= set(cluster.workers().values())
    for p in remote.built:
        assert p.wheel is not None and p.wheel.parent == tmp_path / "remote"
        assert p.log is not None and "# ---- build_wheel ----" in p.log.read_text()
    # the workers built from what travelled, in their own directories
    assert str(proj) not in "".join(p.log.read_text() for p in remote.built if p.log)
    local = build(proj, out=tmp_path / "local", build_cache=False)
    assert names(local.built) == names(remote.built)
    assert hashes(local) == hashes(remote)


def slow_backend(marker: Path, seconds: float) -> str:
    """The fixture backend, announcing each build_wheel in *marker* and taking *seconds*."""
    return (
        BACKEND_SOURCE + "\n\n_plain_build_wheel = build_wheel\n\n\n"
        "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n"
        "    import time\n"
        f"    open({str(marker)!r} + '/%d' % os.getpid(), 'w').close()\n"
        f"    time.sleep({seconds})\n"
        "    return _plain_build_wheel(wheel_directory, config_settings, metadata_directory)\n"
    )


def test_ctrl_c_cancels_the_clusters_tasks(
    project: Callable[..., Path], cluster: Cluster, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    marker.mkdir()
    slow = slow_backend(marker, 6)
    proj = project([with_backend("sloth", slow), with_backend("snail", slow)], ["sloth", "snail"])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monorepo",
            "--project",
            str(proj),
            "build",
            "--executor",
            cluster.url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not list(marker.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"interrupted" in err
    assert time.monotonic() - started < 5  # not waiting for the 6-second builds

    def builds(dask_scheduler: Any) -> list[str]:
        return [str(k) for k in dask_scheduler.tasks if str(k).startswith("monorepo-build")]

    deadline = time.monotonic() + 10
    while cluster.client.run_on_scheduler(builds):
        assert time.monotonic() < deadline, cluster.client.run_on_scheduler(builds)
        time.sleep(0.1)
    assert not list((proj / "duni-build" / "native" / "wheels").glob("*.whl"))


def test_a_worker_killed_during_a_build_is_survived(
    project: Callable[..., Path], cluster: Cluster, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    marker.mkdir()
    proj = project([with_backend("slowpoke", slow_backend(marker, 3)), LIB], ["slowpoke", "lib"])
    with (proj / "pyproject.toml").open("a") as fh:  # the cluster named in [tool.monorepo]
        fh.write(f'executor = "{cluster.url}"\n')
    cluster.start_worker("doomed")
    outcome: list[BuildResult | BaseException] = []

    def run() -> None:
        try:
            outcome.append(build(proj))
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    victim = ""
    try:
        deadline = time.monotonic() + 60
        while not victim:
            assert time.monotonic() < deadline and thread.is_alive(), outcome
            if list(marker.iterdir()):
                for address, keys in cluster.client.processing().items():
                    if any(str(k).startswith("monorepo-build-slowpoke") for k in keys):
                        victim = {a: n for n, a in cluster.workers().items()}[address]
            time.sleep(0.05)
        cluster.kill(victim)
    finally:
        thread.join(timeout=120)
        if victim != "doomed" and "doomed" in cluster.procs:
            cluster.kill("doomed")
        if victim and victim != "doomed":  # keep the module's cluster as it was
            cluster.start_worker(victim, resources=f"{ARM_RESOURCE}=1" if victim == "cross" else "")
    (result,) = outcome
    assert isinstance(result, BuildResult)
    assert result.ok, [(p.label, p.reason, p.tail) for p in result.failed]
    assert names(result.built) == ["lib", "slowpoke"]
    assert len(list(marker.iterdir())) == 2  # started twice: once on the killed worker


@needs_cross
def test_only_workers_advertising_the_target_build_for_it(
    cross_project: Callable[..., Path], cluster: Cluster
) -> None:
    proj = cross_project(
        [cext("fastthing"), LIB, Release("other", "1.0")], ["fastthing", "lib", "other"]
    )
    result = build(proj, target="arm", executor=cluster.url)
    assert result.ok, [(p.label, p.reason, p.tail) for p in result.failed]
    target_built = sorted(p.dir for p in result.built if not p.host)
    assert target_built == ["fastthing", "lib", "other"]
    where = built_on(result)
    cross = cluster.workers()["cross"]
    assert {where[d] for d in target_built} == {cross}
    assert not (cluster.scratch("plain") / "builds" / "arm").exists()
    wheel = next(p.wheel for p in result.built if p.dir == "fastthing")
    assert wheel is not None and wheel.name.endswith("linux_aarch64.whl")


@test_crates.needs_rust
def test_a_rust_extension_builds_on_the_cluster_from_crates_sent_along(
    rust_project: Callable[..., tuple[Path, Any]], cluster: Cluster, tmp_path: Path
) -> None:
    import zipfile

    proj, server = rust_project()
    monorepo.lock(proj)
    monorepo.pull(proj)
    server.stop()
    result = build(proj, executor=cluster.url)
    assert result.ok, [(p.label, p.reason, p.tail) for p in result.failed]
    (built,) = [p for p in result.built if p.dir == "rustthing"]
    assert built.wheel is not None and built.log is not None
    assert "pebble-two" in built.log.read_text()
    where = built_on(result)["rustthing"]
    name = {a: n for n, a in cluster.workers().items()}[where]
    assert list((cluster.scratch(name) / "trees").glob("*/.crates/pebble-two-0.1.0/src/lib.rs"))
    zipfile.ZipFile(built.wheel).extractall(tmp_path / "unpacked")
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


def test_unknown_executor_and_unreachable_scheduler_are_errors() -> None:
    for spec in ("ray://x:1", "dask://nohost", "dask://h:1/x", "dask://:1"):
        with pytest.raises(BuildError, match="dask://HOST:PORT"):
            check_executor_spec(spec, where="--executor")
    assert check_executor_spec("dask://h:8786", where="x") == "dask://h:8786"
    config = parse_config(
        {"tool": {"monorepo": {"executor": "dask://h:1"}}}, pyproject=Path("p/pyproject.toml")
    )
    assert config.executor == "dask://h:1"
    with pytest.raises(ConfigError, match="executor"):
        parse_config({"tool": {"monorepo": {"executor": 1}}}, pyproject=Path("p/pyproject.toml"))
    with pytest.raises(
        BuildError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"
    ):
        DaskExecutor("tcp://127.0.0.1:9", reporter=NullReporter(), timeout=2)


registry = test_crates.registry
rust_project = test_crates.rust_project


@test_crates.needs_rust
def test_rust_extension_builds_on_a_worker_from_the_crates_sent(
    rust_project: Callable[..., tuple[Path, Any]], cluster: Cluster, tmp_path: Path
) -> None:
    """The worker gets the package's vendored crates as content-addressed trees, checked."""
    import monorepo

    proj, server = rust_project()
    monorepo.lock(proj)
    monorepo.pull(proj)
    server.stop()
    remote = build(proj, executor=cluster.url, out=tmp_path / "remote")
    assert remote.ok, [(p.label, p.reason, p.tail) for p in remote.failed]
    assert "rustthing" in built_on(remote)
    local = build(proj, out=tmp_path / "local", build_cache=False)
    assert hashes(local)["rustthing"] == hashes(remote)["rustthing"]
