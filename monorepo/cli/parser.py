"""The command line's grammar: global options, subcommands and their flags.

Conventions (uv's, where they fit): global options (``--project``, ``-v``, ``-q``,
``--json``, ``--no-progress``, ``--color``, ``--cache-dir``) are accepted before or
after the subcommand; no option may be abbreviated (``verify --res`` is an error, not
``--resolve``); every subcommand's help has a one-line description, an example and its
defaults; ``monorepo help CMD`` is ``monorepo CMD --help``.  A usage error raises
:class:`~monorepo.errors.UsageError` (exit 2) instead of exiting, so that ``--json``
can report it like any other error.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any, NoReturn

from monorepo._core.version import VERSION as __version__

_FROZEN_HELP = (
    "use pylock.toml as it is, without checking that it still fits pyproject.toml"
    " (default: a stale lock is refused, as with uv's --locked)"
)
_JOBS_PULL = "packages extracted and hashed at once (default: min(8, 2 x CPUs))"
_PRERELEASES = ("if-necessary", "allow", "disallow")
EXPORT_FORMATS: tuple[str, ...] = ("requirements-txt", "cyclonedx")
"""The ``export --format`` values; each names a handler in ``cli.commands.EXPORTERS``."""
SHELLS = ("bash", "zsh", "fish")


class Parser(argparse.ArgumentParser):
    """An argparse parser that never abbreviates and raises instead of exiting on errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        from monorepo.errors import UsageError

        raise UsageError(
            f"{self.prog}: {message}. Run `{self.prog} --help` for its options.",
            hint=f"{self.prog} --help",
        )


def _globals(p: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every command takes, before or after its name.

    On a subcommand their default is "not given" (``SUPPRESS``) so that one given
    before the subcommand is not reset by the subcommand's parser; ``-v`` after the
    subcommand counts into ``verbose_after``, added to ``verbose`` by :func:`parse`.
    """
    keep: Any = argparse.SUPPRESS

    def default(value: object) -> Any:
        return value if top else keep

    g = p.add_argument_group("global options")
    g.add_argument(
        "--project",
        type=Path,
        default=default(None),
        metavar="DIR",
        help="the project directory (default: the nearest directory at or above the working"
        " directory whose pyproject.toml has [project] or [tool.monorepo])",
    )
    g.add_argument(
        "-v",
        "--verbose",
        dest="verbose" if top else "verbose_after",
        action="count",
        default=default(0),
        help="say more: each step and its timing (repeat for debug output)",
    )
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="say only warnings and errors",
    )
    g.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="machine-readable output on stdout, errors included (see docs/api.md)",
    )
    g.add_argument(
        "--no-progress",
        action="store_true",
        default=default(False),
        help="no progress display (default: shown when stderr is a terminal)",
    )
    g.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default=default("auto"),
        help="colour in messages (default: auto, which is on for a terminal unless"
        " NO_COLOR is set)",
    )
    g.add_argument(
        "--cache-dir",
        type=Path,
        default=default(None),
        metavar="DIR",
        help="the cache directory (default: MONOREPO_CACHE_DIR, else the user cache"
        " directory, ~/.cache/monorepo on Linux)",
    )


def _command(
    sub: Any, name: str, summary: str, examples: str, description: str = ""
) -> argparse.ArgumentParser:
    """A subcommand with its one-line summary, description and examples."""
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=summary[0].upper()
        + summary[1:]
        + "."
        + (f"\n\n{textwrap.fill(description, 80)}" if description else ""),
        epilog="examples:\n" + examples,
    )
    _globals(p, top=False)
    return p


def parser() -> argparse.ArgumentParser:
    """The ``monorepo`` command's parser; ``command`` names the subcommand chosen."""
    top = Parser(
        prog="monorepo",
        description="Lock, vendor, audit and build a whole Python dependency set from source.",
        epilog="Run `monorepo help COMMAND` (or `monorepo COMMAND --help`) for a command's"
        " options.\nExit status: 0 success, 1 the operation failed, 2 usage or configuration"
        " error.",
    )
    top.add_argument("--version", action="version", version=f"monorepo {__version__}")
    _globals(top, top=True)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(
        sub,
        "lock",
        "resolve pyproject.toml into pylock.toml",
        "  monorepo lock                        # resolve and write pylock.toml\n"
        "  monorepo lock --check                # exit 1 if pylock.toml is stale\n"
        "  monorepo lock -P requests --dry-run  # what upgrading requests would change",
        "Every target of [tool.monorepo] targets is resolved; the versions of an existing"
        " lock are kept while they fit.",
    )
    p.add_argument(
        "--check", action="store_true", help="exit 1 if pylock.toml is stale, write nothing"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="resolve and show what would change, but do not write pylock.toml",
    )
    p.add_argument(
        "--upgrade", "-U", action="store_true", help="ignore the existing lock's versions"
    )
    p.add_argument(
        "--upgrade-package",
        "-P",
        action="append",
        default=[],
        metavar="NAME",
        help="release one package's locked version (repeatable)",
    )
    p.add_argument(
        "--offline", action="store_true", help="use only the HTTP cache, never the network"
    )
    _index_flags(p)
    p.add_argument(
        "--exclude-newer",
        metavar="DATE",
        help="ignore files uploaded after DATE (RFC 3339 time or YYYY-MM-DD; default:"
        " [tool.monorepo] exclude-newer, else none)",
    )
    p.add_argument(
        "--prerelease",
        choices=_PRERELEASES,
        help="when prereleases are considered (default: [tool.monorepo] prereleases,"
        " else if-necessary)",
    )

    p = _command(
        sub,
        "pull",
        "vendor every locked source into duni/",
        "  monorepo pull              # vendor the whole lock\n"
        "  monorepo pull requests -j 4\n"
        "  monorepo pull --frozen     # vendor the lock as it is, even if stale\n"
        "  monorepo pull --dry-run    # what a pull would change",
    )
    p.add_argument("packages", nargs="*", metavar="PACKAGE", help="pull only these locked packages")
    p.add_argument(
        "--offline", action="store_true", help="use only the download cache, never the network"
    )
    p.add_argument(
        "--force", action="store_true", help="overwrite local edits to directories in duni/"
    )
    p.add_argument("--jobs", "-j", type=_positive, metavar="N", help=_JOBS_PULL)
    p.add_argument("--frozen", action="store_true", help=_FROZEN_HELP)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be added, changed and removed in duni/, change nothing",
    )

    p = _command(
        sub,
        "verify",
        "audit pylock.toml and duni/ (and, optionally, the sources upstream)",
        "  monorepo verify                     # lock fresh, duni/ identical to the lock\n"
        "  monorepo verify --remote --resolve  # and the sources and resolution upstream",
    )
    p.add_argument("packages", nargs="*", metavar="PACKAGE", help="check only these packages")
    p.add_argument(
        "--remote", action="store_true", help="download every source again and check its hash"
    )
    p.add_argument("--resolve", action="store_true", help="resolve again and compare with the lock")
    p.add_argument(
        "--index-url",
        metavar="URL",
        help="the package index for --resolve and --published (default: configured)",
    )
    p.add_argument(
        "--jobs",
        "-j",
        type=_positive,
        metavar="N",
        help="packages checked at once (default: min(8, 2 x CPUs))",
    )
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="rebuild in a scratch directory and compare with duni-build/<target>/build.toml",
    )
    p.add_argument(
        "--against",
        type=Path,
        metavar="FILE",
        help="with --rebuild: compare with this build record (another machine's build.toml)",
    )
    p.add_argument(
        "--published",
        action="store_true",
        help="compare the built wheels with the index's wheels of the same versions",
    )
    p.add_argument(
        "--target",
        metavar="NAME",
        help="the target to rebuild or compare (--rebuild, --published; default: the first)",
    )

    p = _command(
        sub,
        "build",
        "build duni/ into wheels, offline",
        "  monorepo build                    # every package, for the first target\n"
        "  monorepo build numpy -j 4         # numpy and what its build needs\n"
        "  monorepo build --target arm64     # cross-compile for a [tool.monorepo] target",
    )
    p.add_argument(
        "packages", nargs="*", metavar="PACKAGE", help="build only these (and what they need)"
    )
    p.add_argument(
        "--target",
        metavar="NAME",
        help="a target of [tool.monorepo] targets (default: the first)",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="wheel directory (default: duni-build/<target>/wheels)",
    )
    p.add_argument(
        "--jobs", "-j", type=_positive, metavar="N", help="packages built at once (default: CPUs)"
    )
    p.add_argument(
        "--executor",
        metavar="SPEC",
        help="where builds run: local or dask://HOST:PORT, a Dask cluster's scheduler"
        " (default: [tool.monorepo] executor, else local)",
    )
    cache = p.add_mutually_exclusive_group()
    cache.add_argument(
        "--build-cache",
        type=Path,
        metavar="DIR",
        help="built wheels by input key, looked up before building (default: builds/ in"
        " the cache directory)",
    )
    cache.add_argument(
        "--no-build-cache",
        action="store_true",
        help="build every package that is not up to date, and store nothing",
    )
    p.add_argument("--frozen", action="store_true", help=_FROZEN_HELP)

    _command(
        sub,
        "list",
        "list the locked packages: version, role, duni/ directory, overlay, source",
        "  monorepo list\n  monorepo list --json",
    )

    p = _command(
        sub,
        "why",
        "show the dependency paths from the project to a locked package",
        "  monorepo why idna     # e.g. project -> requests 2.32.3 -> idna 3.7",
    )
    p.add_argument("package", metavar="PACKAGE", help="a locked package's name")

    p = _command(
        sub,
        "tree",
        "show the locked dependency tree of each target (build-only packages marked)",
        "  monorepo tree\n  monorepo tree --target arm64 --depth 2\n  monorepo tree --no-build",
    )
    p.add_argument("--target", metavar="NAME", help="only this target (default: every target)")
    p.add_argument("--depth", type=_positive, metavar="N", help="show N levels (default: all)")
    p.add_argument(
        "--no-build",
        action="store_true",
        help="leave out build dependencies (default: each package's build requirements are"
        " shown too, build-only packages marked)",
    )

    p = _command(
        sub,
        "export",
        "write the lock in another format for other tools",
        "  monorepo export --format requirements-txt --target linux -o requirements.txt\n"
        "  pip install --require-hashes --no-binary :all: -r requirements.txt",
        "requirements-txt: one pinned line per runtime package of a target, with its"
        " sdist's --hash, so plain pip can install the set. cyclonedx: a CycloneDX 1.6"
        " JSON SBOM of the target's runtime and build-only packages.",
    )
    p.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="requirements-txt",
        help="the output format (default: requirements-txt)",
    )
    p.add_argument("--target", metavar="NAME", help="the target exported (default: the first)")
    p.add_argument(
        "--output", "-o", type=Path, metavar="FILE", help="write to FILE (default: stdout)"
    )

    p = _command(
        sub,
        "cache",
        "show or empty the cache directory",
        "  monorepo cache dir\n  monorepo cache clean",
        "Everything in the cache can be deleted at any time: it only saves work the"
        " network can repeat.",
    )
    cache_sub = p.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    _command(cache_sub, "dir", "print the cache directory", "  monorepo cache dir")
    _command(
        cache_sub,
        "clean",
        "delete everything in the cache directory",
        "  monorepo cache clean\n  monorepo --cache-dir /tmp/c cache clean",
    )

    p = _command(
        sub,
        "completion",
        "print a shell completion script",
        "  monorepo completion bash > ~/.local/share/bash-completion/completions/monorepo\n"
        "  monorepo completion zsh > ~/.zfunc/_monorepo\n"
        "  monorepo completion fish > ~/.config/fish/completions/monorepo.fish",
    )
    p.add_argument("shell", choices=SHELLS, help="the shell")

    p = _command(sub, "help", "show a command's help", "  monorepo help lock")
    p.add_argument("topic", nargs="?", metavar="COMMAND", help="the command (default: all)")
    return top


def _index_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--index-url",
        metavar="URL",
        help="the package index (default: [tool.monorepo] index-url, MONOREPO_INDEX_URL,"
        " pip's index-url)",
    )
    p.add_argument(
        "--extra-index-url",
        action="append",
        default=[],
        metavar="URL",
        help="another index, after the configured ones (repeatable)",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def subcommands(top: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each subcommand's parser by name (for ``help CMD`` and shell completion)."""
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def parse(argv: list[str]) -> argparse.Namespace:
    """*argv* parsed, global options merged wherever they were given."""
    top = parser()
    args, extra = top.parse_known_args(argv)
    if extra:
        from monorepo.errors import UsageError

        prog = f"monorepo {args.command}"
        raise UsageError(
            f"{prog}: unrecognized arguments: {' '.join(extra)} (options are never"
            f" abbreviated). Run `{prog} --help` for its options.",
            hint=f"{prog} --help",
        )
    args.verbose = args.verbose + getattr(args, "verbose_after", 0)
    return args
