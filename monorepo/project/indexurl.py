"""Which index, and how its URL is written: one rule for every index URL the tool is given.

:func:`normalize_index_url` is that rule (a path or ``file:`` URL becomes one normalised
``file://`` URL, relative paths anchored at a base directory); the project's settings,
the command line and the index client all go through it.  :func:`resolve_index_url`
picks the primary index the way pip users expect.
"""

from __future__ import annotations

import configparser
import importlib.util
import os
import re
import sys
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from monorepo._core.paths import url_path
from monorepo.errors import ConfigError

__all__ = [
    "IndexChoice",
    "is_url",
    "normalize_index_url",
    "pip_config_files",
    "resolve_index_url",
    "resolve_index_urls",
]


class Project(Protocol):
    """What index selection needs of a :class:`~monorepo.project.config.ProjectConfig`."""

    @property
    def root(self) -> Path: ...

    @property
    def pyproject(self) -> Path: ...

    @property
    def index_url(self) -> str | None: ...

    @property
    def extra_index_urls(self) -> tuple[str, ...]: ...


_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_url(text: str) -> bool:
    """Whether *text* is a URL (a scheme of two letters or more, then ``://``), not a path."""
    return bool(_URL_RE.match(text))


def _file_url(path: Path) -> str:
    return path.as_uri()


def normalize_index_url(value: str, *, base: Path, where: str, slash: bool = True) -> str:
    """Turn what a user wrote for an index into a URL the client can fetch.

    Local indexes are first class, so a path (relative to *base*) or a ``file:``
    URL both become one normalised ``file://`` URL; the trailing slash matters
    because project pages are joined onto it.  *where* names the setting for the
    error message.  Pure: no file is looked at.
    """
    text = value.strip()
    if not text:
        raise ConfigError(f"{where}: the index URL is empty; give a URL or a directory path.")
    if is_url(text) or text.startswith("file:"):
        parts = urllib.parse.urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ConfigError(
                    f"{where}: {value!r} names host {parts.netloc!r}; a file: URL must "
                    "be local, e.g. file:///srv/index/."
                )
            local = url_path(parts.path)
            url = _file_url(Path(os.path.normpath(base / local)))
        elif scheme in ("http", "https"):
            if not parts.netloc:
                raise ConfigError(f"{where}: {value!r} has no host name.")
            url = text
        else:
            raise ConfigError(
                f"{where}: {value!r} uses scheme {scheme!r}; an index must be an http://, "
                "https:// or file:// URL, or a directory path."
            )
    else:
        url = _file_url(Path(os.path.normpath(base / Path(text).expanduser())))
    if slash and not url.endswith("/"):
        url += "/"
    return url


# ---------------------------------------------------------------------------
# index selection


def pip_config_files(environ: Mapping[str, str]) -> list[Path]:
    """The configuration files pip would read, lowest priority first.

    Mirrors pip's own order (global, user, site, then ``PIP_CONFIG_FILE``) so
    that monorepo talks to the index the user already told pip about.
    ``PIP_CONFIG_FILE=os.devnull`` turns them all off, as in pip.
    """
    env_file = environ.get("PIP_CONFIG_FILE")
    if env_file is not None and env_file == os.devnull:
        return []
    home = Path(environ.get("HOME") or environ.get("USERPROFILE") or Path.home())
    files: list[Path] = []
    if sys.platform == "win32":
        program_data = environ.get("PROGRAMDATA", r"C:\ProgramData")
        appdata = environ.get("APPDATA") or str(home / "AppData" / "Roaming")
        files.append(Path(program_data) / "pip" / "pip.ini")
        user = [home / "pip" / "pip.ini", Path(appdata) / "pip" / "pip.ini"]
        site = Path(sys.prefix) / "pip.ini"
    else:
        xdg_dirs = environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
        files.extend(Path(d) / "pip" / "pip.conf" for d in xdg_dirs.split(os.pathsep) if d)
        files.append(Path("/etc/pip.conf"))
        xdg_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
        user = [home / ".pip" / "pip.conf"]
        if sys.platform == "darwin":
            user.append(home / "Library" / "Application Support" / "pip" / "pip.conf")
        user.append(xdg_home / "pip" / "pip.conf")
        site = Path(sys.prefix) / "pip.conf"
    # pip skips the user files when PIP_CONFIG_FILE names an existing file.
    if not (env_file and os.path.exists(env_file)):
        files.extend(user)
    files.append(site)
    if env_file:
        files.append(Path(env_file))
    return files


def _read_pip_config(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(
            f"{path}: pip configuration file cannot be parsed ({exc}); fix it or set "
            "PIP_CONFIG_FILE to another file."
        ) from exc
    return parser


def _pip_config_value(environ: Mapping[str, str], option: str) -> tuple[str, Path, str] | None:
    """The value pip's configuration files give *option*, with the file and section.

    Later files win, and pip's install command lets ``[install]`` override ``[global]``.
    """
    found: tuple[str, Path, str] | None = None
    for path in pip_config_files(environ):
        if not path.is_file():
            continue
        parser = _read_pip_config(path)
        for section in ("global", "install"):
            if not parser.has_section(section):
                continue
            for key in (option, option.replace("-", "_")):
                if parser.has_option(section, key):
                    value = parser.get(section, key).strip()
                    if value:
                        found = (value, path, section)
    return found


def _pip_config_index(environ: Mapping[str, str]) -> tuple[str, Path, str] | None:
    """The index-url pip's configuration files set, with the file and section."""
    return _pip_config_value(environ, "index-url")


def _pip_default_index() -> str | None:
    """The default index of the pip beside this interpreter.

    Imported lazily and defensively: pip's internals are not an API, and the
    point is only to agree with the pip the user runs, without writing any index
    address into this project.
    """
    try:
        module = _load_pip_index_module()
        url = getattr(module.PyPI, "simple_url", None)
    except Exception:
        return None
    return url if isinstance(url, str) and url else None


def _load_pip_index_module() -> Any:
    """pip's ``_internal/models/index.py`` alone, without running pip's package imports.

    Importing ``pip._internal.models.index`` the usual way runs ``pip/__init__`` and
    ``pip/_internal/__init__`` first (logging and TLS set-up, tens of milliseconds);
    every ``pull`` and ``build`` asks for the index URL to check the lock's freshness,
    so the module, which imports only ``urllib.parse``, is loaded from its file.
    """
    spec = importlib.util.find_spec("pip")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "_internal" / "models" / "index.py"
        if path.is_file():
            loader = importlib.util.spec_from_file_location("_monorepo_pip_index", path)
            if loader is None or loader.loader is None:
                return None
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
            return module
    return None


def resolve_index_url(
    config: Project | None,
    *,
    flag: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """Pick the primary index and say where the choice came from.

    The order follows what the user said most recently and most specifically:
    the command line, the project, monorepo's own variable, then whatever pip is
    configured with, so an existing pip setup (a company mirror) just works.
    Relative paths are anchored at the project root (the working directory when
    there is no project).  The result always ends with ``/``.
    """
    env = os.environ if environ is None else environ
    base = config.root if config is not None else Path.cwd()

    if flag:
        return normalize_index_url(flag, base=base, where="--index-url"), "--index-url"
    if config is not None and config.index_url:
        where = f"{config.pyproject}: [tool.monorepo] index-url"
        return normalize_index_url(config.index_url, base=base, where=where), where
    for var in ("MONOREPO_INDEX_URL", "PIP_INDEX_URL"):
        value = env.get(var, "").strip()
        if value:
            where = f"environment variable {var}"
            return normalize_index_url(value, base=base, where=where), where
    from_pip = _pip_config_index(env)
    if from_pip is not None:
        value, path, section = from_pip
        where = f"{path}: [{section}] index-url"
        return normalize_index_url(value, base=base, where=where), where
    default = _pip_default_index()
    if default is not None:
        where = "the default index of the installed pip"
        return normalize_index_url(default, base=base, where=where), where
    raise ConfigError(
        "No package index is configured and no pip is installed to supply a default. "
        "Configure one in any of these ways: pass --index-url URL; set index-url in "
        "[tool.monorepo] in pyproject.toml; set the MONOREPO_INDEX_URL (or "
        "PIP_INDEX_URL) environment variable; or set index-url under [global] in a "
        "pip configuration file (e.g. ~/.config/pip/pip.conf). A local directory "
        "laid out as a simple index works too."
    )


@dataclass(frozen=True)
class IndexChoice:
    """Every index a lock reads, and where each choice came from.

    ``skipped`` holds one sentence per extra index of pip's configuration that was left
    out (a ``file://`` directory that does not exist): pip only warns about those, and a
    stale line in a pip.conf must not break a lock, so the caller reports them.
    """

    primary: str
    where: str
    extras: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def urls(self) -> list[str]:
        return [self.primary, *self.extras]


def _pip_extra_index_urls(environ: Mapping[str, str], base: Path) -> tuple[list[str], list[str]]:
    """pip's ``extra-index-url``: ``PIP_EXTRA_INDEX_URL`` if set, else its config files.

    Like pip, the value is a whitespace-separated list, and the environment variable
    replaces what the files say rather than adding to it.  A ``file://`` index whose
    directory is missing is skipped with a note, as pip skips it with a warning.
    """
    value = environ.get("PIP_EXTRA_INDEX_URL", "").strip()
    if value:
        where = "environment variable PIP_EXTRA_INDEX_URL"
    else:
        found = _pip_config_value(environ, "extra-index-url")
        if found is None:
            return [], []
        value, path, section = found
        where = f"{path}: [{section}] extra-index-url"
    urls: list[str] = []
    skipped: list[str] = []
    for word in value.split():
        url = normalize_index_url(word, base=base, where=where)
        if url.startswith("file:") and not Path(url_path(urllib.parse.urlsplit(url).path)).is_dir():
            skipped.append(
                f"{where}: skipped the extra index {word!r}: the directory does not exist"
            )
        elif url not in urls:
            urls.append(url)
    return urls, skipped


def resolve_index_urls(
    config: Project | None,
    *,
    flag: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> IndexChoice:
    """The primary index (:func:`resolve_index_url`) and the extra indexes beside it.

    The extras are the project's ``extra-index-urls``, then, when the primary index is
    pip's (``PIP_INDEX_URL``, pip's configuration or pip's default), pip's
    ``extra-index-url`` too: pip's extras belong to pip's index, so a project (or a
    flag, or ``MONOREPO_INDEX_URL``) that names its own index is not mixed with
    whatever this machine's pip.conf adds.
    """
    env = os.environ if environ is None else environ
    base = config.root if config is not None else Path.cwd()
    primary, where = resolve_index_url(config, flag=flag, environ=env)
    extras = list(config.extra_index_urls) if config is not None else []
    skipped: list[str] = []
    own = where in ("--index-url", "environment variable MONOREPO_INDEX_URL")
    if not own and "[tool.monorepo]" not in where:
        from_pip, skipped = _pip_extra_index_urls(env, base)
        extras.extend(u for u in from_pip if u not in extras)
    return IndexChoice(primary, where, tuple(u for u in extras if u != primary), tuple(skipped))
