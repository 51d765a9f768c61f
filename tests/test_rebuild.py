"""The build record and `verify --rebuild`: real fixture sdists locked, pulled, built twice.

The packages come from the fixture index through lock and pull, exactly as in
tests/test_build.py (whose fixtures and backends are reused).  A C extension whose
source embeds ``__FILE__`` and is compiled with ``-g`` must still rebuild to the same
bytes in another directory; backends that write the time or the build path into the
wheel must be reported, named by file.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from fixtures.builder import BACKEND_SOURCE
from monorepo.building.builder import build
from monorepo.building.inputkey import InputKey
from monorepo.building.rebuild import verify_rebuild
from monorepo.building.record import BuildRecord, read_build_record, write_build_record
from monorepo.building.wheeldiff import dynamic_symbols, elf_sections
from monorepo.cli.commands import main
from monorepo.errors import BuildError
from tests.test_build import C_SOURCE, LIB, cext, cross_project, needs_cross, project, with_backend

__all__ = ["cross_project", "project"]  # the fixtures, imported for the tests below

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="builds are tested on Linux"
)

# The C extension also keeps the path of its source file, as assert() and debug info do.
FILE_SOURCE = C_SOURCE.replace("HEADER", "<Python.h>").replace(
    "static PyObject *answer",
    "const char *monorepo_where = __FILE__;\nstatic PyObject *answer",
)

STAMP_BACKEND = (
    BACKEND_SOURCE
    + r"""

_plain_build_wheel = build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    import time

    cfg = _read_config()
    with open(cfg["import-name"] + "/_stamp.py", "w") as fh:
        fh.write("BUILT = %d\nWHERE = %r\n" % (time.time_ns(), os.getcwd()))
    return _plain_build_wheel(wheel_directory, config_settings, metadata_directory)
"""
)


def cext_with_file(name: str) -> object:
    release = cext(name)
    pkg = name.replace("-", "_")
    return dataclasses.replace(
        release, files={**dict(release.files), f"{pkg}/_speed.c": FILE_SOURCE}
    )


CEXT_OVERLAY = (
    '[[rule]]\nversions = ""\nreason = "test: compile with debug info"\nc-extension = true\n'
    '[rule.build-env]\nCFLAGS = "-g -O0"\n'
)


def test_build_writes_a_sorted_record_and_rebuilds_the_same_bytes(
    project: Callable[..., Path], tmp_path: Path
) -> None:
    proj = project([LIB, cext_with_file("fast")], ["lib", "fast"], overlay={"fast": CEXT_OVERLAY})
    result = build(proj)
    assert result.ok, [(p.label, p.reason, p.tail) for p in result.failed]
    path = proj / "duni-build" / "native" / "build.toml"
    text = path.read_text()
    record = read_build_record(path)
    assert sorted(record.packages) == ["fast", "lib"]
    wheels = {p.dir: p.wheel for p in result.built}
    for d, entry in record.packages.items():
        wheel = wheels[d]
        assert wheel is not None and entry.wheel == wheel.name
        import hashlib

        assert entry.sha256 == hashlib.sha256(wheel.read_bytes()).hexdigest()
    fast, lib = record.packages["fast"].inputs, record.packages["lib"].inputs
    assert fast.toolchain is not None and lib.toolchain is None
    assert dict(fast.build_env) == {"CFLAGS": "-g -O0"}
    assert str(proj) not in text  # no absolute paths of this machine's checkout
    # The extension really has debug info, and the path of its source mapped away.
    with zipfile.ZipFile(wheels["fast"]) as zf:  # type: ignore[arg-type]
        so = next(n for n in zf.namelist() if n.endswith(".so"))
        data = zf.read(so)
    assert any(n.startswith(".debug_") for n in elf_sections(data))
    assert any(s.startswith("PyInit__speed") for s in dynamic_symbols(data))
    assert str(proj).encode() not in data
    assert b"/monorepo-build/src/fast" in data

    # Up to date: the same record, byte for byte.
    assert build(proj).built == []
    assert path.read_text() == text

    # Another directory, another time: the same wheels.
    again = build(proj, build_root=tmp_path / "elsewhere", build_cache=False)
    assert again.ok
    other = read_build_record(tmp_path / "elsewhere" / "native" / "build.toml")
    assert {d: e.sha256 for d, e in other.packages.items()} == {
        d: e.sha256 for d, e in record.packages.items()
    }
    assert other.render() == record.render()

    report = verify_rebuild(proj, scratch_parent=tmp_path)
    assert report.passed, report.to_dict()
    assert {p.dir: p.status for p in report.packages} == {
        "fast": "reproducible",
        "lib": "reproducible",
    }
    assert not list(tmp_path.glob("monorepo-rebuild-*"))  # the scratch build is gone

    code = main(["--project", str(proj), "verify", "--rebuild", "--json"])
    assert code == 0


def test_a_build_that_embeds_the_time_and_path_is_named_by_file(
    project: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stamp = with_backend("stamped", STAMP_BACKEND)
    proj = project([LIB, stamp], ["lib", "stamped"])
    assert build(proj).ok
    report = verify_rebuild(proj, scratch_parent=tmp_path)
    assert not report.passed
    assert report.status("lib").status == "reproducible"
    stamped = report.status("stamped")
    assert stamped.status == "differs" and stamped.inputs_differ == ()
    assert [f.path for f in stamped.files if f.area == "code"] == ["stamped/_stamp.py"]
    diff = next(f for f in stamped.files if f.path == "stamped/_stamp.py")
    assert diff.kind == "text"
    assert any(line.startswith("-BUILT = ") for line in diff.detail)
    assert any(line.startswith("+WHERE = ") and "monorepo-rebuild-" in line for line in diff.detail)
    # RECORD differs too, and is reported as metadata, not code.
    assert {f.area for f in stamped.files if f.path.endswith("RECORD")} == {"metadata"}

    code = main(["--project", str(proj), "verify", "--rebuild"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL rebuild: stamped: 1.0: stamped-1.0-py3-none-any.whl rebuilt" in out
    assert "FAIL rebuild: stamped: stamped/_stamp.py (code): text differs" in out
    assert "lib" not in "".join(line for line in out.splitlines() if line.startswith("FAIL"))

    code = main(["--project", str(proj), "verify", "--rebuild", "--json", "stamped"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1
    rebuild = next(c for c in data["checks"] if c["name"] == "rebuild")
    assert {i["code"] for i in rebuild["items"]} == {"differs", "file-differs"}


def test_against_another_machines_record(project: Callable[..., Path], tmp_path: Path) -> None:
    proj = project([LIB], ["lib"])
    assert build(proj).ok
    mine = read_build_record(proj / "duni-build" / "native" / "build.toml")
    entry = mine.packages["lib"]
    theirs_inputs = InputKey.create(
        package=entry.inputs.package,
        version=entry.inputs.version,
        source_tree=entry.inputs.source_tree,
        target=entry.inputs.target,
        toolchain=entry.inputs.toolchain,
        sysroot=entry.inputs.sysroot,
        build_wheels=entry.inputs.build_wheels,
        build_env={"FROM": "elsewhere"},
    )
    theirs = BuildRecord(
        "native",
        {"lib": dataclasses.replace(entry, sha256="0" * 64, inputs=theirs_inputs)},
    )
    other = tmp_path / "other" / "build.toml"
    write_build_record(other, theirs)
    report = verify_rebuild(proj, against=other, scratch_parent=tmp_path)
    lib = report.status("lib")
    assert lib.status == "differs"
    assert lib.inputs_differ == ("build-env",)
    assert lib.files == ()  # that machine's wheel is not here
    same = verify_rebuild(proj, against=proj / "duni-build" / "native" / "build.toml")
    assert same.passed
    with pytest.raises(BuildError, match="not in the build record"):
        verify_rebuild(proj, packages=["nope"])
    assert main(["--project", str(proj), "verify", "--against", str(other)]) == 2


def test_record_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="run `monorepo build` first"):
        read_build_record(tmp_path / "build.toml")
    (tmp_path / "build.toml").write_text("format = 99\n")
    with pytest.raises(BuildError, match="not a build record"):
        read_build_record(tmp_path / "build.toml")
    (tmp_path / "build.toml").write_text('format = 1\n[packages.x]\nname = "x"\n')
    with pytest.raises(BuildError, match="the entry of x lacks"):
        read_build_record(tmp_path / "build.toml")


def test_record_names_from_elsewhere_are_checked(tmp_path: Path) -> None:
    entry = (
        'format = 1\ntarget = "native"\n[packages.x]\nname = "x"\nversion = "1"\n'
        'wheel = "WHEEL"\nsha256 = "SHA"\n'
        "[packages.x.inputs]\n"
        'package = "x"\nversion = "1"\nsource-tree = "sha256:00"\n'
        'target = {name = "n", python = "3.12", platform = "linux", machine = "x86_64"}\n'
    )
    path = tmp_path / "build.toml"
    path.write_text(entry.replace("WHEEL", "../../x-1-py3-none-any.whl").replace("SHA", "a" * 64))
    with pytest.raises(BuildError, match="not a wheel's file name"):
        read_build_record(path)
    path.write_text(entry.replace("WHEEL", "x-1-py3-none-any.whl").replace("SHA", "nope"))
    with pytest.raises(BuildError, match="has no sha256"):
        read_build_record(path)
    path.write_text(entry.replace("WHEEL", "x-1-py3-none-any.whl").replace("SHA", "a" * 64))
    assert read_build_record(path).packages["x"].wheel == "x-1-py3-none-any.whl"


@needs_cross
def test_a_cross_build_rebuilds_the_same_bytes_and_records_the_sysroot(
    cross_project: Callable[..., Path], tmp_path: Path
) -> None:
    """The cross compiler is given ``--sysroot`` and ``-I`` paths into the sysroot and
    compiles with debug info: mapped, so another scratch directory gives the same wheel."""
    proj = cross_project(
        [cext_with_file("fastthing"), LIB],
        ["fastthing", "lib"],
        overlay={"fastthing": CEXT_OVERLAY},
    )
    assert build(proj, target="arm").ok
    record = read_build_record(proj / "duni-build" / "arm" / "build.toml")
    key = record.packages["fastthing"].inputs
    assert key.sysroot is not None and key.toolchain is not None
    assert "aarch64-linux-gnu-gcc" in key.toolchain.compiler
    assert key.target.machine == "aarch64"
    report = verify_rebuild(proj, target="arm", scratch_parent=tmp_path)
    assert report.passed, report.to_dict()
    assert report.status("fastthing").status == "reproducible"
