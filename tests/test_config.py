"""pyproject.toml parsing and index selection, against real files in tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from monorepo.errors import ConfigError
from monorepo.project.config import GitSource, ProjectConfig, load_config, parse_config
from monorepo.project.indexurl import pip_config_files, resolve_index_url, resolve_index_urls
from monorepo.project.targets import Target, host_target

MIRROR = "https://mirror.example/simple"
# TOML inline tables cannot span lines, hence one long line built here.
CROSS_TARGET = (
    '{ name = "linux-aarch64", python = "3.11", platform = "linux", machine = "aarch64", '
    'cc = "aarch64-linux-gnu-gcc", sysroot = "sysroots/aarch64", '
    'runner = "qemu-aarch64 -L {sysroot}" }'
)


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def load(tmp_path: Path, body: str) -> ProjectConfig:
    write(tmp_path, body)
    return load_config(tmp_path)


def config_error(tmp_path: Path, body: str) -> str:
    write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    message = str(info.value)
    assert "pyproject.toml" in message
    return message


def names(reqs: tuple[Requirement, ...]) -> list[str]:
    return [str(r) for r in reqs]


# ---------------------------------------------------------------------------
# defaults and [project]


def test_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "[project]\nname = 'demo'\n")
    assert config.pyproject == tmp_path / "pyproject.toml"
    assert config.root == tmp_path
    assert config.name == "demo"
    assert config.dependencies == ()
    assert config.optional_dependencies == {}
    assert config.dependency_groups == {}
    assert config.requires_python is None
    assert config.index_url is None
    assert config.extra_index_urls == ()
    assert config.targets == (host_target(),)
    assert config.constraints == ()
    assert config.overrides == ()
    assert config.exclude_newer is None
    assert config.prereleases == "if-necessary"
    assert config.sources == {}
    assert config.build_dependencies is True
    assert config.duni == tmp_path / "duni"
    assert config.overlays == ()


def test_no_project_table_is_allowed(tmp_path: Path) -> None:
    config = load(tmp_path, "[dependency-groups]\ndev = ['pytest']\n")
    assert config.name is None
    assert names(config.dependency_groups["dev"]) == ["pytest"]


def test_load_config_accepts_file_path(tmp_path: Path) -> None:
    path = write(tmp_path, "[project]\nname = 'x'\n")
    assert load_config(path).pyproject == path


def test_project_tables(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [project]
        name = "demo"
        requires-python = ">=3.11"
        dependencies = ["httpx>=0.27", "attrs; sys_platform == 'win32'"]
        [project.optional-dependencies]
        Zeta = ["zstandard"]
        Socks_Proxy = ["socksio>=1", "idna"]
        """,
    )
    assert names(config.dependencies) == ["httpx>=0.27", 'attrs; sys_platform == "win32"']
    assert list(config.optional_dependencies) == ["socks-proxy", "zeta"]
    assert names(config.optional_dependencies[canonicalize_name("socks-proxy")]) == [
        "socksio>=1",
        "idna",
    ]
    assert config.requires_python == SpecifierSet(">=3.11")


def test_dynamic_dependencies_refused(tmp_path: Path) -> None:
    message = config_error(
        tmp_path, "[project]\nname = 'x'\ndynamic = ['version', 'dependencies']\n"
    )
    assert "dynamic" in message and "'dependencies'" in message


def test_dynamic_version_is_fine(tmp_path: Path) -> None:
    assert load(tmp_path, "[project]\nname = 'x'\ndynamic = ['version']\n").name == "x"


def test_invalid_requirement_names_table_and_index(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[project]\ndependencies = ['ok', 'bad >=']\n")
    assert "[project] dependencies[1]" in message
    assert "'bad >='" in message


def test_invalid_optional_requirement(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[project.optional-dependencies]\nfast = ['!!']\n")
    assert "[project.optional-dependencies] fast[0]" in message


def test_duplicate_extras_after_normalization(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[project.optional-dependencies]\nA_b = ['x']\na-B = ['y']\n")
    assert "'a-b'" in message


def test_invalid_requires_python(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[project]\nrequires-python = '>>3'\n")
    assert "requires-python" in message and "'>>3'" in message


def test_dependencies_wrong_type(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[project]\ndependencies = 'httpx'\n")
    assert "[project] dependencies" in message
    assert "array of strings" in message and "string 'httpx'" in message


def test_invalid_toml_names_line_and_column(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[project]\nname = 'x'\ndependencies = [\n  'a' 'b'\n]\n")
    assert "invalid TOML" in message
    assert "line 4" in message and "column" in message


def test_missing_file_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "pyproject.toml") in str(info.value)


def test_non_utf8_file(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_bytes(b"[project]\nname = '\xff'\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(tmp_path)


# ---------------------------------------------------------------------------
# [dependency-groups]


def test_dependency_groups_with_includes(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [dependency-groups]
        Test_Suite = ["pytest>=8", {include-group = "lint"}, {include-group = "typing"}]
        lint = ["ruff"]
        typing = ["mypy", {include-group = "LINT"}]
        """,
    )
    assert list(config.dependency_groups) == ["lint", "test-suite", "typing"]
    assert names(config.dependency_groups["typing"]) == ["mypy", "ruff"]
    assert names(config.dependency_groups["test-suite"]) == ["pytest>=8", "ruff", "mypy", "ruff"]


def test_dependency_group_cycle(tmp_path: Path) -> None:
    message = config_error(
        tmp_path,
        """
        [dependency-groups]
        a = ["x", {include-group = "b"}]
        b = [{include-group = "a"}]
        """,
    )
    assert "[dependency-groups] a" in message
    assert "Cyclic" in message


def test_dependency_group_self_include(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[dependency-groups]\nme = [{include-group = 'me'}]\n")
    assert "[dependency-groups] me" in message and "includes itself" in message


def test_dependency_group_unknown_include(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[dependency-groups]\ndev = [{include-group = 'nope'}]\n")
    assert "[dependency-groups] dev" in message
    assert "'nope'" in message and "not defined" in message


def test_dependency_group_bad_requirement(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[dependency-groups]\ndev = ['ok', 'no good']\n")
    assert "[dependency-groups] dev[1]" in message


def test_dependency_group_bad_object(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[dependency-groups]\ndev = [{include = 'x'}]\n")
    assert "[dependency-groups] dev[0]" in message and "include-group" in message


def test_dependency_group_not_a_list(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[dependency-groups]\ndev = 'pytest'\n")
    assert "[dependency-groups] dev" in message and "string 'pytest'" in message


def test_dependency_group_duplicate_names(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[dependency-groups]\nDev = ['a']\ndev = ['b']\n")
    assert "'dev'" in message


# ---------------------------------------------------------------------------
# [tool.monorepo]


def test_every_tool_key(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f"""
        [tool.monorepo]
        index-url = "{MIRROR}"
        extra-index-urls = ["../local-index", "file:///srv/idx/../other"]
        targets = [
          {{ name = "linux-x86_64", python = "3.11", platform = "linux", machine = "x86_64" }},
          {CROSS_TARGET},
        ]
        overlays = ["overlays", "git+https://git.example/overlays.git@main"]
        constraints = ["urllib3<3", "idna; python_version < '3.12'"]
        overrides = ["somepkg>=2", "other[x] @ https://files.example/o.tar.gz"]
        exclude-newer = "2026-11-01T00:00:00Z"
        prereleases = "allow"
        build-dependencies = false
        duni = "vendor/duni"

        [tool.monorepo.sources]
        My_Lib = {{ git = "https://git.example/mylib.git", rev = "v1.2" }}
        local = {{ git = "../local-repo", subdirectory = "pkg/sub" }}
        """,
    )
    assert config.index_url == MIRROR
    assert config.extra_index_urls == (
        (tmp_path.parent / "local-index").as_uri(),
        "file:///srv/other",
    )
    assert [t.name for t in config.targets] == ["linux-x86_64", "linux-aarch64"]
    assert config.targets[1] == Target(
        name="linux-aarch64",
        python="3.11",
        platform="linux",
        machine="aarch64",
        cc="aarch64-linux-gnu-gcc",
        sysroot=str(tmp_path / "sysroots" / "aarch64"),
        runner="qemu-aarch64 -L {sysroot}",
    )
    assert config.overlays == (
        str(tmp_path / "overlays"),
        "git+https://git.example/overlays.git@main",
    )
    assert names(config.constraints) == ["urllib3<3", 'idna; python_version < "3.12"']
    assert names(config.overrides) == ["somepkg>=2", "other[x] @ https://files.example/o.tar.gz"]
    assert config.exclude_newer == datetime(2026, 11, 1, tzinfo=UTC)
    assert config.prereleases == "allow"
    assert config.build_dependencies is False
    assert config.duni == tmp_path / "vendor" / "duni"
    assert config.sources == {
        "local": GitSource(
            name=canonicalize_name("local"),
            url=str(tmp_path.parent / "local-repo"),
            rev=None,
            subdirectory="pkg/sub",
        ),
        "my-lib": GitSource(
            name=canonicalize_name("my-lib"),
            url="https://git.example/mylib.git",
            rev="v1.2",
        ),
    }
    assert list(config.sources) == ["local", "my-lib"]


def test_relative_index_url_becomes_file_url(tmp_path: Path) -> None:
    config = load(tmp_path, "[tool.monorepo]\nindex-url = 'indexes/simple'\n")
    assert config.index_url == (tmp_path / "indexes" / "simple").as_uri()
    url, where = resolve_index_url(config, environ={})
    assert url == (tmp_path / "indexes" / "simple").as_uri() + "/"
    assert "pyproject.toml" in where and "index-url" in where


def test_scp_style_git_source_kept(tmp_path: Path) -> None:
    config = load(tmp_path, "[tool.monorepo.sources]\nx = { git = 'git@git.example:me/x.git' }\n")
    assert config.sources[canonicalize_name("x")].url == "git@git.example:me/x.git"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"2026-11-01T00:00:00Z"', datetime(2026, 11, 1, tzinfo=UTC)),
        ('"2026-11-01T02:30:00+02:00"', datetime(2026, 11, 1, 0, 30, tzinfo=UTC)),
        ('"2026-11-01"', datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T05:00:00-01:00", datetime(2026, 11, 1, 6, tzinfo=UTC)),
        ("2026-11-01T05:00:00", datetime(2026, 11, 1, 5, tzinfo=UTC)),
    ],
)
def test_exclude_newer_forms(tmp_path: Path, value: str, expected: datetime) -> None:
    config = load(tmp_path, f"[tool.monorepo]\nexclude-newer = {value}\n")
    assert config.exclude_newer == expected
    assert config.exclude_newer is not None
    assert config.exclude_newer.utcoffset() is not None
    assert config.exclude_newer.tzinfo == UTC


@pytest.mark.parametrize("value", ['"yesterday"', "12", '"2026-13-01"'])
def test_exclude_newer_invalid(tmp_path: Path, value: str) -> None:
    message = config_error(tmp_path, f"[tool.monorepo]\nexclude-newer = {value}\n")
    assert "'exclude-newer'" in message and "2026-11-01" in message


def test_unknown_key_suggests_closest(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[tool.monorepo]\nprerelease = 'allow'\n")
    assert "'prerelease' is unknown" in message
    assert "Did you mean 'prereleases'?" in message
    assert "Known keys:" in message and "exclude-newer" in message


def test_unknown_key_without_close_match(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[tool.monorepo]\nzzz = 1\n")
    assert "'zzz' is unknown" in message and "Did you mean" not in message


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ("index-url = 3", ["'index-url'", "a string", "number 3"]),
        ("extra-index-urls = 'x'", ["'extra-index-urls'", "array of strings"]),
        ("extra-index-urls = [1]", ["extra-index-urls'[0]", "number 1"]),
        ("targets = {}", ["'targets'", "array of target tables", "a table"]),
        ("targets = []", ["'targets'", "empty"]),
        ("overlays = 'overlays'", ["'overlays'", "array of strings"]),
        ("constraints = [true]", ["constraints[0]", "boolean true"]),
        ("overrides = 'x'", ["overrides", "array of strings"]),
        ("prereleases = true", ["'prereleases'", "a string", "boolean true"]),
        ("prereleases = 'alow'", ["'prereleases'", "'alow'", "Did you mean 'allow'"]),
        ("build-dependencies = 'yes'", ["'build-dependencies'", "true or false", "'yes'"]),
        ("duni = 1", ["'duni'", "a string"]),
        ("sources = []", ["'sources'", "a table"]),
    ],
)
def test_wrong_types(tmp_path: Path, body: str, fragments: list[str]) -> None:
    message = config_error(tmp_path, f"[tool.monorepo]\n{body}\n")
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_constraint_with_extras_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[tool.monorepo]\nconstraints = ['ok<2', 'httpx[http2]<1']\n")
    assert "[tool.monorepo] constraints[1]" in message and "extras" in message


def test_constraint_with_url_refused(tmp_path: Path) -> None:
    message = config_error(
        tmp_path, "[tool.monorepo]\nconstraints = ['x @ https://files.example/x.tar.gz']\n"
    )
    assert "[tool.monorepo] constraints[0]" in message and "URL" in message


def test_invalid_override(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[tool.monorepo]\noverrides = ['a', 'b', '=c']\n")
    assert "[tool.monorepo] overrides[2]" in message and "'=c'" in message


def test_invalid_target_names_index(tmp_path: Path) -> None:
    message = config_error(
        tmp_path,
        """
        [tool.monorepo]
        targets = [
          { name = "a", python = "3.11", platform = "linux", machine = "x86_64" },
          { name = "b", python = "3.11", platform = "solaris", machine = "x86_64" },
        ]
        """,
    )
    assert "targets[1]" in message and "'solaris'" in message


def test_duplicate_target_names(tmp_path: Path) -> None:
    message = config_error(
        tmp_path,
        """
        [tool.monorepo]
        targets = [
          { name = "a", python = "3.11", platform = "linux", machine = "x86_64" },
          { name = "a", python = "3.12", platform = "linux", machine = "x86_64" },
        ]
        """,
    )
    assert "targets[1]" in message and "unique" in message


@pytest.mark.parametrize("duni", [".", "..", "sub/.."])
def test_duni_must_not_contain_project(tmp_path: Path, duni: str) -> None:
    message = config_error(tmp_path, f"[tool.monorepo]\nduni = '{duni}'\n")
    assert "'duni'" in message and "subdirectory" in message


def test_absolute_duni(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    project = tmp_path / "project"
    project.mkdir()
    config = load(project, f"[tool.monorepo]\nduni = '{target.as_posix()}'\n")
    assert config.duni == target


def test_overlay_url_without_git_prefix(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[tool.monorepo]\noverlays = ['https://x.example/o.git']\n")
    assert "overlays[0]" in message and "git+" in message


def test_duplicate_overlay(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[tool.monorepo]\noverlays = ['o', './o']\n")
    assert "overlays[1]" in message and "twice" in message


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ("x = { git = 'u', branch = 'main' }", ["sources] x", "'branch'", "Did you mean"]),
        ("x = { rev = 'v1' }", ["sources] x", "'git'"]),
        ("x = { git = 1 }", ["sources] x key 'git'", "number 1"]),
        ("x = { git = 'u', rev = 2 }", ["sources] x key 'rev'", "number 2"]),
        ("x = { git = 'u', subdirectory = '../up' }", ["'subdirectory'", "'../up'"]),
        ("x = { git = 'u', subdirectory = '/abs' }", ["'subdirectory'", "'/abs'"]),
        ("x = 'https://git.example/x.git'", ["sources] x", "a table"]),
        ("A = { git = 'u' }\na = { git = 'v' }", ["'a' twice"]),
    ],
)
def test_source_errors(tmp_path: Path, body: str, fragments: list[str]) -> None:
    message = config_error(tmp_path, f"[tool.monorepo.sources]\n{body}\n")
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_index_url_bad_scheme(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[tool.monorepo]\nindex-url = 'ftp://x.example/simple'\n")
    assert "index-url" in message and "'ftp'" in message


def test_parse_config_is_pure(tmp_path: Path) -> None:
    # no file exists: parse_config must not read one
    config = parse_config(
        {"project": {"dependencies": ["a"]}, "tool": {"monorepo": {"prereleases": "disallow"}}},
        pyproject=tmp_path / "missing" / "pyproject.toml",
    )
    assert config.root == tmp_path / "missing"
    assert config.prereleases == "disallow"
    assert names(config.dependencies) == ["a"]


def test_other_tools_are_ignored(tmp_path: Path) -> None:
    config = load(tmp_path, "[tool.ruff]\nline-length = 3\n[tool.monorepo]\nduni = 'd'\n")
    assert config.duni == tmp_path / "d"


# ---------------------------------------------------------------------------
# resolve_index_url


def pip_conf(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pip.ini"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path: Path) -> ProjectConfig:
    return load(tmp_path, "[project]\nname = 'x'\n")


def test_precedence_flag_first(tmp_path: Path) -> None:
    config = load(tmp_path, f"[tool.monorepo]\nindex-url = '{MIRROR}'\n")
    env = {"MONOREPO_INDEX_URL": "https://a.example/", "PIP_INDEX_URL": "https://b.example/"}
    url, where = resolve_index_url(config, flag="https://flag.example/simple", environ=env)
    assert (url, where) == ("https://flag.example/simple/", "--index-url")


def test_precedence_pyproject_over_env(tmp_path: Path) -> None:
    config = load(tmp_path, f"[tool.monorepo]\nindex-url = '{MIRROR}'\n")
    env = {"MONOREPO_INDEX_URL": "https://a.example/", "PIP_INDEX_URL": "https://b.example/"}
    url, where = resolve_index_url(config, environ=env)
    assert url == MIRROR + "/"
    assert "pyproject.toml" in where


def test_precedence_monorepo_env_over_pip_env(project: ProjectConfig, tmp_path: Path) -> None:
    conf = pip_conf(tmp_path, "[global]\nindex-url = https://conf.example/simple\n")
    env = {
        "MONOREPO_INDEX_URL": "https://a.example/simple",
        "PIP_INDEX_URL": "https://b.example/simple",
        "PIP_CONFIG_FILE": str(conf),
    }
    assert resolve_index_url(project, environ=env) == (
        "https://a.example/simple/",
        "environment variable MONOREPO_INDEX_URL",
    )
    del env["MONOREPO_INDEX_URL"]
    assert resolve_index_url(project, environ=env) == (
        "https://b.example/simple/",
        "environment variable PIP_INDEX_URL",
    )


def test_pip_config_file_global(project: ProjectConfig, tmp_path: Path) -> None:
    conf = pip_conf(tmp_path, "[global]\nindex-url = https://conf.example/simple\n")
    url, where = resolve_index_url(
        project, environ={"PIP_CONFIG_FILE": str(conf), "HOME": str(tmp_path)}
    )
    assert url == "https://conf.example/simple/"
    assert str(conf) in where and "[global]" in where


def test_pip_config_install_section_wins(project: ProjectConfig, tmp_path: Path) -> None:
    conf = pip_conf(
        tmp_path,
        """
        [install]
        index_url = https://install.example/simple
        [global]
        index-url = https://global.example/simple
        """,
    )
    url, where = resolve_index_url(project, environ={"PIP_CONFIG_FILE": str(conf)})
    assert url == "https://install.example/simple/"
    assert "[install]" in where


def test_pip_config_relative_path_index(project: ProjectConfig, tmp_path: Path) -> None:
    conf = pip_conf(tmp_path, "[global]\nindex-url = ./local-index\n")
    url, _ = resolve_index_url(project, environ={"PIP_CONFIG_FILE": str(conf)})
    assert url == (project.root / "local-index").as_uri() + "/"


def test_pip_user_config_file_via_home(project: ProjectConfig, tmp_path: Path) -> None:
    if sys.platform == "win32":
        pytest.skip("user config location differs on Windows")
    home = tmp_path / "home"
    user_conf = home / ".config" / "pip" / "pip.conf"
    user_conf.parent.mkdir(parents=True)
    user_conf.write_text("[global]\nindex-url = https://user.example/simple\n")
    env = {"HOME": str(home)}
    files = pip_config_files(env)
    assert user_conf in files
    later = [p for p in files[files.index(user_conf) + 1 :] if p.is_file()]
    if any("index" in p.read_text(errors="replace") for p in later):
        pytest.skip(f"a site-wide pip config outranks the user's here: {later}")
    url, where = resolve_index_url(project, environ=env)
    assert url == "https://user.example/simple/"
    assert str(user_conf) in where


def test_pip_config_file_env_skips_user_files(tmp_path: Path) -> None:
    conf = pip_conf(tmp_path, "[global]\n")
    files = pip_config_files({"PIP_CONFIG_FILE": str(conf), "HOME": str(tmp_path / "home")})
    assert files[-1] == conf
    assert tmp_path / "home" / ".config" / "pip" / "pip.conf" not in files


def test_pip_config_devnull_means_none(project: ProjectConfig) -> None:
    assert pip_config_files({"PIP_CONFIG_FILE": os.devnull}) == []


def test_default_from_installed_pip(project: ProjectConfig) -> None:
    pytest.importorskip("pip")
    from pip._internal.models.index import PyPI

    url, where = resolve_index_url(project, environ={"PIP_CONFIG_FILE": os.devnull})
    assert url == PyPI.simple_url.rstrip("/") + "/"
    assert "pip" in where


def test_no_index_anywhere(project: ProjectConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    # Make pip unfindable, as with no pip installed (a fault not made for real here:
    # the test environment needs its pip).
    monkeypatch.setitem(sys.modules, "pip", None)
    with pytest.raises(ConfigError) as info:
        resolve_index_url(project, environ={"PIP_CONFIG_FILE": os.devnull})
    message = str(info.value)
    for way in ("--index-url", "[tool.monorepo]", "MONOREPO_INDEX_URL", "PIP_INDEX_URL", "pip"):
        assert way in message


def test_flag_path_and_file_urls(project: ProjectConfig, tmp_path: Path) -> None:
    expected = (tmp_path / "idx").as_uri() + "/"
    assert resolve_index_url(project, flag="idx", environ={})[0] == expected
    assert resolve_index_url(project, flag=str(tmp_path / "idx"), environ={})[0] == expected
    assert resolve_index_url(project, flag=f"file://{tmp_path}/a/../idx", environ={})[0] == expected
    assert resolve_index_url(project, flag=f"file://localhost{tmp_path}/idx/", environ={})[0] == (
        expected
    )


def test_env_relative_path_without_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url, _ = resolve_index_url(None, environ={"MONOREPO_INDEX_URL": "here"})
    assert url == (tmp_path / "here").as_uri() + "/"


def test_file_url_with_remote_host_refused(project: ProjectConfig) -> None:
    with pytest.raises(ConfigError, match=r"--index-url.*must be local"):
        resolve_index_url(project, flag="file://server/share", environ={})


def test_the_default_index_and_the_freshness_check_load_neither_pip_nor_the_resolver() -> None:
    """Every pull and build checks the lock's freshness, which needs the index URL: pip's
    package imports and resolvelib cost a no-op pull a fifth of its time."""
    code = (
        "import os, sys\n"
        "from monorepo.project.indexurl import resolve_index_url\n"
        "import monorepo.locking.freshness\n"
        "url, where = resolve_index_url(None, environ={'PIP_CONFIG_FILE': os.devnull})\n"
        "print(where)\n"
        "print(sorted(m for m in ('pip', 'pip._internal', 'resolvelib') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert out == ["the default index of the installed pip", "[]"]


# -- pip's extra-index-url ----------------------------------------------------


def test_pip_extra_index_url_from_config_beside_pip_index(
    project: ProjectConfig, tmp_path: Path
) -> None:
    extra = tmp_path / "extra-index"
    extra.mkdir()
    conf = pip_conf(
        tmp_path,
        f"""
        [global]
        index-url = https://conf.example/simple
        extra-index-url = https://one.example/simple
            {extra.as_uri()}
        """,
    )
    choice = resolve_index_urls(project, environ={"PIP_CONFIG_FILE": str(conf)})
    assert choice.urls == [
        "https://conf.example/simple/",
        "https://one.example/simple/",
        extra.as_uri() + "/",
    ]
    assert choice.skipped == ()


def test_pip_extra_index_url_env_replaces_config(project: ProjectConfig, tmp_path: Path) -> None:
    conf = pip_conf(tmp_path, "[global]\nextra-index-url = https://conf.example/simple\n")
    env = {
        "PIP_CONFIG_FILE": str(conf),
        "PIP_INDEX_URL": "https://main.example/simple",
        "PIP_EXTRA_INDEX_URL": "https://a.example/simple  https://b.example/simple",
    }
    assert resolve_index_urls(project, environ=env).urls == [
        "https://main.example/simple/",
        "https://a.example/simple/",
        "https://b.example/simple/",
    ]
    del env["PIP_EXTRA_INDEX_URL"]
    assert resolve_index_urls(project, environ=env).extras == ("https://conf.example/simple/",)


def test_pip_extra_index_missing_file_directory_is_skipped_with_a_note(
    project: ProjectConfig, tmp_path: Path
) -> None:
    """This machine's kind of pip.conf: extra file:// indexes that do not exist."""
    missing = tmp_path / "no" / "such" / "simple"
    conf = pip_conf(
        tmp_path,
        f"[global]\nindex-url = https://conf.example/simple\n"
        f"extra-index-url = {missing.as_uri()} https://kept.example/simple\n",
    )
    choice = resolve_index_urls(project, environ={"PIP_CONFIG_FILE": str(conf)})
    assert choice.urls == ["https://conf.example/simple/", "https://kept.example/simple/"]
    assert len(choice.skipped) == 1
    assert str(missing.as_uri()) in choice.skipped[0] and str(conf) in choice.skipped[0]
    assert "does not exist" in choice.skipped[0]


def test_pip_extra_index_not_mixed_with_the_projects_own_index(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f"[tool.monorepo]\nindex-url = '{MIRROR}'\n"
        "extra-index-urls = ['https://project-extra.example/simple']\n",
    )
    env = {"PIP_EXTRA_INDEX_URL": "https://pip-extra.example/simple"}
    assert resolve_index_urls(config, environ=env).urls == [
        MIRROR + "/",
        *config.extra_index_urls,
    ]
    assert config.extra_index_urls[0].startswith("https://project-extra.example/simple")
    flagged = resolve_index_urls(None, flag="https://flag.example/", environ=env)
    assert flagged.extras == ()
    own = resolve_index_urls(None, environ={**env, "MONOREPO_INDEX_URL": "https://own.example/"})
    assert own.extras == ()
