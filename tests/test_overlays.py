"""Overlay parsing, precedence, fingerprints and git overlays, on real files and repositories."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pygit2
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from monorepo.errors import OverlayError
from monorepo.overlays.loading import (
    default_overlay_dir,
    directory_fingerprint,
    load_overlay,
    load_overlays,
)
from monorepo.overlays.rules import GitReplacement, OverlaySet, UrlReplacement
from tests.helpers import current_cache, write_overlay

DEMO = canonicalize_name("demo")

PATCH = b"""\
diff --git a/setup.py b/setup.py
--- a/setup.py
+++ b/setup.py
@@ -1 +1 @@
-old
+new
"""

GOOD_RULES = """
[[rule]]
versions = ">=6,<7"
reason = "6.x needs a newer Cython and misses its C header dependency"
patches = ["patches/0001-cython3.patch"]
dependencies = { add = ["cython>=3; python_version < '3.13'"], remove = ["Setuptools_SCM"] }
build-requires = ["setuptools>=68", "cython>=3"]
source = { git = "https://git.example/py.git", commit = "0123456789ABCDEF0123456789abcdef01234567" }
cross-compile = true
c-extension = true
system-libraries = { debian = ["libyaml-dev"], alpine = ["yaml-dev"] }
build-env = { PYYAML_FORCE_CYTHON = "1" }

[[rule]]
versions = ""
reason = "every other version builds without a compiler"
source = { url = "https://files.example/pyyaml-5.tar.gz", sha256 = "%s" }
c-extension = false
""" % ("ab" * 32)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONOREPO_CACHE_DIR", str(tmp_path / "cache"))


def make_good(root: Path) -> Path:
    write_overlay(root, "base", {"pyyaml": GOOD_RULES})
    patch = root / "packages/pyyaml/patches/0001-cython3.patch"
    patch.parent.mkdir(parents=True, exist_ok=True)
    patch.write_bytes(PATCH)
    return root


# ---------------------------------------------------------------------------
# parsing


def test_good_overlay_is_parsed(tmp_path: Path) -> None:
    make_good(tmp_path / "ov")
    overlay = load_overlay("ov", base=tmp_path, cache=current_cache())
    assert overlay.name == "base"
    assert overlay.spec == "ov"
    assert overlay.root == (tmp_path / "ov").resolve()
    assert overlay.commit is None
    assert overlay.fingerprint.startswith("sha256:")
    first, second = overlay.rules[canonicalize_name("pyyaml")]
    assert first.package == "pyyaml"
    assert first.index == 0 and second.index == 1
    assert first.versions == SpecifierSet(">=6,<7")
    assert first.reason.startswith("6.x needs")
    (patch,) = first.patches
    assert patch.path == "packages/pyyaml/patches/0001-cython3.patch"
    assert patch.text == PATCH
    assert patch.sha256 == hashlib.sha256(PATCH).hexdigest()
    assert [str(r) for r in first.add_dependencies] == ['cython>=3; python_version < "3.13"']
    assert first.remove_dependencies == ("setuptools-scm",)
    assert first.build_requires == (Requirement("setuptools>=68"), Requirement("cython>=3"))
    assert first.source == GitReplacement(
        "https://git.example/py.git", "0123456789abcdef0123456789abcdef01234567"
    )
    assert first.cross_compile is True and first.c_extension is True
    assert first.system_libraries == {"debian": ("libyaml-dev",), "alpine": ("yaml-dev",)}
    assert first.build_env == {"PYYAML_FORCE_CYTHON": "1"}
    assert second.versions == SpecifierSet("")
    assert second.patches == () and second.build_requires is None
    assert second.cross_compile is None and second.c_extension is False
    assert second.source == UrlReplacement("https://files.example/pyyaml-5.tar.gz", "ab" * 32)


BAD_RULES: list[tuple[str, str, str]] = [
    ('[[rule]]\nversions = ">=1"\nreason = "x"\ncolour = "red"\n', "colour", "unknown key"),
    ('[[rule]]\nversions = ">=1"\n', "reason", "required"),
    ('[[rule]]\nversions = ">=1"\nreason = ""\n', "reason", "required"),
    ('[[rule]]\nreason = "x"\n', "versions", "required"),
    ('[[rule]]\nversions = "=>1"\nreason = "x"\n', "versions", "not a PEP 440"),
    ('[[rule]]\nversions = "*"\nreason = "x"\n', "versions", "not a PEP 440"),
    ('[[rule]]\nversions = 1\nreason = "x"\n', "versions", "specifier string"),
    (
        '[[rule]]\nversions = ""\nreason = "x"\npatches = ["patches/missing.patch"]\n',
        "patches",
        "not found",
    ),
    ('[[rule]]\nversions = ""\nreason = "x"\npatches = ["../../x.patch"]\n', "patches", "inside"),
    ('[[rule]]\nversions = ""\nreason = "x"\npatches = "p.patch"\n', "patches", "list of strings"),
    (
        '[[rule]]\nversions = ""\nreason = "x"\ndependencies = { add = ["not a req !"] }\n',
        "dependencies.add",
        "PEP 508",
    ),
    (
        '[[rule]]\nversions = ""\nreason = "x"\ndependencies = { drop = ["a"] }\n',
        "dependencies.drop",
        "unknown key",
    ),
    (
        '[[rule]]\nversions = ""\nreason = "x"\ndependencies = { remove = ["a>=1"] }\n',
        "dependencies.remove",
        "not a package name",
    ),
    ('[[rule]]\nversions = ""\nreason = "x"\nbuild-requires = [1]\n', "build-requires", "list"),
    (
        '[[rule]]\nversions = ""\nreason = "x"\nsource = { git = "u", commit = "main" }\n',
        "source.commit",
        "40-hex",
    ),
    (
        '[[rule]]\nversions = ""\nreason = "x"\nsource = { url = "u", sha256 = "abc" }\n',
        "source.sha256",
        "64 hex",
    ),
    ('[[rule]]\nversions = ""\nreason = "x"\nsource = { git = "u" }\n', "source", "keys"),
    ('[[rule]]\nversions = ""\nreason = "x"\ncross-compile = "yes"\n', "cross-compile", "true"),
    ('[[rule]]\nversions = ""\nreason = "x"\nc-extension = 1\n', "c-extension", "true"),
    (
        '[[rule]]\nversions = ""\nreason = "x"\nsystem-libraries = { debian = "libyaml" }\n',
        "system-libraries",
        "list",
    ),
    ('[[rule]]\nversions = ""\nreason = "x"\nbuild-env = { CC = 1 }\n', "build-env", "strings"),
    (
        '[[rule]]\nversions = ""\nreason = "x"\nconfig-settings = { setup-args = [1] }\n',
        "config-settings",
        "PEP 517",
    ),
    (
        '[[rule]]\nversions = ""\nreason = "x"\ntarget-config-settings = { arm = "x" }\n',
        "target-config-settings",
        "target name or machine",
    ),
    (
        '[[rule]]\nversions = ""\nreason = "x"\ntarget-config-settings = { arm = { a = 1 } }\n',
        "target-config-settings.arm",
        "strings",
    ),
    ('rule = "x"\n', "rule", "array of tables"),
    ('[[rules]]\nversions = ""\nreason = "x"\n', "rules", "unknown key"),
    ("[[rule]\n", "overlay.toml", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "key", "words"), BAD_RULES)
def test_malformed_rule_names_file_and_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    write_overlay(tmp_path / "ov", "bad", {"demo": text})
    with pytest.raises(OverlayError) as info:
        load_overlay("ov", base=tmp_path, cache=current_cache())
    message = str(info.value)
    assert str(tmp_path / "ov/packages/demo/overlay.toml") in message
    assert key in message
    assert words in message


@pytest.mark.parametrize(
    ("top", "key"),
    [
        ('[overlay]\nname = "x"\nformat = 2\n', "overlay.format"),
        ('[overlay]\nname = "x"\nformat = true\n', "overlay.format"),
        ("[overlay]\nformat = 1\n", "overlay.name"),
        ('[overlay]\nname = "x"\nformat = 1\nextra = 1\n', "overlay.extra"),
        ('name = "x"\n', "name"),
        ('[tool]\nx = 1\n[overlay]\nname = "x"\nformat = 1\n', "tool"),
    ],
)
def test_malformed_top_level_file(tmp_path: Path, top: str, key: str) -> None:
    root = write_overlay(tmp_path / "ov", "x", {})
    (root / "overlay.toml").write_text(top)
    with pytest.raises(OverlayError) as info:
        load_overlay("ov", base=tmp_path, cache=current_cache())
    assert str(root / "overlay.toml") in str(info.value)
    assert key in str(info.value)


def test_missing_files_and_directories(tmp_path: Path) -> None:
    with pytest.raises(OverlayError, match="not a directory"):
        load_overlay("nowhere", base=tmp_path, cache=current_cache())
    root = tmp_path / "ov"
    (root / "packages/demo").mkdir(parents=True)
    with pytest.raises(OverlayError, match=r"ov/overlay\.toml is missing"):
        load_overlay("ov", base=tmp_path, cache=current_cache())
    write_overlay(root, "x", {})
    with pytest.raises(OverlayError, match=r"packages/demo/overlay\.toml is missing"):
        load_overlay("ov", base=tmp_path, cache=current_cache())


def test_package_directory_must_be_normalized(tmp_path: Path) -> None:
    write_overlay(tmp_path / "ov", "x", {"PyYAML": '[[rule]]\nversions = ""\nreason = "r"\n'})
    with pytest.raises(OverlayError, match="rename it to packages/pyyaml"):
        load_overlay("ov", base=tmp_path, cache=current_cache())


# ---------------------------------------------------------------------------
# precedence


def rule_file(*rules: tuple[str, str]) -> str:
    return "".join(f'[[rule]]\nversions = "{v}"\nreason = "{r}"\n\n' for v, r in rules)


def test_first_matching_rule_in_a_file_wins(tmp_path: Path) -> None:
    write_overlay(
        tmp_path / "a",
        "a",
        {"demo": rule_file((">=2", "two"), (">=1", "one"), ("", "any"))},
    )
    overlays = load_overlays(["a"], base=tmp_path, cache=current_cache())
    match = overlays.rule_for("Demo", Version("2.5"))
    assert match is not None and match.rule.reason == "two" and match.rule.index == 0
    match = overlays.rule_for("demo", Version("1.5"))
    assert match is not None and match.rule.reason == "one" and match.rule.index == 1
    match = overlays.rule_for("DEMO", Version("0.1"))
    assert match is not None and match.rule.reason == "any" and match.overlay.name == "a"
    # prereleases are matched too
    match = overlays.rule_for("demo", Version("3.0rc1"))
    assert match is not None and match.rule.reason == "two"
    assert overlays.rule_for("other", Version("1")) is None


def test_earlier_overlay_wins(tmp_path: Path) -> None:
    write_overlay(tmp_path / "a", "project", {"demo": rule_file((">=2", "project fix"))})
    write_overlay(
        tmp_path / "b",
        "default",
        {"demo": rule_file(("", "default fix")), "other": rule_file(("", "other fix"))},
    )
    overlays = load_overlays(["a", "b"], base=tmp_path, cache=current_cache())
    match = overlays.rule_for("demo", Version("2.1"))
    assert match is not None and match.overlay.name == "project"
    assert match.rule.reason == "project fix"
    # the first overlay with a file for the package owns it: no fall-through
    assert overlays.rule_for("demo", Version("1.0")) is None
    match = overlays.rule_for("other", Version("1.0"))
    assert match is not None and match.overlay.name == "default"
    # order reversed, the other overlay wins
    reversed_set = load_overlays(["b", "a"], base=tmp_path, cache=current_cache())
    match = reversed_set.rule_for("demo", Version("2.1"))
    assert match is not None and match.overlay.name == "default"
    assert [c["name"] for c in overlays.canonical()] == ["project", "default"]
    assert overlays.canonical()[0] == {
        "name": "project",
        "spec": "a",
        "fingerprint": overlays.overlays[0].fingerprint,
    }


def test_empty_rule_file_switches_a_later_overlay_off(tmp_path: Path) -> None:
    write_overlay(tmp_path / "a", "project", {"demo": "# no fixes wanted for demo\n"})
    write_overlay(tmp_path / "b", "default", {"demo": rule_file(("", "default fix"))})
    assert (
        load_overlays(["a", "b"], base=tmp_path, cache=current_cache()).rule_for(
            "demo", Version("1")
        )
        is None
    )
    match = load_overlays(["b", "a"], base=tmp_path, cache=current_cache()).rule_for(
        "demo", Version("1")
    )
    assert match is not None and match.overlay.name == "default"


def test_duplicate_overlay_names_are_refused(tmp_path: Path) -> None:
    write_overlay(tmp_path / "a", "same", {})
    write_overlay(tmp_path / "b", "same", {})
    with pytest.raises(OverlayError, match="both named 'same'"):
        load_overlays(["a", "b"], base=tmp_path, cache=current_cache())


def test_empty_set() -> None:
    assert OverlaySet().rule_for("x", Version("1")) is None
    assert OverlaySet().canonical() == []


# ---------------------------------------------------------------------------
# fingerprints


def test_directory_fingerprint_follows_content(tmp_path: Path) -> None:
    root = make_good(tmp_path / "ov")
    first = directory_fingerprint(root)
    assert load_overlay("ov", base=tmp_path, cache=current_cache()).fingerprint == first
    assert directory_fingerprint(root) == first  # stable
    patch = root / "packages/pyyaml/patches/0001-cython3.patch"
    patch.write_bytes(PATCH + b"+more\n")
    second = directory_fingerprint(root)
    assert second != first
    patch.write_bytes(PATCH)
    assert directory_fingerprint(root) == first
    # renaming a file changes it too, even with identical bytes
    (root / "README").write_bytes(b"x")
    third = directory_fingerprint(root)
    (root / "README").rename(root / "README.md")
    assert directory_fingerprint(root) not in (first, third)


def test_default_overlay_dir() -> None:
    assert default_overlay_dir() == Path(__file__).resolve().parent.parent / "overlays"


def test_a_wheel_install_carries_the_default_overlay(tmp_path: Path) -> None:
    """A regular install applies the same default overlay as a checkout: a lock made by
    either must not differ (a wheel without it locked every project without its fixes)."""
    repo = Path(__file__).resolve().parent.parent
    out = tmp_path / "wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(repo),
        ],
        check=True,
    )
    (wheel,) = out.glob("monorepo-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    code = (
        "from monorepo.overlays.loading import default_overlay_dir, directory_fingerprint;"
        "d = default_overlay_dir(); print(d); print(directory_fingerprint(d))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    shown = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    ).stdout.split()
    assert Path(shown[0]) == site / "monorepo" / "_default_overlay"
    assert shown[1] == directory_fingerprint(repo / "overlays")


# ---------------------------------------------------------------------------
# git overlays


def commit_all(repo: pygit2.Repository, message: str) -> str:
    repo.index.add_all()
    repo.index.write()
    tree = repo.index.write_tree()
    sig = pygit2.Signature("Test", "test@example.invalid", 1_700_000_000, 0)
    parents = [] if repo.head_is_unborn else [repo.head.target]
    oid = repo.create_commit("HEAD", sig, sig, message, tree, parents)
    return str(oid)


@pytest.fixture
def upstream(tmp_path: Path) -> tuple[pygit2.Repository, Path]:
    path = tmp_path / "upstream"
    write_overlay(path, "remote", {"demo": rule_file(("", "first"))})
    repo = pygit2.init_repository(str(path), initial_head="main")
    return repo, path


def test_git_overlay_pinned_and_unpinned(
    tmp_path: Path, upstream: tuple[pygit2.Repository, Path]
) -> None:
    repo, path = upstream
    first = commit_all(repo, "first")
    repo.create_tag(
        "v1",
        pygit2.Oid(hex=first),
        pygit2.enums.ObjectType.COMMIT,
        pygit2.Signature("T", "t@example.invalid"),
        "v1",
    )
    spec = "git+upstream@main"

    overlay = load_overlay(spec, base=tmp_path, cache=current_cache())
    assert overlay.commit == first and overlay.fingerprint == first
    assert overlay.spec == spec and overlay.name == "remote"
    assert overlay.root == tmp_path / "cache" / "overlays" / overlay.root.parent.name / first
    assert not (overlay.root / ".git").exists()
    rule = overlay.rules[DEMO][0]
    assert rule.reason == "first"

    (path / "packages/demo/overlay.toml").write_text(rule_file(("", "second")))
    second = commit_all(repo, "second")

    pinned = load_overlay(spec, base=tmp_path, cache=current_cache(), pinned_commit=first)
    assert pinned.commit == first
    assert pinned.rules[DEMO][0].reason == "first"

    unpinned = load_overlay(spec, base=tmp_path, cache=current_cache())
    assert unpinned.commit == second
    assert unpinned.rules[DEMO][0].reason == "second"

    # the old export is untouched by the newer commit
    assert (
        load_overlay(spec, base=tmp_path, cache=current_cache(), pinned_commit=first)
        .rules[DEMO][0]
        .reason
        == "first"
    )

    # tags, commit ids and file:// URLs resolve too
    assert load_overlay("git+upstream@v1", base=tmp_path, cache=current_cache()).commit == first
    assert (
        load_overlay(f"git+upstream@{first}", base=tmp_path, cache=current_cache()).commit == first
    )
    via_url = load_overlay(f"git+{path.as_uri()}@main", base=tmp_path, cache=current_cache())
    assert via_url.commit == second

    # load_overlays takes pins by spec
    pinned_set = load_overlays([spec], base=tmp_path, cache=current_cache(), pinned={spec: first})
    assert pinned_set.canonical() == [{"name": "remote", "spec": spec, "fingerprint": first}]


def test_git_overlay_offline(tmp_path: Path, upstream: tuple[pygit2.Repository, Path]) -> None:
    repo, path = upstream
    first = commit_all(repo, "first")
    spec = "git+upstream@main"

    with pytest.raises(OverlayError, match="never been fetched"):
        load_overlay(spec, base=tmp_path, cache=current_cache(), offline=True)
    with pytest.raises(OverlayError, match="never been fetched"):
        load_overlay(
            spec, base=tmp_path, cache=current_cache(), offline=True, pinned_commit="f" * 40
        )

    assert load_overlay(spec, base=tmp_path, cache=current_cache()).commit == first
    (path / "packages/demo/overlay.toml").write_text(rule_file(("", "second")))
    second = commit_all(repo, "second")

    # offline: the clone answers, without seeing the new commit
    offline = load_overlay(spec, base=tmp_path, cache=current_cache(), offline=True)
    assert offline.commit == first and offline.rules[DEMO][0].reason == "first"
    with pytest.raises(OverlayError, match="--offline forbids fetching"):
        load_overlay(spec, base=tmp_path, cache=current_cache(), offline=True, pinned_commit=second)
    # online with a pin it does not have yet: fetched
    assert (
        load_overlay(spec, base=tmp_path, cache=current_cache(), pinned_commit=second).commit
        == second
    )
    assert (
        load_overlay(
            spec, base=tmp_path, cache=current_cache(), offline=True, pinned_commit=second
        ).commit
        == second
    )


def test_git_overlay_errors(tmp_path: Path, upstream: tuple[pygit2.Repository, Path]) -> None:
    repo, _path = upstream
    commit_all(repo, "first")
    with pytest.raises(OverlayError, match="names no revision"):
        load_overlay("git+upstream", base=tmp_path, cache=current_cache())
    with pytest.raises(OverlayError, match="'nope' is neither a branch"):
        load_overlay("git+upstream@nope", base=tmp_path, cache=current_cache())
    with pytest.raises(OverlayError, match=r"is not in .* any more"):
        load_overlay(
            "git+upstream@main", base=tmp_path, cache=current_cache(), pinned_commit="e" * 40
        )
    with pytest.raises(OverlayError, match="could not be fetched"):
        load_overlay("git+missing-repo@main", base=tmp_path, cache=current_cache())


def test_git_overlay_error_messages_name_spec_and_file(
    tmp_path: Path, upstream: tuple[pygit2.Repository, Path]
) -> None:
    repo, path = upstream
    (path / "packages/demo/overlay.toml").write_text('[[rule]]\nversions = ""\n')
    commit = commit_all(repo, "broken")
    with pytest.raises(OverlayError) as info:
        load_overlay("git+upstream@main", base=tmp_path, cache=current_cache())
    message = str(info.value)
    assert "packages/demo/overlay.toml in overlay git+upstream@main" in message
    assert commit[:12] in message and "reason" in message


def test_git_overlay_with_a_symlink_is_refused(
    tmp_path: Path, upstream: tuple[pygit2.Repository, Path]
) -> None:
    repo, path = upstream
    os.symlink("overlay.toml", path / "packages/demo/link.toml")
    commit_all(repo, "with a link")
    with pytest.raises(OverlayError, match=r"packages/demo/link\.toml, a symlink"):
        load_overlay("git+upstream@main", base=tmp_path, cache=current_cache())
