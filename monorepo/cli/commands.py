"""The ``monorepo`` command: a thin layer over the library.

Each subcommand parses its flags, calls one public function, and renders the
result as text or ``--json``.  Exit codes: 0 success, 1 a check found a problem
(``lock --check`` stale, ``verify`` failed, ``pull`` or ``build`` refusing a stale
lock), 2 usage or input error.  A :class:`~monorepo.errors.MonorepoError` is printed
as its one-paragraph message, never as a traceback, and exits with its ``exit_code``;
so is an ``OSError`` the library let through (a write it did not word itself), naming
the file and, when that is the trouble, its full disk.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from monorepo import __version__
from monorepo._core.reporter import Level
from monorepo._core.speed import workerproc

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CliReporter:
    """Progress on a terminal (rich, on stderr), warnings always, debug with -v."""

    def __init__(self, *, verbose: int, quiet: bool, stream: TextIO | None = None) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        if not quiet and self.stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._progress.start()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()

    def task(self, key: str, description: str, total: int | None = None) -> None:
        if self._progress is not None:
            self._tasks[key] = self._progress.add_task(description, total=total)
        elif self.verbose:
            self._print(description + "...")

    def advance(self, key: str, steps: int = 1) -> None:
        if self._progress is not None and key in self._tasks:
            self._progress.advance(self._tasks[key], steps)

    def done(self, key: str) -> None:
        if self._progress is not None and key in self._tasks:
            self._progress.remove_task(self._tasks.pop(key))

    def message(self, level: Level, text: str) -> None:
        if (
            level == "warning"
            or (level == "info" and not self.quiet)
            or (level == "debug" and self.verbose)
        ):
            prefix = "warning: " if level == "warning" else ""
            self._print(prefix + text)

    def _print(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream)


_FROZEN_HELP = (
    "use pylock.toml as it is, without checking that it still fits pyproject.toml"
    " (by default a stale lock is refused, as with uv's --locked)"
)


def _parser() -> argparse.ArgumentParser:
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
    p.set_defaults(run=_cmd_lock)

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
    p.set_defaults(run=_cmd_pull)

    p = sub.add_parser("verify", help="audit pylock.toml and duni/ (and, optionally, the sources)")
    p.add_argument("packages", nargs="*", metavar="PACKAGE", help="check only these packages")
    p.add_argument(
        "--remote", action="store_true", help="download every source again and check its hash"
    )
    p.add_argument("--resolve", action="store_true", help="resolve again and compare with the lock")
    p.add_argument("--index-url", metavar="URL", help="the package index (for --resolve)")
    p.add_argument("--jobs", "-j", type=int, metavar="N", help="packages checked at once")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(run=_cmd_verify)

    p = sub.add_parser("list", help="the locked packages")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(run=_cmd_list)

    p = sub.add_parser("why", help="the dependency paths from the project to a package")
    p.add_argument("package", metavar="PACKAGE")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(run=_cmd_why)

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
    p.add_argument("--frozen", action="store_true", help=_FROZEN_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(run=_cmd_build)
    return parser


def _cmd_lock(args: argparse.Namespace, reporter: CliReporter) -> int:
    if not args.check and not args.offline:
        # The lock's index workers import on other cores while this process does.
        workerproc.prestart("monorepo.index.speed.worker", "_serve", workerproc.index_workers())
    from monorepo.locking.locker import check, lock

    if args.check:
        result = check(args.project, index_url=args.index_url)
        if args.json:
            _json(
                {"path": str(result.path), "fresh": result.fresh, "reasons": list(result.reasons)}
            )
        elif result.fresh:
            reporter.message("info", f"{result.path.name} is fresh")
        else:
            print(f"{result.path} is stale:", file=sys.stderr)
            for reason in result.reasons:
                print(f"  - {reason}", file=sys.stderr)
            print("Run `monorepo lock` to update it.", file=sys.stderr)
        return EXIT_OK if result.fresh else EXIT_FAILED
    locked = lock(
        args.project,
        upgrade=args.upgrade,
        upgrade_packages=args.upgrade_package,
        offline=args.offline,
        index_url=args.index_url,
        reporter=reporter,
    )
    if args.json:
        _json(
            {
                "path": str(locked.path),
                "changed": locked.changed,
                "changes": {k: {"old": a, "new": b} for k, (a, b) in locked.changes.items()},
                "packages": [
                    {
                        "name": p.name,
                        "version": str(p.version),
                        "marker": p.marker,
                        "role": p.role,
                        "dir": p.dir,
                    }
                    for p in locked.document.packages
                ],
            }
        )
        return EXIT_OK
    for name, (old, new) in locked.changes.items():
        if old is None:
            reporter.message("info", f" + {name} {new}")
        elif new is None:
            reporter.message("info", f" - {name} {old}")
        else:
            reporter.message("info", f" ~ {name} {old} -> {new}")
    state = "written" if locked.changed else "unchanged"
    reporter.message(
        "info", f"Locked {len(locked.document.packages)} packages: {locked.path} {state}"
    )
    return EXIT_OK


def _cmd_pull(args: argparse.Namespace, reporter: CliReporter) -> int:
    from monorepo.vendor.pull import pull

    result = pull(
        args.project,
        packages=args.packages,
        offline=args.offline,
        force=args.force,
        jobs=args.jobs,
        frozen=args.frozen,
        reporter=reporter,
    )
    if args.json:
        _json(result.to_dict())
        return EXIT_OK
    for name in result.updated:
        reporter.message("info", f" ~ {name}")
    for name in result.removed:
        reporter.message("info", f" - {name}")
    reporter.message(
        "info",
        f"{result.duni}: {len(result.updated)} updated, {len(result.unchanged)} unchanged,"
        f" {len(result.removed)} removed",
    )
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace, reporter: CliReporter) -> int:
    from monorepo.vendor.verify.verifier import text_lines, verify

    report = verify(
        args.project,
        packages=args.packages,
        remote=args.remote,
        resolve=args.resolve,
        index_url=args.index_url,
        jobs=args.jobs,
        reporter=reporter,
    )
    if args.json:
        _json(report.to_dict())
    else:
        for line in text_lines(report):
            print(line)
    return EXIT_OK if report.passed else EXIT_FAILED


def _cmd_list(args: argparse.Namespace, reporter: CliReporter) -> int:
    from monorepo.locking.graph import list_packages

    rows = list_packages(args.project)
    if args.json:
        _json([row.to_dict() for row in rows])
        return EXIT_OK
    for row in rows:
        overlay = f"  overlay {row.overlay}" if row.overlay else ""
        print(f"{row.name} {row.version}  {row.role}  duni/{row.dir}{overlay}  {row.source}")
    return EXIT_OK


def _cmd_why(args: argparse.Namespace, reporter: CliReporter) -> int:
    from monorepo.locking.graph import why

    paths = why(args.project, args.package)
    if args.json:
        _json([path.to_dict() for path in paths])
        return EXIT_OK
    if not paths:
        print(f"{args.package} is locked, but no dependency of the project leads to it")
    for path in paths:
        print(path)
    return EXIT_OK


def _cmd_build(args: argparse.Namespace, reporter: CliReporter) -> int:
    from monorepo.building.builder import build

    result = build(
        args.project,
        target=args.target,
        out=args.out,
        jobs=args.jobs,
        packages=args.packages,
        frozen=args.frozen,
        reporter=reporter,
    )
    if args.json:
        _json(result.to_dict())
        return EXIT_OK if result.ok else EXIT_FAILED
    reporter.close()
    for failed in result.failed:
        print(f"FAILED {failed.label}: {failed.reason}", file=sys.stderr)
        if failed.log is not None:
            print(f"  log: {failed.log}", file=sys.stderr)
        for line in failed.tail:
            print(f"  | {line}", file=sys.stderr)
    reporter.message(
        "info",
        f"{result.wheels}: {len(result.built)} built, {len(result.skipped)} up to date,"
        f" {len(result.failed)} failed",
    )
    return EXIT_OK if result.ok else EXIT_FAILED


def _json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def _os_error_text(error: OSError) -> str:
    """One paragraph for a file error no library module worded: which file, which disk."""
    from monorepo.errors import disk_full

    where = Path(error.filename).parent if error.filename else Path.cwd()
    full = disk_full(error, where, what=f"cannot write {error.filename or 'a file'}")
    if full is not None:
        return str(full)
    name = f"{error.filename}: " if error.filename else ""
    return (
        f"{name}{error.strerror or error}. Check that path's permissions and free space,"
        " then run the command again."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monorepo`` console script."""
    from monorepo.errors import MonorepoError

    parser = _parser()
    args = parser.parse_args(argv)
    reporter = CliReporter(verbose=args.verbose, quiet=args.quiet)
    run: Callable[[argparse.Namespace, CliReporter], int] = args.run
    try:
        return run(args, reporter)
    except MonorepoError as exc:
        reporter.close()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        reporter.close()
        print(f"error: {_os_error_text(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        reporter.close()
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        reporter.close()


def script() -> NoReturn:
    """The ``monorepo`` console script: :func:`main`, then the process ends at once.

    Tearing the interpreter down (every module, parsed page and metadata object freed one
    by one) took 20 to 40 ms of a 0.3 s cold lock, for memory the kernel frees anyway.
    Nothing is lost by skipping it: everything :func:`main` writes is complete when it
    returns (atomic writes, pools shut down, workers stopped), the output is flushed
    here, and the atexit work monorepo registers (stopping unused worker processes) is
    done by the workers themselves when this process's end closes their pipe.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (| head), a closed stream
            stream.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    script()
