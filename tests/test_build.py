"""End-to-end tests of `monorepo build`: real sdists, locked, pulled and built offline.

Every package here is a real sdist from the fixture index with a real PEP 517
backend in it (variants of the fixture backend: one compiles a C extension with the
system compiler, one is itself a build backend for other packages, others misbehave
on purpose).  They are locked and pulled like any project, then built by
``monorepo.build`` in a venv it creates, through pyproject-hooks subprocesses.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import monorepo
from fixtures.builder import BACKEND_SOURCE, FixtureIndex, Release
from fixtures.server import IndexServer
from monorepo._core.isolation import network_isolation
from monorepo._core.reporter import RecordingReporter
from monorepo.building import builder as builder_mod
from monorepo.building.builder import build
from monorepo.building.elfcheck import (
    EM_AARCH64,
    EM_X86_64,
    check_wheel,
    platform_tag_matches,
    read_elf_header,
)
from monorepo.building.results import BuildResult
from monorepo.building.syslibs import check_system_libraries
from monorepo.cli.commands import main
from monorepo.errors import BuildError, StaleLockError
from monorepo.project.targets import host_target
from monorepo.vendoring.workspace import render
from tests.helpers import write_overlay

HOST = host_target()
ROOT = Path(__file__).resolve().parent.parent
TARGET = (
    f'{{ name = "native", python = "{HOST.python}", platform = "{HOST.platform}",'
    f' machine = "{HOST.machine}" }}'
)
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="builds are tested on Linux"
)

# ------------------------------------------------------------------ fixture backends

BACKEND_FILE = "_fixture_backend/fixture_backend.py"

C_SOURCE = r"""
#include <Python.h>
#include HEADER

static PyObject *answer(PyObject *self, PyObject *args) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speed", NULL, -1, methods};
PyMODINIT_FUNC PyInit__speed(void) { return PyModule_Create(&module); }
"""

# Compiles <pkg>/_speed.c with $CC like a setuptools extension would; like pyyaml and
# markupsafe it silently falls back to pure Python when that fails (unless CEXT_STRICT=1).
CEXT_BACKEND = (
    BACKEND_SOURCE
    + r"""

import subprocess as _subprocess
import sys as _sys
import sysconfig as _sysconfig


def _binary_tag():
    plat = _sysconfig.get_platform().replace("-", "_").replace(".", "_")
    py = "cp%d%d" % _sys.version_info[:2]
    return py + "-" + py + "-" + plat


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    cfg = _read_config()
    tree = _walk(".")
    pkg = cfg["import-name"]
    files = dict(package_files(cfg, tree))
    tag = "py3-none-any"
    source = pkg + "/_speed.c"
    if source in tree:
        suffix = _sysconfig.get_config_var("EXT_SUFFIX")
        os.makedirs("build", exist_ok=True)
        out = os.path.join("build", "_speed" + suffix)
        cmd = os.environ.get("CC", "cc").split() + ["-shared", "-fPIC"]
        cmd += ["-I" + _sysconfig.get_path("include")] + os.environ.get("CFLAGS", "").split()
        cmd += [source, "-o", out]
        print(" ".join(cmd), flush=True)
        if _subprocess.run(cmd).returncode == 0:
            with open(out, "rb") as fh:
                files[pkg + "/_speed" + suffix] = fh.read()
            tag = _binary_tag()
        elif os.environ.get("CEXT_STRICT") == "1":
            raise RuntimeError("the C extension did not compile and CEXT_STRICT=1")
        else:
            print("WARNING: the C extension could not be compiled, building pure Python")
    name = wheel_name(cfg, tag)
    with open(os.path.join(wheel_directory, name), "wb") as fh:
        fh.write(wheel_bytes(cfg, sorted(files.items()), tag))
    return name
"""
)

# Asks for more build requirements at build time, like hatchling's in-tree backend.
DYNAMIC_BACKEND = (
    BACKEND_SOURCE
    + r"""

def get_requires_for_build_wheel(config_settings=None):
    with open("dynamic-requires.txt", encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]
"""
)

BROKEN_BACKEND = (
    BACKEND_SOURCE
    + r"""

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    print("BOOM: the broken fixture backend gives up here", flush=True)
    raise RuntimeError("fixture failure for the test")
"""
)

# Tries the network in every way a backend might, swallowing the errors, then builds.
NETWORK_BACKEND = (
    BACKEND_SOURCE
    + r"""

_plain_build_wheel = build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    import socket
    import subprocess
    import urllib.request

    port = int(os.environ["NET_TEST_PORT"])
    attempts = [
        lambda: urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=60).read(),
        lambda: socket.create_connection(("127.0.0.1", port), timeout=60).close(),
        lambda: socket.getaddrinfo("localhost", port),
        lambda: subprocess.run(
            ["bash", "-c", "echo hi > /dev/tcp/127.0.0.1/%d" % port], timeout=60, check=True
        ),
    ]
    for attempt in attempts:
        try:
            attempt()
            print("network attempt succeeded", flush=True)
        except Exception as error:
            print("network attempt failed:", repr(error), flush=True)
    return _plain_build_wheel(wheel_directory, config_settings, metadata_directory)
"""
)

SLOW_BACKEND = (
    BACKEND_SOURCE
    + r"""

_plain_build_wheel = build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    import time

    start = time.time()
    time.sleep(1.0)
    with open(os.environ["BUILD_TIMES"], "a", encoding="utf-8") as fh:
        fh.write("%f %f\n" % (start, time.time()))
    return _plain_build_wheel(wheel_directory, config_settings, metadata_directory)
"""
)


WARNING_BACKEND = (
    BACKEND_SOURCE
    + r"""

_plain_build_wheel = build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    import warnings

    warnings.warn("fixture backend warning 7f3a: deprecated config")
    return _plain_build_wheel(wheel_directory, config_settings, metadata_directory)
"""
)


def cext(name: str, header: str = "<Python.h>", **kw: Any) -> Release:
    pkg = name.replace("-", "_")
    return Release(
        name,
        "1.0",
        files={
            BACKEND_FILE: CEXT_BACKEND,
            f"{pkg}/_speed.c": C_SOURCE.replace("HEADER", header),
        },
        **kw,
    )


def with_backend(name: str, source: str, **kw: Any) -> Release:
    files = dict(kw.pop("files", {}))
    files[BACKEND_FILE] = source
    return Release(name, kw.pop("version", "1.0"), files=files, **kw)


# A build backend distributed as a package (built by the in-tree fixture backend), that
# needs its runtime dependency `helper` when it runs: "a backend that needs another backend".
TINYBACKEND = Release(
    "tinybackend",
    "1.0",
    requires_dist=("helper>=1",),
    files={"tinybackend/__init__.py": BACKEND_SOURCE + "\nimport helper  # noqa: E402\n"},
)
HELPER = Release("helper", "1.0")
APP = Release(
    "app",
    "2.0",
    requires_dist=("lib",),
    build_backend="tinybackend",
    build_requires=("tinybackend",),
)
LIB = Release("lib", "1.0")


# ------------------------------------------------------------------------ helpers


@pytest.fixture
def project(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
    tmp_path: Path,
) -> Callable[..., Path]:
    """``project(releases, deps, overlay={pkg: rules})``: locked and pulled, ready to build."""

    def factory(
        releases: list[Release], deps: list[str], overlay: dict[str, str] | None = None
    ) -> Path:
        server = serve(make_index(releases))
        deps_toml = ", ".join(f'"{d}"' for d in deps)
        extra = ""
        if overlay is not None:
            write_overlay(tmp_path / "proj" / "fixes", "test", overlay)
            extra = 'overlays = ["fixes"]\n'
        proj = make_project(
            f'[project]\nname = "p"\nversion = "0"\ndependencies = [{deps_toml}]\n'
            f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}]\n{extra}'
        )
        monorepo.lock(proj)
        monorepo.pull(proj)
        server.stop()  # building is offline: nothing may need the index any more
        return proj

    return factory


def names(packages: list[Any]) -> list[str]:
    return sorted(p.dir for p in packages)


def wheel_members(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def import_from_wheels(wheels: list[Path], code: str, tmp_path: Path) -> str:
    """Run *code* with the wheels unpacked on sys.path, in a fresh interpreter."""
    target = tmp_path / "unpacked"
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(target)
    proc = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {code}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


# --------------------------------------------------------------------------- tests


def test_backend_packages_build_in_order_offline(
    project: Callable[..., Path], tmp_path: Path
) -> None:
    proj = project([TINYBACKEND, HELPER, APP, LIB], ["app"])
    reporter = RecordingReporter()
    result = build(proj, reporter=reporter)
    assert result.ok, result.failed
    assert names(result.built) == ["app", "helper", "lib", "tinybackend"]
    wheels = {p.dir: p.wheel for p in result.built}
    assert all(w is not None and w.parent == result.wheels for w in wheels.values())
    assert result.wheels == proj / "duni-build" / "native" / "wheels"
    app_wheel = wheels["app"]
    assert app_wheel is not None and app_wheel.name == "app-2.0-py3-none-any.whl"
    assert "app/__init__.py" in wheel_members(app_wheel)
    # app's build venv got the backend package and its runtime dependency, nothing else
    env = proj / "duni-build" / "native" / "envs" / "app"
    site = next(env.glob("lib/python*/site-packages"))
    assert (site / "tinybackend" / "__init__.py").is_file()
    assert (site / "helper" / "__init__.py").is_file()
    assert not (site / "lib").exists() and not (site / "app").exists()
    assert not list(site.glob("pip*"))
    # the order respects what each build needs
    built_order = [p.dir for p in sorted(result.built, key=lambda p: p.log.stat().st_mtime_ns)]  # type: ignore[union-attr]
    assert built_order.index("tinybackend") < built_order.index("app")
    assert built_order.index("helper") < built_order.index("app")
    # nothing was written into duni/
    assert not list((proj / "duni").rglob("*.whl"))
    assert not (proj / "duni" / "app" / "build").exists()
    assert any("built app 2.0" in text for _, text in reporter.messages)
    out = import_from_wheels(
        [w for w in wheels.values() if w is not None],
        "import app, lib; print(app.__version__)",
        tmp_path,
    )
    assert out == "2.0"


def test_a_second_build_skips_everything_and_an_edit_rebuilds_dependents(
    project: Callable[..., Path],
) -> None:
    proj = project([TINYBACKEND, HELPER, APP, LIB], ["app"])
    first = build(proj)
    assert first.ok
    second = build(proj)
    assert second.built == []
    assert names(second.skipped) == ["app", "helper", "lib", "tinybackend"]
    # a local edit to the backend's source rebuilds it and what it built, not the rest
    init = proj / "duni" / "tinybackend" / "tinybackend" / "__init__.py"
    init.write_text(init.read_text() + "\nEDITED = True\n")
    third = build(proj)
    assert names(third.built) == ["app", "tinybackend"]
    assert names(third.skipped) == ["helper", "lib"]
    assert any("tinybackend" in w and "differs" in w for w in third.warnings)
    # a wheel removed from the output directory comes back from the build cache, or is
    # built again without it
    lib_wheel = next(p.wheel for p in third.skipped if p.dir == "lib")
    assert lib_wheel is not None
    lib_wheel.unlink()
    fourth = build(proj)
    assert names(fourth.cached) == ["lib"] and fourth.built == []
    assert lib_wheel.is_file()
    lib_wheel.unlink()
    fifth = build(proj, build_cache=False)
    assert names(fifth.built) == ["lib"]
    assert lib_wheel.is_file()


def test_out_and_package_selection(project: Callable[..., Path], tmp_path: Path) -> None:
    proj = project([TINYBACKEND, HELPER, APP, LIB], ["app"])
    out = tmp_path / "elsewhere"
    result = build(proj, out=out, packages=["APP"])
    assert result.ok
    # app plus what its build needs; lib is only a runtime dependency
    assert names(result.built) == ["app", "helper", "tinybackend"]
    assert sorted(p.name for p in out.iterdir()) == [
        "app-2.0-py3-none-any.whl",
        "helper-1.0-py3-none-any.whl",
        "tinybackend-1.0-py3-none-any.whl",
    ]
    with pytest.raises(BuildError, match="nosuch"):
        build(proj, packages=["nosuch"])
    with pytest.raises(BuildError, match="no target named 'other'"):
        build(proj, target="other")


def test_c_extension_builds_for_this_machine(project: Callable[..., Path], tmp_path: Path) -> None:
    proj = project([cext("fastthing")], ["fastthing"])
    result = build(proj)
    assert result.ok, result.failed
    (built,) = result.built
    assert built.wheel is not None
    assert built.wheel.name.endswith(f"-linux_{HOST.machine}.whl")
    sos = [m for m in wheel_members(built.wheel) if m.endswith(".so")]
    assert len(sos) == 1 and sos[0].startswith("fastthing/_speed.")
    out = import_from_wheels(
        [built.wheel], "import fastthing._speed as s; print(s.answer())", tmp_path
    )
    assert out == "42"


def test_c_extension_missing_its_library_is_caught(project: Callable[..., Path]) -> None:
    rule = '[[rule]]\nversions = ""\nreason = "has a C extension"\nc-extension = true\n'
    releases = [cext("yamlish", header="<monorepo_no_such_library.h>"), cext("plain"), LIB]
    proj = project(releases, ["yamlish", "plain", "lib"], overlay={"yamlish": rule, "plain": rule})
    result = build(proj)
    assert names(result.failed) == ["yamlish"]
    assert names(result.built) == ["lib", "plain"]
    (failed,) = result.failed
    assert "no extension module" in failed.reason and "c-extension = true" in failed.reason
    assert failed.log is not None and failed.log.is_file()
    assert any("monorepo_no_such_library.h" in line for line in failed.log.read_text().splitlines())
    assert not list(result.wheels.glob("yamlish-*"))


def test_without_the_overlay_the_silent_fallback_builds_pure_python(
    project: Callable[..., Path],
) -> None:
    proj = project([cext("yamlish", header="<monorepo_no_such_library.h>")], ["yamlish"])
    result = build(proj)
    assert result.ok
    (built,) = result.built
    assert built.wheel is not None and built.wheel.name.endswith("-py3-none-any.whl")


def test_overlay_build_env_reaches_the_backend(project: Callable[..., Path]) -> None:
    rule = (
        '[[rule]]\nversions = ""\nreason = "fail instead of falling back"\n'
        'build-env = { CEXT_STRICT = "1" }\n'
    )
    proj = project(
        [cext("yamlish", header="<monorepo_no_such_library.h>")],
        ["yamlish"],
        overlay={"yamlish": rule},
    )
    result = build(proj)
    (failed,) = result.failed
    assert "build_wheel hook failed" in failed.reason
    assert any("CEXT_STRICT=1" in line for line in failed.tail)


def test_missing_system_library_is_reported_before_building(project: Callable[..., Path]) -> None:
    if not Path("/usr/bin/dpkg-query").exists():
        pytest.skip("needs a Debian-like system")
    rule = (
        '[[rule]]\nversions = ""\nreason = "binds libfoo"\n'
        'system-libraries = { debian = ["monorepo-no-such-pkg-a", "libc6", "monorepo-no-such-pkg-b"],'
        ' alpine = ["foo-dev"] }\n'
    )
    proj = project([cext("fastthing"), LIB], ["fastthing", "lib"], overlay={"fastthing": rule})
    with pytest.raises(BuildError) as info:
        build(proj)
    message = str(info.value)
    assert "apt-get install -y monorepo-no-such-pkg-a monorepo-no-such-pkg-b" in message
    assert "fastthing 1.0" in message
    assert "libc6" not in message
    assert not (proj / "duni-build" / "native" / "wheels").exists()


def test_check_system_libraries_without_dpkg(tmp_path: Path) -> None:
    fedora = tmp_path / "os-release"
    fedora.write_text('ID=fedora\nVERSION_ID="40"\n')
    reporter = RecordingReporter()
    check_system_libraries(
        {"a 1": {"fedora": ["libyaml-devel"]}}, os_release=fedora, reporter=reporter
    )
    assert any("libyaml-devel" in text for _, text in reporter.messages)
    ubuntu = tmp_path / "ubuntu"
    ubuntu.write_text("ID=ubuntu\nID_LIKE=debian\n")
    have = {"libyaml-dev"}
    check_system_libraries(
        {"a 1": {"debian": ["libyaml-dev"]}}, os_release=ubuntu, installed=have.__contains__
    )
    with pytest.raises(BuildError, match=r"apt-get install -y libffi-dev libssl-dev"):
        check_system_libraries(
            {"a 1": {"debian": ["libssl-dev", "libyaml-dev"]}, "b 2": {"debian": ["libffi-dev"]}},
            os_release=ubuntu,
            installed=have.__contains__,
        )


def test_dynamic_build_requirements_are_built_first(project: Callable[..., Path]) -> None:
    dyn = with_backend(
        "dyn",
        DYNAMIC_BACKEND,
        files={"dynamic-requires.txt": "helper>=1\n"},
        build_imports=("helper",),
    )
    proj = project([dyn, HELPER], ["dyn", "helper"])
    result = build(proj, jobs=1)
    assert result.ok, result.failed
    assert names(result.built) == ["dyn", "helper"]
    again = build(proj)
    assert names(again.skipped) == ["dyn", "helper"]


def test_dynamic_requirement_missing_from_the_lock_names_it(project: Callable[..., Path]) -> None:
    dyn = with_backend("dyn", DYNAMIC_BACKEND, files={"dynamic-requires.txt": "notlocked>=2\n"})
    proj = project([dyn, LIB], ["dyn", "lib"])
    result = build(proj)
    assert names(result.built) == ["lib"]
    (failed,) = result.failed
    assert "dyn 1.0 needs notlocked>=2" in failed.reason
    assert "build-requires" in failed.reason and "overlay" in failed.reason
    # the project already locks build dependencies: no advice to switch them on
    assert "set build-dependencies = true" not in failed.reason


def test_failure_keeps_other_results_and_a_readable_log(project: Callable[..., Path]) -> None:
    broken = with_backend("broken", BROKEN_BACKEND)
    user = Release("user", "1.0", build_requires=("broken",), build_imports=("broken",))
    proj = project([broken, user, LIB, HELPER], ["broken", "user", "lib", "helper"])
    result = build(proj)
    assert not result.ok
    assert names(result.built) == ["helper", "lib"]
    failed = {p.dir: p for p in result.failed}
    assert sorted(failed) == ["broken", "user"]
    assert "build_wheel hook failed" in failed["broken"].reason
    assert any("BOOM" in line for line in failed["broken"].tail)
    assert any("RuntimeError: fixture failure" in line for line in failed["broken"].tail)
    log = failed["broken"].log
    assert log is not None and "# ---- build_wheel ----" in log.read_text()
    assert "broken 1.0, which failed" in failed["user"].reason
    # the scratch copy of the failed build stays for inspection
    assert (proj / "duni-build" / "native" / "src" / "broken" / "pyproject.toml").is_file()
    # CLI: exit 1, the summary names the failure and the log's last lines
    code, _out, err = run_cli(proj, [])
    assert code == 1
    assert "FAILED broken 1.0" in err and "BOOM" in err and "2 up to date, 2 failed" in err


@pytest.fixture
def listener() -> Iterator[tuple[int, list[Any]]]:
    """A loopback TCP server recording every connection it accepts."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    accepted: list[Any] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, addr = server.accept()
            except OSError:
                continue
            accepted.append(addr)
            conn.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


@pytest.mark.parametrize("isolate", [None, False], ids=["namespace", "audit-hook-only"])
def test_network_attempt_fails_the_build_fast(
    project: Callable[..., Path],
    listener: tuple[int, list[Any]],
    monkeypatch: pytest.MonkeyPatch,
    isolate: bool | None,
) -> None:
    port, accepted = listener
    monkeypatch.setenv("NET_TEST_PORT", str(port))
    proj = project([with_backend("netty", NETWORK_BACKEND), LIB], ["netty", "lib"])
    started = time.monotonic()
    result = build(proj, isolate=isolate)
    assert time.monotonic() - started < 30
    assert names(result.built) == ["lib"]
    (failed,) = result.failed
    assert "tried to reach the network" in failed.reason
    assert failed.log is not None
    text = failed.log.read_text()
    assert text.count("network attempt failed") >= 3
    if isolate is None and network_isolation():
        # in a network namespace not even a shell's /dev/tcp reaches the listener
        assert "network attempt succeeded" not in text
        assert accepted == []
    else:
        # the audit hook stops every Python attempt; only the shell's can get through
        assert len(accepted) <= 1


def test_backend_warnings_go_to_the_log_not_to_the_terminal(
    project: Callable[..., Path], capfd: pytest.CaptureFixture[str]
) -> None:
    proj = project([with_backend("warny", WARNING_BACKEND)], ["warny"])
    capfd.readouterr()
    result = build(proj)
    assert result.ok
    captured = capfd.readouterr()
    assert "7f3a" not in captured.out + captured.err
    (built,) = result.built
    assert built.log is not None and "fixture backend warning 7f3a" in built.log.read_text()


def test_independent_packages_build_in_parallel(
    project: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    times = tmp_path / "times"
    monkeypatch.setenv("BUILD_TIMES", str(times))
    proj = project(
        [with_backend("slow-a", SLOW_BACKEND), with_backend("slow-b", SLOW_BACKEND)],
        ["slow-a", "slow-b"],
    )

    def intervals() -> list[tuple[float, float]]:
        spans = [tuple(map(float, line.split())) for line in times.read_text().splitlines()]
        times.unlink()
        return sorted((a, b) for a, b in spans)

    assert build(proj, jobs=2).ok
    (_a1, a2), (b1, _b2) = intervals()
    assert b1 < a2, "with --jobs 2 the two builds overlap"
    for p in (proj / "duni" / "slow-a", proj / "duni" / "slow-b"):
        (p / "touched.txt").write_text("x")
    assert build(proj, jobs=1).ok
    (_a1, a2), (b1, _b2) = intervals()
    assert b1 >= a2, "with --jobs 1 they do not"


def test_build_without_pull_says_what_to_do(make_project: Callable[..., Path]) -> None:
    proj = make_project(
        f'[project]\nname = "p"\nversion = "0"\n[tool.monorepo]\ntargets = [{TARGET}]\n'
    )
    with pytest.raises(BuildError, match="monorepo pull"):
        build(proj)
    code, _out, err = run_cli(proj, [])
    assert code == 2 and "monorepo pull" in err


def test_build_refuses_a_stale_lock_and_frozen_builds_it_as_it_is(
    project: Callable[..., Path],
) -> None:
    proj = project([LIB], ["lib"])
    pyproject = proj / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('dependencies = ["lib"]', 'dependencies = ["lib", "newdep"]')
    )
    with pytest.raises(StaleLockError) as info:
        build(proj)
    assert info.value.reasons == ("dependencies: newdep was added",)
    wheels = proj / "duni-build" / "native" / "wheels"
    assert not list(wheels.glob("*.whl"))
    run = subprocess.run(
        [sys.executable, "-m", "monorepo", "--project", str(proj), "build"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith("error: ") and "Traceback" not in run.stderr
    assert "- dependencies: newdep was added" in run.stderr
    assert "`monorepo lock` and `monorepo pull`" in run.stderr
    assert "`monorepo build --frozen`" in run.stderr
    assert not list(wheels.glob("*.whl"))
    result = build(proj, frozen=True)
    assert result.ok and names(result.built) == ["lib"]
    code, _out, err = run_cli(proj, ["--frozen"])
    assert code == 0, err


def test_build_refuses_a_duni_older_than_the_lock(project: Callable[..., Path]) -> None:
    # The lock gained a package that no pull has vendored yet: workspace.toml lacks it.
    proj = project([LIB, Release("other", "1.5")], ["lib", "other"])
    workspace = proj / "duni" / "workspace.toml"
    data = tomllib.loads(workspace.read_text())
    data["build-order"].remove("other")
    del data["packages"]["other"]
    workspace.write_text(render(data))
    with pytest.raises(BuildError, match=r"locks other 1\.5, which .*older than the lock.*pull"):
        build(proj)


def run_cli(proj: Path, args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        code = main(["--project", str(proj), "build", *args])
    finally:
        sys.stdout, sys.stderr = saved
    return code, out.getvalue(), err.getvalue()


def test_cli_json_summary(project: Callable[..., Path]) -> None:
    proj = project([LIB], ["lib"])
    code, out, _err = run_cli(proj, ["--json", "--jobs", "1"])
    assert code == 0
    data = json.loads(out)
    assert data["ok"] is True and data["target"] == "native"
    assert [p["dir"] for p in data["built"]] == ["lib"]
    code, out, _err = run_cli(proj, ["--json"])
    assert code == 0 and [p["dir"] for p in json.loads(out)["skipped"]] == ["lib"]


# ---------------------------------------------------------------------- ELF checks


def elf_header(machine: int, *, bits: int = 64, little: bool = True) -> bytes:
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1 if little else 2, 1]) + bytes(9)
    return ident + struct.pack("<HH" if little else ">HH", 3, machine) + bytes(44)


def test_read_elf_header() -> None:
    header = read_elf_header(elf_header(EM_AARCH64))
    assert header is not None and header.machine == EM_AARCH64 and header.bits == 64
    assert header.machine_name == "aarch64"
    big = read_elf_header(elf_header(EM_X86_64, bits=32, little=False))
    assert big is not None and big.machine == EM_X86_64 and not big.little_endian
    assert read_elf_header(b"MZ\x90\x00" + bytes(60)) is None
    assert read_elf_header(b"\x7fELF") is None
    assert read_elf_header(Path(sys.executable).resolve().read_bytes()[:64]) is not None


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_check_wheel(tmp_path: Path) -> None:
    tag = "cp311-cp311-linux_x86_64"
    good = make_wheel(
        tmp_path / f"a-1.0-{tag}.whl",
        {"a/_x.cpython-311-x86_64-linux-gnu.so": elf_header(EM_X86_64)},
    )
    kw: dict[str, Any] = {"platform": "linux", "machine": "x86_64", "python": "3.11"}
    check = check_wheel(good, **kw)
    assert check.problems == [] and check.extensions == ["a/_x.cpython-311-x86_64-linux-gnu.so"]
    wrong = make_wheel(
        tmp_path / f"b-1.0-{tag}.whl",
        {"b/_x.so": elf_header(EM_AARCH64), "b.libs/libz.so.1": elf_header(EM_X86_64)},
    )
    (problem,) = check_wheel(wrong, **kw).problems
    assert "b/_x.so" in problem and "aarch64" in problem
    any_tag = make_wheel(tmp_path / "c-1.0-py3-none-any.whl", {"c/_x.so": elf_header(EM_X86_64)})
    assert any("any platform" in p for p in check_wheel(any_tag, **kw).problems)
    arm = make_wheel(tmp_path / "d-1.0-cp311-cp311-linux_aarch64.whl", {"d/__init__.py": b""})
    assert any("linux_aarch64" in p for p in check_wheel(arm, **kw).problems)
    assert check_wheel(arm, platform="linux", machine="aarch64", python="3.11").problems == []
    other_py = make_wheel(tmp_path / "e-1.0-cp312-cp312-linux_x86_64.whl", {})
    assert any("cp312" in p for p in check_wheel(other_py, **kw).problems)
    pure = make_wheel(tmp_path / "f-1.0-py3-none-any.whl", {"f/__init__.py": b""})
    assert check_wheel(pure, **kw).problems == []
    (needed,) = check_wheel(pure, require_extension=True, **kw).problems
    assert "no extension module" in needed


def test_platform_tags() -> None:
    assert platform_tag_matches("manylinux_2_28_x86_64", "linux", "x86_64")
    assert platform_tag_matches("musllinux_1_2_aarch64", "linux", "aarch64")
    assert not platform_tag_matches("manylinux_2_28_x86_64", "linux", "aarch64")
    assert platform_tag_matches("linux_x86_64", "linux", "amd64")
    assert not platform_tag_matches("win_amd64", "linux", "x86_64")


def test_build_result_json_roundtrip(tmp_path: Path) -> None:
    result = BuildResult(target="t", wheels=tmp_path, logs=tmp_path)
    assert json.loads(json.dumps(result.to_dict()))["ok"] is True
    assert builder_mod.BUILD_DIR == "duni-build"
    assert os.fspath(result.wheels) == str(tmp_path)


# ------------------------------------------------------------ real index (network)

STEXT = Release(
    "monorepo-fixture-stext",
    "1.0",
    build_backend="setuptools.build_meta",
    build_requires=("setuptools>=61",),
    files={
        "setup.py": (
            "from setuptools import Extension, setup\n\nsetup(ext_modules=[Extension("
            "'monorepo_fixture_stext._speed', ['monorepo_fixture_stext/_speed.c'])])\n"
        ),
        "monorepo_fixture_stext/_speed.c": C_SOURCE.replace("HEADER", "<Python.h>"),
    },
)
FLIT = Release(
    "monorepo-fixture-flit",
    "1.0",
    build_backend="flit_core.buildapi",
    build_requires=("flit_core>=3.4,<5",),
)
HATCH = Release(
    "monorepo-fixture-hatch", "1.0", build_backend="hatchling.build", build_requires=("hatchling",)
)
SMALL = Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "small"


@pytest.mark.network
def test_small_set_and_real_backends_build_offline_and_install(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    tmp_path: Path,
) -> None:
    """The issue's goal: requests, pyyaml, markupsafe and their whole build closure
    (flit-core, setuptools, hatchling, Cython ...) built from duni/ alone, plus fixture
    packages using setuptools (with a C extension), flit_core and hatchling."""
    if not (SMALL / "pyproject.toml").is_file():
        pytest.skip(f"{SMALL} is not present")
    index = os.environ["MONOREPO_TEST_INDEX_URL"]
    fixtures = serve(make_index([STEXT, FLIT, HATCH]))
    proj = tmp_path / "small"
    proj.mkdir()
    text = (SMALL / "pyproject.toml").read_text()
    text = text.replace(
        '"markupsafe>=2"',
        '"markupsafe>=2", "monorepo-fixture-stext", "monorepo-fixture-flit", "monorepo-fixture-hatch"',
    )
    assert "monorepo-fixture-stext" in text
    (proj / "pyproject.toml").write_text(
        text + f'\n[tool.monorepo]\ntargets = [{TARGET}]\nextra-index-urls = ["{fixtures.url}"]\n'
        'overlays = ["fixes"]\n'
    )
    write_overlay(
        proj / "fixes",
        "test",
        {
            "monorepo-fixture-stext": (
                '[[rule]]\nversions = ""\nreason = "test: must compile"\nc-extension = true\n'
            )
        },
    )
    monorepo.lock(proj, index_url=index)
    monorepo.pull(proj)
    fixtures.stop()
    result = build(proj, isolate=None)
    assert result.ok, [(p.label, p.reason, p.tail) for p in result.failed]
    built = {p.name for p in result.built}
    for needed in ("flit-core", "setuptools", "hatchling", "pyyaml", "markupsafe", "requests"):
        assert needed in built
    wheels = {p.name: p.wheel for p in result.built}
    for binary in ("pyyaml", "markupsafe", "monorepo-fixture-stext"):
        wheel = wheels[binary]
        assert wheel is not None and wheel.name.endswith(f"linux_{HOST.machine}.whl"), wheel
    assert build(proj).built == []
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-index",
            "--find-links",
            str(result.wheels),
            "requests",
            "pyyaml",
            "markupsafe",
            "monorepo-fixture-stext",
            "monorepo-fixture-flit",
            "monorepo-fixture-hatch",
        ],
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import yaml, markupsafe._speedups, requests, monorepo_fixture_flit,"
            " monorepo_fixture_hatch; from yaml import CSafeLoader;"
            " import monorepo_fixture_stext._speed as s; print(s.answer())",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == "42"


# ------------------------------------------------------------------- cross builds

SYSROOT = os.environ.get("MONOREPO_TEST_SYSROOT", "")
needs_cross = pytest.mark.skipif(
    not (
        SYSROOT
        and Path(SYSROOT, "monorepo-sysroot.toml").is_file()
        and shutil.which("qemu-aarch64")
        and shutil.which("aarch64-linux-gnu-gcc")
        and HOST.machine == "x86_64"
    ),
    reason="needs qemu-aarch64, aarch64-linux-gnu-gcc and MONOREPO_TEST_SYSROOT (see .ci/run)",
)
AARCH64 = (
    '{ name = "arm", python = "3.11", platform = "linux", machine = "aarch64",'
    f' cc = "aarch64-linux-gnu-gcc", sysroot = "{SYSROOT}", runner = "qemu-aarch64 -L {{sysroot}}" }}'
)


@pytest.fixture
def cross_project(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
    tmp_path: Path,
) -> Callable[..., Path]:
    def factory(
        releases: list[Release], deps: list[str], overlay: dict[str, str] | None = None
    ) -> Path:
        server = serve(make_index(releases))
        deps_toml = ", ".join(f'"{d}"' for d in deps)
        extra = ""
        if overlay is not None:
            write_overlay(tmp_path / "proj" / "fixes", "test", overlay)
            extra = 'overlays = ["fixes"]\n'
        proj = make_project(
            f'[project]\nname = "p"\nversion = "0"\ndependencies = [{deps_toml}]\n'
            f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}, {AARCH64}]\n{extra}'
        )
        monorepo.lock(proj)
        monorepo.pull(proj)
        server.stop()
        return proj

    return factory


@needs_cross
def test_cross_build_for_aarch64_runs_under_qemu(
    cross_project: Callable[..., Path], tmp_path: Path
) -> None:
    proj = cross_project([cext("fastthing"), TINYBACKEND, HELPER, APP, LIB], ["fastthing", "app"])
    result = build(proj, target="arm")
    assert result.ok, [(p.label, p.reason, p.tail) for p in result.failed]
    assert result.wheels == proj / "duni-build" / "arm" / "wheels"
    target_built = {p.dir: p for p in result.built if not p.host}
    host_built = {p.dir for p in result.built if p.host}
    assert sorted(target_built) == ["app", "fastthing", "lib"]  # helper is build-only
    # the backend package was built for the build machine, into the native target's tree
    assert not list(result.wheels.glob("tinybackend-*"))
    assert list((proj / "duni-build" / "native" / "wheels").glob("tinybackend-*.whl"))
    assert host_built == {"helper", "tinybackend"}
    wheel = target_built["fastthing"].wheel
    assert wheel is not None and wheel.name == "fastthing-1.0-cp311-cp311-linux_aarch64.whl"
    with zipfile.ZipFile(wheel) as zf:
        (so,) = [n for n in zf.namelist() if n.endswith(".so")]
        assert so == "fastthing/_speed.cpython-311-aarch64-linux-gnu.so"
        header = read_elf_header(zf.read(so)[:64])
    assert header is not None and header.machine == EM_AARCH64
    log = target_built["fastthing"].log
    assert log is not None and "# ---- import on the target" in log.read_text()
    # and it really runs there
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    out = subprocess.run(
        [
            "qemu-aarch64",
            "-L",
            SYSROOT,
            str(Path(SYSROOT) / "usr/bin/python3.11"),
            "-c",
            f"import sys; sys.path.insert(0, {str(unpacked)!r}); import fastthing._speed as s;"
            " print(s.answer())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "42"
    assert build(proj, target="arm").built == []


@needs_cross
def test_cross_build_catches_a_host_binary(cross_project: Callable[..., Path]) -> None:
    rule = '[[rule]]\nversions = ""\nreason = "test: ignores the cross compiler"\nbuild-env = { CC = "cc" }\n'
    proj = cross_project(
        [cext("wrongarch"), LIB], ["wrongarch", "lib"], overlay={"wrongarch": rule}
    )
    result = build(proj, target="arm")
    assert names(result.built) == ["lib"]
    (failed,) = result.failed
    assert "ELF file for x86_64, not for the target aarch64" in failed.reason
    assert not list(result.wheels.glob("wrongarch-*"))


@needs_cross
def test_cross_compile_false_is_refused(cross_project: Callable[..., Path]) -> None:
    rule = '[[rule]]\nversions = ""\nreason = "test"\ncross-compile = false\n'
    proj = cross_project([cext("nocross"), LIB], ["nocross", "lib"], overlay={"nocross": rule})
    result = build(proj, target="arm")
    (failed,) = result.failed
    assert "does not cross-compile" in failed.reason
    assert build(proj, target="native").ok


def test_cross_target_without_sysroot_says_how_to_make_one(
    make_project: Callable[..., Path],
) -> None:
    other = "aarch64" if HOST.machine != "aarch64" else "x86_64"
    proj = make_project(
        '[project]\nname = "p"\nversion = "0"\n[tool.monorepo]\ntargets = [{ name = "t",'
        f' python = "{HOST.python}", platform = "linux", machine = "{other}" }}]\n'
    )
    (proj / "duni").mkdir()
    (proj / "duni" / "workspace.toml").write_text("format = 1\nbuild-order = []\n[packages]\n")
    (proj / "pylock.toml").write_text("")
    with pytest.raises(BuildError, match=r"python -m monorepo.sysroot"):
        build(proj)


def test_build_env_sync_installs_replaces_and_removes(tmp_path: Path) -> None:
    from fixtures.builder import build_wheel
    from monorepo.building.buildenv import BuildEnv

    one = build_wheel(
        Release("helper", "1.0", files={"helper/old.py": "X = 1\n"}), "py3-none-any", tmp_path / "w"
    )
    two = build_wheel(Release("helper", "2.0"), "py3-none-any", tmp_path / "w")
    lib = build_wheel(LIB, "py3-none-any", tmp_path / "w")
    env = BuildEnv(tmp_path / "env")
    assert env.ensure() is True
    assert env.ensure() is False
    site = Path(env.scheme()["purelib"])
    env.sync([one, lib])
    assert (site / "helper" / "old.py").is_file() and (site / "lib" / "__init__.py").is_file()
    assert sorted(env.installed()) == ["helper", "lib"]
    env.sync([two])
    assert not (site / "helper" / "old.py").exists() and not (site / "lib").exists()
    assert [p.name for p in site.glob("helper-*.dist-info")] == ["helper-2.0.dist-info"]
    out = subprocess.run(
        [str(env.python), "-c", "import helper; print(helper.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "2.0"
    env.sync([])
    assert env.installed() == {} and not (site / "helper").exists()
    # the offline guard is in place in every venv
    proc = subprocess.run(
        [str(env.python), "-c", "import socket; socket.getaddrinfo('localhost', 80)"],
        env={**os.environ, "MONOREPO_BUILD_OFFLINE": str(tmp_path / "net.log")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0 and "network access is disabled" in proc.stderr
    assert "socket.getaddrinfo" in (tmp_path / "net.log").read_text()
