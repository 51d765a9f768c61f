"""The command line's grammar: global options, subcommands and their flags."""

from __future__ import annotations

import argparse
from pathlib import Path

from monorepo._core.version import VERSION as __version__

_FROZEN_HELP = (
    "use pylock.toml as it is, without checking that it still fits pyproject.toml"
    " (by default a stale lock is refused, as with uv's --locked)"
)


def parser() -> argparse.ArgumentParser:
    """The ``monorepo`` command's parser; ``command`` names the subcommand chosen."""
    parser = argparse.ArgumentParser(
        prog="monorepo",
        description="Lock, vendor, audit and build a whole Python dependency set from source.",
    )
    parser.add_argument("--version", action="version", version=f"monorepo {__version__}")
    parser.add_argument(
        "--project",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="the project directory (default: .)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="say more (repeat for debug output)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="say only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("lock", help="resolve pyproject.toml into pylock.toml")
    p.add_argument(
        "--check", action="store_true", help="exit 1 if pylock.toml is stale instead of writing it"
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
    p.add_argument(
        "--index-url", metavar="URL", help="the package index (overrides every configuration)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    p = sub.add_parser("pull", help="vendor every locked source into duni/")
    p.add_argument("packages", nargs="*", metavar="PACKAGE", help="pull only these locked packages")
    p.add_argument(
        "--offline", action="store_true", help="use only the download cache, never the network"
    )
    p.add_argument(
        "--force", action="store_true", help="overwrite local edits to directories in duni/"
    )
    p.add_argument("--jobs", "-j", type=int, metavar="N", help="packages processed at once")
    p.add_argument("--frozen", action="store_true", help=_FROZEN_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    p = sub.add_parser("verify", help="audit pylock.toml and duni/ (and, optionally, the sources)")
    p.add_argument("packages", nargs="*", metavar="PACKAGE", help="check only these packages")
    p.add_argument(
        "--remote", action="store_true", help="download every source again and check its hash"
    )
    p.add_argument("--resolve", action="store_true", help="resolve again and compare with the lock")
    p.add_argument("--index-url", metavar="URL", help="the package index (for --resolve)")
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
    p.add_argument("--target", metavar="NAME", help="the target to rebuild (with --rebuild)")
    p.add_argument("--jobs", "-j", type=int, metavar="N", help="packages checked at once")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    p = sub.add_parser("list", help="the locked packages")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    p = sub.add_parser("why", help="the dependency paths from the project to a package")
    p.add_argument("package", metavar="PACKAGE")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    p = sub.add_parser("build", help="build duni/ into wheels, offline")
    p.add_argument(
        "packages", nargs="*", metavar="PACKAGE", help="build only these (and what they need)"
    )
    p.add_argument("--target", metavar="NAME", help="a target of [tool.monorepo] targets")
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="wheel directory (default duni-build/<target>/wheels)",
    )
    p.add_argument("--jobs", "-j", type=int, metavar="N", help="packages built at once")
    p.add_argument(
        "--executor",
        metavar="SPEC",
        help="where builds run: local (default) or dask://HOST:PORT, a Dask cluster's"
        " scheduler (default: [tool.monorepo] executor)",
    )
    cache = p.add_mutually_exclusive_group()
    cache.add_argument(
        "--build-cache",
        type=Path,
        metavar="DIR",
        help="built wheels by input key, looked up before building (default: builds/ in"
        " the user cache directory)",
    )
    cache.add_argument(
        "--no-build-cache",
        action="store_true",
        help="build every package that is not up to date, and store nothing",
    )
    p.add_argument("--frozen", action="store_true", help=_FROZEN_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    return parser
