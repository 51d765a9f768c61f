"""The CycloneDX SBOM: of the locked set per target (`export`), and in each wheel (PEP 770).

A real project is locked and pulled from the fixture index: `app` is built by the
backend `tinybackend` (which needs `helper`), so those two are build-only; `lib` is
patched by an overlay.  Documents are validated with cyclonedx-python-lib's own
JSON schema validator.
"""

from __future__ import annotations

import json
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from fixtures.builder import FixtureIndex
from fixtures.server import IndexServer
from monorepo import lock, pull
from monorepo.building.builder import build
from monorepo.building.reproducible import read_wheel
from monorepo.cli.commands import main
from monorepo.errors import ConfigError
from monorepo.vendoring.sbom import export_cyclonedx, package_license
from tests.helpers import write_overlay
from tests.test_build import APP, HELPER, LIB, TARGET, TINYBACKEND
from tests.test_lock_build import PATCH

RULE = '[[rule]]\nversions = ""\nreason = "mark it"\npatches = ["patches/0001-mark.patch"]\n'


@pytest.fixture
def sbom_project(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    make_project: Callable[..., Path],
    tmp_path: Path,
) -> Path:
    server = serve(make_index([APP, LIB, TINYBACKEND, HELPER]))
    write_overlay(
        tmp_path / "proj" / "fixes",
        "fixes",
        {"lib": RULE},
        {"packages/lib/patches/0001-mark.patch": PATCH},
    )
    proj = make_project(
        '[project]\nname = "p"\nversion = "0"\ndependencies = ["app"]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{TARGET}]\n'
        'overlays = ["fixes"]\n'
    )
    lock(proj)
    pull(proj)
    server.stop()
    return proj


def validate(text: str) -> None:
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    assert error is None, error


def test_export_is_valid_deterministic_and_complete(
    sbom_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = export_cyclonedx(sbom_project)
    assert export_cyclonedx(sbom_project) == text  # byte-identical across runs
    validate(text)
    doc = json.loads(text)
    assert doc["specVersion"] == "1.6"
    assert doc["serialNumber"].startswith("urn:uuid:")
    assert doc["metadata"]["component"]["name"] == "p"
    comps = {c["name"]: c for c in doc["components"]}
    assert set(comps) == {"app", "lib", "tinybackend", "helper"}
    roles = {
        n: {p["name"]: p["value"] for p in c["properties"]}["monorepo:role"]
        for n, c in comps.items()
    }
    assert roles == {"app": "runtime", "lib": "runtime", "tinybackend": "build", "helper": "build"}
    assert comps["tinybackend"]["scope"] == "excluded" and comps["app"]["scope"] == "required"
    dist = comps["lib"]["externalReferences"][0]
    assert dist["type"] == "distribution" and dist["url"].endswith("lib-1.0.tar.gz")
    assert dist["hashes"][0]["alg"] == "SHA-256" and len(dist["hashes"][0]["content"]) == 64
    patches = comps["lib"]["pedigree"]["patches"]
    assert [p["diff"]["url"] for p in patches] == ["packages/lib/patches/0001-mark.patch"]
    props = {p["name"]: p["value"] for p in comps["lib"]["properties"]}
    assert props["monorepo:patch:packages/lib/patches/0001-mark.patch"].startswith("sha256:")
    assert "pedigree" not in comps["app"]
    deps = {d["ref"]: set(d.get("dependsOn", ())) for d in doc["dependencies"]}
    assert deps["pkg:pypi/app@2.0"] == {"pkg:pypi/lib@1.0"}
    assert deps["pkg:pypi/tinybackend@1.0"] == {"pkg:pypi/helper@1.0"}
    assert deps["project:p"] == {"pkg:pypi/app@2.0"}

    assert main(["--project", str(sbom_project), "export", "--format", "cyclonedx"]) == 0
    assert capsys.readouterr().out == text
    out = sbom_project / "sbom.json"
    args = ["--project", str(sbom_project), "export", "--format", "cyclonedx", "-o", str(out)]
    assert main(args) == 0
    assert out.read_text() == text
    assert main([*args[:-2], "--target", "nope"]) == 2


def test_wheels_carry_their_sbom(sbom_project: Path) -> None:
    result = build(sbom_project)
    assert result.ok, [(p.label, p.reason, p.tail) for p in result.failed]
    wheel = next(p.wheel for p in result.built if p.name == "lib")
    assert wheel is not None
    contents = read_wheel(wheel, package="lib")
    name = "lib-1.0.dist-info/sboms/lib.cdx.json"
    text = contents.files[name].decode()
    validate(text)
    doc: dict[str, Any] = json.loads(text)
    assert doc["metadata"]["component"]["name"] == "lib"
    assert [c["name"] for c in doc["components"]] == ["lib"]
    assert doc["components"][0]["pedigree"]["patches"]
    with zipfile.ZipFile(wheel) as zf:
        record = zf.read("lib-1.0.dist-info/RECORD").decode()
    assert f"{name},sha256=" in record


def test_package_license_from_core_metadata(tmp_path: Path) -> None:
    (tmp_path / "PKG-INFO").write_text("Metadata-Version: 2.4\nName: x\nLicense-Expression: MIT\n")
    assert package_license(tmp_path) == "MIT"
    (tmp_path / "PKG-INFO").write_text(
        "Metadata-Version: 2.1\nName: x\nLicense: UNKNOWN\n"
        "Classifier: License :: OSI Approved :: BSD License\n"
    )
    assert package_license(tmp_path) == "BSD License"
    (tmp_path / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: x\n")
    (tmp_path / "pyproject.toml").write_text('[project]\nlicense = {text = "Apache-2.0"}\n')
    assert package_license(tmp_path) == "Apache-2.0"
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    assert package_license(tmp_path) is None


def test_the_first_target_by_default_and_an_unknown_one_refused(sbom_project: Path) -> None:
    first = json.loads(export_cyclonedx(sbom_project))
    assert first["metadata"]["component"]["description"].endswith("for target native")
    assert export_cyclonedx(sbom_project, target="native") == export_cyclonedx(sbom_project)
    with pytest.raises(ConfigError, match="no target named 'nope'"):
        export_cyclonedx(sbom_project, target="nope")


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux builds")
