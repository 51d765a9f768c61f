"""`monorepo verify`: the tamper matrix, --remote and --resolve against a real fixture server.

Every test locks and pulls a real project (sdists built by the fixture builder, served
over loopback HTTP, an overlay patch applied with libgit2), tampers with one thing,
and checks that exactly the right check fails, naming the right path, and that
verify wrote nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

import monorepo
from fixtures.builder import FixtureIndex, Release
from fixtures.gitrepo import make_git_package
from fixtures.server import IndexServer
from monorepo.cli.commands import main
from monorepo.errors import LockFileError
from monorepo.project.lockfile import LockedPackage, SdistSource, VcsSource
from monorepo.vendoring.pull import pull
from monorepo.vendoring.verify.report import SCHEMA, Item, VerifyReport
from monorepo.vendoring.verify.verifier import verify
from tests.helpers import rewrite_lock, stat_snapshot

LINUX = '{ name = "linux", python = "3.11", platform = "linux", machine = "x86_64" }'

APP = Release(
    "app",
    "1.0",
    requires_dist=("lib>=1",),
    files={"app/data/info.txt": "hello\n", "app/data/more.txt": "more\n"},
)
LIB = Release("lib", "1.0")
OTHER = Release("other", "1.0")

PATCH = "\n".join(
    [
        "diff --git a/lib/__init__.py b/lib/__init__.py",
        "--- a/lib/__init__.py",
        "+++ b/lib/__init__.py",
        "@@ -1,3 +1,4 @@",
        ' """Fixture package lib."""',
        " ",
        " __version__ = '1.0'",
        "+PATCHED = True",
        "",
    ]
).encode()
PATCH_REL = "fixes/packages/lib/patches/0001-mark.patch"


@dataclasses.dataclass
class Pulled:
    root: Path
    index: FixtureIndex
    server: IndexServer

    @property
    def duni(self) -> Path:
        return self.root / "duni"


def write_project(root: Path, server: IndexServer, deps: list[str], extra: str = "") -> None:
    deps_toml = ", ".join(json.dumps(d) for d in deps)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "proj"\nversion = "0"\ndependencies = [{deps_toml}]\n'
        f'[tool.monorepo]\nindex-url = "{server.url}"\ntargets = [{LINUX}]\n'
        f'overlays = ["fixes"]\n{extra}'
    )


def write_overlay(root: Path) -> None:
    pkg = root / "fixes" / "packages" / "lib"
    (pkg / "patches").mkdir(parents=True)
    (root / "fixes" / "overlay.toml").write_text('[overlay]\nname = "fixes"\nformat = 1\n')
    (pkg / "overlay.toml").write_text(
        '[[rule]]\nversions = "==1.0"\nreason = "mark it"\npatches = ["patches/0001-mark.patch"]\n'
    )
    (root / PATCH_REL).write_bytes(PATCH)


@pytest.fixture
def pulled(
    make_index: Callable[..., FixtureIndex],
    serve: Callable[..., IndexServer],
    tmp_path: Path,
) -> Callable[..., Pulled]:
    """``pulled(extra_toml="", releases=None, deps=("app",))``: a locked and pulled project."""

    def factory(
        extra: str = "", releases: list[Release] | None = None, deps: tuple[str, ...] = ("app",)
    ) -> Pulled:
        index = make_index(releases or [APP, LIB, OTHER])
        server = serve(index)
        root = tmp_path / "proj"
        root.mkdir()
        write_project(root, server, list(deps), extra)
        write_overlay(root)
        monorepo.lock(root)
        pull(root)
        return Pulled(root, index, server)

    return factory


def failing(report: VerifyReport) -> dict[str, list[Item]]:
    return {c.name: c.items for c in report.checks if not c.passed}


def only(name: str, change: Callable[[LockedPackage], LockedPackage]) -> Callable[..., Any]:
    def apply(p: LockedPackage) -> LockedPackage:
        return change(p) if p.name == name else p

    return apply


# ------------------------------------------------------------------------- clean tree


def test_a_clean_pulled_tree_passes_every_offline_check(pulled: Any) -> None:
    p = pulled()
    before = stat_snapshot(p.root)
    report = verify(p.root)
    assert report.passed, report.to_dict()
    assert [c.name for c in report.checks] == ["lock", "tree"]
    assert all(c.passed and not c.items and not c.skipped for c in report.checks)
    assert report.check("tree").summary == "2 package trees"
    assert stat_snapshot(p.root) == before
    # the overlay patch really is part of what was verified
    assert "PATCHED = True" in (p.duni / "lib" / "lib" / "__init__.py").read_text()


def test_an_offline_verify_loads_neither_httpx_nor_pygit2(pulled: Any) -> None:
    """Start-up is most of a small verify: the HTTP client and libgit2 load only when needed."""
    p = pulled(deps=("other",))  # no git source, no patch
    code = (
        "import sys\nfrom monorepo.vendoring.verify.verifier import verify\n"
        "assert verify(sys.argv[1]).passed\n"
        "print(sorted(m for m in ('httpx', 'pygit2') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code, str(p.root)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


# ---------------------------------------------------------------------- tamper matrix


def edit_byte(p: Pulled) -> None:
    path = p.duni / "lib" / "lib" / "__init__.py"
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))


def append_file(p: Pulled) -> None:
    (p.duni / "app" / "app" / "new.py").write_text("x = 1\n")


def delete_file(p: Pulled) -> None:
    (p.duni / "app" / "app" / "data" / "info.txt").unlink()


def chmod_x(p: Pulled) -> None:
    os.chmod(p.duni / "app" / "app" / "data" / "info.txt", 0o755)


def symlink_file(p: Pulled) -> None:
    path = p.duni / "app" / "app" / "data" / "info.txt"
    path.unlink()
    path.symlink_to("more.txt")


def empty_dir(p: Pulled) -> None:
    (p.duni / "app" / "app" / "empty").mkdir()


def unlocked_dir(p: Pulled) -> None:
    (p.duni / "stray").mkdir()
    (p.duni / "stray" / "x.py").write_text("")


def edit_workspace(p: Pulled) -> None:
    path = p.duni / "workspace.toml"
    text = path.read_text()
    assert 'version = "1.0"' in text
    path.write_text(text.replace('version = "1.0"', 'version = "1.1"', 1))


def edit_lock_tree_hash(p: Pulled) -> None:
    rewrite_lock(
        p.root,
        only(
            "lib",
            lambda x: dataclasses.replace(x, tool={**x.tool, "tree-hash": "sha256:" + "a" * 64}),
        ),
    )


def edit_lock_sha256(p: Pulled) -> None:
    def change(x: LockedPackage) -> LockedPackage:
        assert isinstance(x.source, SdistSource)
        return dataclasses.replace(x, source=dataclasses.replace(x.source, sha256="b" * 64))

    rewrite_lock(p.root, only("app", change))


def edit_lock_size(p: Pulled) -> None:
    def change(x: LockedPackage) -> LockedPackage:
        assert isinstance(x.source, SdistSource) and x.source.size is not None
        return dataclasses.replace(x, source=dataclasses.replace(x.source, size=x.source.size + 1))

    rewrite_lock(p.root, only("app", change))


def edit_lock_version_and_filename(p: Pulled) -> None:
    # another version and its file name, the hash and the tree hash left alone
    def change(x: LockedPackage) -> LockedPackage:
        assert isinstance(x.source, SdistSource)
        url = x.source.url.replace("app-1.0.tar.gz", "app-1.1.tar.gz")
        source = dataclasses.replace(x.source, url=url)
        return dataclasses.replace(x, version=Version("1.1"), source=source)

    rewrite_lock(p.root, only("app", change))


def edit_lock_version_and_name(p: Pulled) -> None:
    # by hand, as PEP 751 wants them to agree: the version and the sdist's file name,
    # not the URL (which still downloads 1.0, whose hash is the one in the lock)
    path = p.root / "pylock.toml"
    text = path.read_text()
    start = text.index('name = "app"\nversion = "1.0"')
    edited = text[start:].replace('version = "1.0"', 'version = "1.1"', 1)
    edited = edited.replace('name = "app-1.0.tar.gz"', 'name = "app-1.1.tar.gz"', 1)
    path.write_text(text[:start] + edited)


def link_state(p: Pulled) -> None:
    # pull's records moved elsewhere and a link planted in their place
    elsewhere = p.root.parent / "elsewhere"
    shutil.move(p.duni / ".monorepo", elsewhere)
    (p.duni / ".monorepo").symlink_to(elsewhere)


def change_pyproject(p: Pulled) -> None:
    write_project(p.root, p.server, ["app", "other"])


def change_patch(p: Pulled) -> None:
    (p.root / PATCH_REL).write_bytes(PATCH.replace(b"PATCHED = True", b"PATCHED = False"))


TAMPERS = [
    # (tamper, check, code, a path the item must name)
    (edit_byte, "tree", "modified", "duni/lib/lib/__init__.py"),
    (append_file, "tree", "added", "duni/app/app/new.py"),
    (delete_file, "tree", "removed", "duni/app/app/data/info.txt"),
    (chmod_x, "tree", "mode-changed", "duni/app/app/data/info.txt"),
    (symlink_file, "tree", "type-changed", "duni/app/app/data/info.txt"),
    (empty_dir, "tree", "added", "duni/app/app/empty"),
    (unlocked_dir, "tree", "unknown", "duni/stray"),
    (edit_workspace, "tree", "workspace", "duni/workspace.toml"),
    (edit_lock_tree_hash, "tree", "tree-hash", "duni/lib"),
    (edit_lock_sha256, "tree", "source-changed", "duni/app"),
    (edit_lock_size, "tree", "source-changed", "duni/app"),
    (edit_lock_version_and_filename, "tree", "source-changed", "duni/app"),
    (link_state, "tree", "state", "duni/.monorepo"),
    (change_pyproject, "lock", "stale", "pyproject.toml"),
    (change_patch, "lock", "patch-changed", PATCH_REL),
]


@pytest.mark.parametrize(
    ("tamper", "check", "code", "path"), TAMPERS, ids=[t[0].__name__ for t in TAMPERS]
)
def test_tamper_is_caught_by_the_right_check_naming_the_path(
    pulled: Any, tamper: Callable[[Pulled], None], check: str, code: str, path: str
) -> None:
    p = pulled()
    assert verify(p.root).passed
    tamper(p)
    before = stat_snapshot(p.root)
    report = verify(p.root)
    assert stat_snapshot(p.root) == before, "verify wrote to the project"
    assert not report.passed
    failed = failing(report)
    assert list(failed) == [check], report.to_dict()
    matching = [i for i in failed[check] if i.code == code and path in i.paths]
    assert matching, [i.to_dict() for i in failed[check]]
    assert path in matching[0].message or matching[0].subject in (path, "pyproject.toml")


def test_a_lock_whose_version_and_file_name_were_edited_is_invalid(pulled: Any) -> None:
    p = pulled()
    edit_lock_version_and_name(p)
    report = verify(p.root)
    (item,) = report.check("lock").items
    assert item.code == "invalid" and "app-1.1.tar.gz" in item.message
    assert "app-1.0.tar.gz" in item.message and "monorepo lock" in item.message
    assert report.check("tree").skipped


def test_workspace_difference_names_the_package_and_key(pulled: Any) -> None:
    p = pulled()
    edit_workspace(p)
    items = verify(p.root).check("tree").items
    assert any("packages.app.version" in i.message and "1.1" in i.message for i in items), items


def test_pyproject_change_names_the_added_dependency(pulled: Any) -> None:
    p = pulled()
    change_pyproject(p)
    items = verify(p.root).check("lock").items
    assert any("other" in i.message and "added" in i.message for i in items), items
    # a loosened requirement the locked version still satisfies is not stale
    write_project(p.root, p.server, ["app>=0.5"])
    assert verify(p.root).passed


def test_tree_hash_edit_is_explained_by_the_rebuilt_tree(pulled: Any) -> None:
    p = pulled()
    edit_lock_tree_hash(p)
    (item,) = verify(p.root).check("tree").items
    assert "tree built from the locked source" in item.message
    assert "sha256:" + "a" * 64 in item.message


def test_without_manifest_files_are_named_from_the_cached_source(pulled: Any) -> None:
    p = pulled()
    (p.duni / ".monorepo" / "lib.manifest").unlink()
    edit_byte(p)
    items = verify(p.root).check("tree").items
    assert [(i.code, i.paths) for i in items] == [("modified", ("duni/lib/lib/__init__.py",))]


def test_without_manifest_or_cache_the_tree_check_still_fails_by_hash(
    pulled: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    p = pulled()
    (p.duni / ".monorepo" / "lib.manifest").unlink()
    monkeypatch.setenv("MONOREPO_CACHE_DIR", str(tmp_path / "empty-cache"))
    p.server.stop()  # and no network either
    assert verify(p.root).passed  # hashing alone proves a clean tree
    edit_byte(p)
    (item,) = verify(p.root).check("tree").items
    assert item.code == "tree-hash" and item.paths == ("duni/lib",)
    assert "cannot be named" in item.message and "cache" in item.message


def test_a_manifest_is_read_whether_or_not_it_is_exactly_what_pull_wrote(pulled: Any) -> None:
    """Without tree hashes in the lock, pull's manifest is the reference: verify trusts it
    when its entries hash to its recorded hash, however it is laid out, and not otherwise."""
    p = pulled("build-dependencies = false\n")
    path = p.duni / ".monorepo" / "lib.manifest"
    text = path.read_text()
    header, rest = text.split("\n", 1)
    path.write_text(f"{header}\n# a comment pull did not write\n{rest}")
    assert verify(p.root).passed
    edit_byte(p)
    items = verify(p.root).check("tree").items
    assert [(i.code, i.paths) for i in items] == [("modified", ("duni/lib/lib/__init__.py",))]
    # a damaged manifest proves nothing: the files are named from the cached source instead
    line = next(line for line in text.splitlines() if line.endswith(" lib/__init__.py"))
    path.write_text(text.replace(line, line.replace("file 644", "file 755")))
    items = verify(p.root).check("tree").items
    assert [(i.code, i.paths) for i in items] == [("modified", ("duni/lib/lib/__init__.py",))]


def test_a_clean_tree_is_checked_without_parsing_its_manifest(
    pulled: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pull's manifest of an unchanged tree is exactly the scanned tree's: no parse needed."""
    import monorepo.sources.manifest as manifest
    from monorepo.sources.treehash import parse_manifest as real

    p = pulled("build-dependencies = false\n")
    parsed: list[str] = []

    def counting(text: str) -> Any:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(manifest, "parse_manifest", counting)
    assert verify(p.root).passed
    assert parsed == []
    edit_byte(p)
    assert [i.code for i in verify(p.root).check("tree").items] == ["modified"]
    assert len(parsed) == 1  # the edited tree's manifest is parsed to name the file


def test_tree_progress_advances_once_per_package(pulled: Any) -> None:
    from monorepo._core.reporter import NullReporter

    class Counting(NullReporter):
        def __init__(self) -> None:
            self.steps: dict[str, int] = {}

        def advance(self, key: str, steps: int = 1) -> None:
            self.steps[key] = self.steps.get(key, 0) + steps

    p = pulled()
    shutil.rmtree(p.duni / "lib")
    reporter = Counting()
    verify(p.root, reporter=reporter)
    assert reporter.steps == {"verify:tree": 2}


def test_a_missing_package_dir_and_a_missing_duni(pulled: Any) -> None:
    p = pulled()
    shutil.rmtree(p.duni / "lib")
    items = verify(p.root).check("tree").items
    assert [(i.subject, i.code, i.paths) for i in items] == [("lib", "missing", ("duni/lib",))]
    shutil.rmtree(p.duni)
    items = verify(p.root).check("tree").items
    assert [(i.code, i.paths) for i in items] == [("missing", ("duni",))]


def test_several_edits_are_all_listed(pulled: Any) -> None:
    p = pulled()
    for tamper in (edit_byte, append_file, delete_file, unlocked_dir):
        tamper(p)
    codes = {(i.code, i.paths[0]) for i in verify(p.root).check("tree").items}
    assert codes >= {
        ("modified", "duni/lib/lib/__init__.py"),
        ("added", "duni/app/app/new.py"),
        ("removed", "duni/app/app/data/info.txt"),
        ("unknown", "duni/stray"),
    }


def test_packages_argument_limits_the_tree_check(pulled: Any) -> None:
    p = pulled()
    edit_byte(p)
    unlocked_dir(p)
    assert verify(p.root, packages=["app"]).passed
    report = verify(p.root, packages=["lib"])
    assert [i.code for i in report.check("tree").items] == ["modified"]
    with pytest.raises(LockFileError, match="nope"):
        verify(p.root, packages=["nope"])


def test_invalid_lock_fails_the_lock_check_and_skips_the_rest(pulled: Any) -> None:
    p = pulled()
    (p.root / "pylock.toml").write_text("lock-version = '1.0'\n[tool.monorepo]\nformat = 99\n")
    report = verify(p.root)
    assert not report.passed
    (item,) = report.check("lock").items
    assert item.code == "invalid" and item.paths == ("pylock.toml",)
    assert report.check("tree").skipped
    (p.root / "pylock.toml").unlink()
    assert verify(p.root).check("lock").items[0].code == "missing"


def test_incomplete_tool_table_and_bad_hash_are_reported(pulled: Any) -> None:
    p = pulled()

    def strip(x: LockedPackage) -> LockedPackage:
        tool = {k: v for k, v in x.tool.items() if k not in ("role", "build-backend")}
        assert isinstance(x.source, SdistSource)
        return dataclasses.replace(x, tool=tool, source=dataclasses.replace(x.source, sha256="xyz"))

    rewrite_lock(p.root, only("lib", strip))
    messages = [i.message for i in verify(p.root).check("lock").items]
    assert any("role" in m for m in messages), messages
    assert any("build-backend" in m for m in messages), messages
    assert any("'xyz' is not a sha256" in m for m in messages), messages


# ----------------------------------------------------------------------------- remote


def test_remote_downloads_again_and_catches_a_file_changed_on_the_server(
    pulled: Any,
) -> None:
    p = pulled()
    p.server.clear_requests()
    report = verify(p.root, remote=True)
    assert report.passed, report.to_dict()
    # downloaded again although the content store holds both files
    assert len(p.server.requests_for(r"^/files/lib-1\.0\.tar\.gz$")) == 1
    assert len(p.server.requests_for(r"^/files/app-1\.0\.tar\.gz$")) == 1
    p.index.replace_file("lib-1.0.tar.gz", b"not the file that was locked")
    report = verify(p.root, remote=True)
    assert list(failing(report)) == ["remote"]
    (item,) = report.check("remote").items
    assert item.subject == "lib" and item.code == "hash-mismatch"
    assert "lib-1.0.tar.gz" in item.message
    assert verify(p.root).passed  # the vendored tree itself is unchanged


def test_remote_compares_the_index_hash_and_warns_about_yanked(pulled: Any) -> None:
    p = pulled()
    p.index.publish(dataclasses.replace(LIB, yanked="broken build"))
    report = verify(p.root, remote=True)
    assert report.passed, report.to_dict()
    (warning,) = report.check("remote").warnings
    assert (
        warning.subject == "lib" and warning.code == "yanked" and "broken build" in warning.message
    )
    p.index.publish(dataclasses.replace(LIB, files={"lib/extra.py": "x = 2\n"}))
    codes = sorted(i.code for i in verify(p.root, remote=True).check("remote").items)
    assert codes == ["hash-mismatch", "index-hash"]


def test_remote_clones_a_git_source_afresh_and_needs_the_locked_commit(
    pulled: Any, tmp_path: Path
) -> None:
    repo = tmp_path / "gitlib"
    make_git_package(repo, Release("gitlib", "1.0", requires_dist=("lib",)), tag="v1.0")
    sources = f'[tool.monorepo.sources]\ngitlib = {{ git = "{repo}", rev = "v1.0" }}\n'
    p = pulled(sources, deps=("gitlib",))
    report = verify(p.root, remote=True)
    assert report.passed, report.to_dict()
    assert report.check("remote").summary == "1 download, 1 git commit"

    def gone(x: LockedPackage) -> LockedPackage:
        assert isinstance(x.source, VcsSource)
        return dataclasses.replace(x, source=dataclasses.replace(x.source, commit="0" * 40))

    rewrite_lock(p.root, only("gitlib", gone))
    report = verify(p.root, remote=True)
    (item,) = report.check("remote").items
    assert (item.subject, item.code) == ("gitlib", "hash-mismatch")
    assert "0" * 40 in item.message
    assert [i.code for i in report.check("tree").items] == ["source-changed"]


# ---------------------------------------------------------------------------- resolve


def test_resolve_without_exclude_newer_uses_the_newest_upload_time(pulled: Any) -> None:
    p = pulled()
    lock_bytes = (p.root / "pylock.toml").read_bytes()
    p.index.publish(Release("lib", "2.0", upload_time="2024-02-01T00:00:00Z"))
    report = verify(p.root, resolve=True)
    assert report.passed, report.to_dict()
    assert "2024-01-01T00:00:00Z" in report.check("resolve").summary
    # a release inside the window (backdated) changes what resolving gives
    p.index.publish(Release("lib", "1.5", upload_time="2023-06-01T00:00:00Z"))
    report = verify(p.root, resolve=True)
    assert list(failing(report)) == ["resolve"]
    (item,) = report.check("resolve").items
    assert (item.subject, item.code) == ("lib", "version")
    assert str(item).startswith("lib: 1.0 -> 1.5")
    assert (p.root / "pylock.toml").read_bytes() == lock_bytes


def test_resolve_with_exclude_newer_uses_the_locks(pulled: Any) -> None:
    p = pulled('exclude-newer = "2024-06-01T00:00:00Z"\n')
    p.index.publish(Release("lib", "2.0", upload_time="2024-07-01T00:00:00Z"))
    report = verify(p.root, resolve=True)
    assert report.passed, report.to_dict()
    assert "2024-06-01T00:00:00Z" in report.check("resolve").summary
    p.index.publish(Release("lib", "1.5", upload_time="2024-03-01T00:00:00Z"))
    (item,) = verify(p.root, resolve=True).check("resolve").items
    assert str(item).startswith("lib: 1.0 -> 1.5")


def test_report_to_dict_is_the_documented_json_schema(pulled: Any) -> None:
    p = pulled()
    edit_byte(p)
    data = json.loads(json.dumps(verify(p.root, remote=True).to_dict()))
    assert set(data) == {"schema", "project", "passed", "checks"}
    assert data["schema"] == SCHEMA == 1 and data["passed"] is False
    assert data["project"] == str(p.root)
    assert [c["name"] for c in data["checks"]] == ["lock", "tree", "remote"]
    for check in data["checks"]:
        assert set(check) == {"name", "passed", "skipped", "summary", "items", "warnings"}
    (item,) = data["checks"][1]["items"]
    assert item == {
        "subject": "lib",
        "code": "modified",
        "message": "1.0: modified: duni/lib/lib/__init__.py",
        "paths": ["duni/lib/lib/__init__.py"],
    }


# -------------------------------------------------------------------------------- CLI


def test_a_tree_1200_directories_deep_is_verified_with_the_json_intact(
    pulled: Any, capsys: pytest.CaptureFixture[str], deep_tree: Callable[..., Path]
) -> None:
    # Made on disk (extraction refuses such a tree): an edit, and a directory of its own.
    p = pulled()
    deep = deep_tree(p.duni / "lib" / "extra")
    (deep.parent / "ext.c").write_text("int x;\n")  # found only by a walk to the bottom
    deep_tree(p.duni / "stray")
    assert main(["--project", str(p.root), "verify", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    tree = next(c for c in data["checks"] if c["name"] == "tree")
    paths = {path for item in tree["items"] for path in item["paths"]}
    assert f"duni/{deep.relative_to(p.duni).as_posix()}" in paths
    assert "duni/stray" in paths
    workspace = [item["message"] for item in tree["items"] if item["code"] == "workspace"]
    assert any("c-extension" in message for message in workspace), workspace


def test_cli_text_json_and_exit_codes(pulled: Any, capsys: pytest.CaptureFixture[str]) -> None:
    p = pulled()
    assert main(["--project", str(p.root), "verify"]) == 0
    out = capsys.readouterr().out
    assert "lock: passed" in out and "tree: passed" in out
    edit_byte(p)
    append_file(p)
    assert main(["--project", str(p.root), "verify"]) == 1
    out = capsys.readouterr().out
    failures = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 2
    assert any("duni/lib/lib/__init__.py" in line for line in failures)
    assert any("duni/app/app/new.py" in line for line in failures)
    assert main(["--project", str(p.root), "verify", "--json", "--remote"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == SCHEMA and data["passed"] is False
    assert [c["name"] for c in data["checks"]] == ["lock", "tree", "remote"]
    tree = data["checks"][1]
    assert set(tree) == {"name", "passed", "skipped", "summary", "items", "warnings"}
    assert set(tree["items"][0]) == {"subject", "code", "message", "paths"}
    assert main(["--project", str(p.root), "verify", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["--project", str(p.root / "missing"), "verify"]) == 2
    assert monorepo.verify is verify and monorepo.VerifyReport is VerifyReport
