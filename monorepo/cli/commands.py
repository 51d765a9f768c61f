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
from typing import Any, NoReturn

from monorepo._core.speed import workerproc
from monorepo._core.terminal import TerminalReporter
from monorepo.cli.parser import parser

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _cmd_lock(args: argparse.Namespace, reporter: TerminalReporter) -> int:
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


def _cmd_pull(args: argparse.Namespace, reporter: TerminalReporter) -> int:
    from monorepo.vendoring.pull import pull

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


def _cmd_verify(args: argparse.Namespace, reporter: TerminalReporter) -> int:
    from monorepo.vendoring.verify.report import text_lines
    from monorepo.vendoring.verify.verifier import verify

    if args.against is not None and not args.rebuild:
        from monorepo.errors import MonorepoError

        raise MonorepoError("--against compares a rebuild with a record: add --rebuild")
    report = verify(
        args.project,
        packages=args.packages,
        remote=args.remote,
        resolve=args.resolve,
        index_url=args.index_url,
        jobs=args.jobs,
        reporter=reporter,
    )
    if args.rebuild:
        from monorepo.building.rebuild import verify_rebuild

        rebuilt = verify_rebuild(
            args.project,
            target=args.target,
            packages=args.packages,
            against=args.against,
            jobs=args.jobs,
            reporter=reporter,
        )
        report.checks.append(rebuilt.check())
    if args.json:
        _json(report.to_dict())
    else:
        for line in text_lines(report):
            print(line)
    return EXIT_OK if report.passed else EXIT_FAILED


def _cmd_list(args: argparse.Namespace, reporter: TerminalReporter) -> int:
    from monorepo.locking.graph import list_packages

    rows = list_packages(args.project)
    if args.json:
        _json([row.to_dict() for row in rows])
        return EXIT_OK
    for row in rows:
        overlay = f"  overlay {row.overlay}" if row.overlay else ""
        print(f"{row.name} {row.version}  {row.role}  duni/{row.dir}{overlay}  {row.source}")
    return EXIT_OK


def _cmd_why(args: argparse.Namespace, reporter: TerminalReporter) -> int:
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


def _cmd_build(args: argparse.Namespace, reporter: TerminalReporter) -> int:
    from monorepo.building.builder import build

    result = build(
        args.project,
        target=args.target,
        out=args.out,
        jobs=args.jobs,
        packages=args.packages,
        frozen=args.frozen,
        reporter=reporter,
        executor=args.executor,
        build_cache=False if args.no_build_cache else (args.build_cache or True),
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
        f"{result.wheels}: {len(result.built)} built, {len(result.cached)} cached,"
        f" {len(result.skipped)} up to date, {len(result.failed)} failed",
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


COMMANDS: dict[str, Callable[[argparse.Namespace, TerminalReporter], int]] = {
    "lock": _cmd_lock,
    "pull": _cmd_pull,
    "verify": _cmd_verify,
    "list": _cmd_list,
    "why": _cmd_why,
    "build": _cmd_build,
}
"""Each subcommand's handler: it calls one public function and renders the result."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monorepo`` console script."""
    from monorepo.errors import MonorepoError

    args = parser().parse_args(argv)
    reporter = TerminalReporter(verbose=args.verbose, quiet=args.quiet)
    run = COMMANDS[args.command]
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
