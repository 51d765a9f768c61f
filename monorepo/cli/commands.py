"""The ``monorepo`` command: a thin layer over the library.

Each subcommand parses its flags, calls one public function, and renders the
result as text or ``--json``.  Exit codes (DESIGN.md section 1): 0 success, 1 the
operation ran and failed (resolution impossible, stale lock, verify found a
difference, a build failed, a network or hash error), 2 usage or configuration error.
A :class:`~monorepo.errors.MonorepoError` is printed as its one-paragraph message,
never as a traceback, and exits with its ``exit_code``; with ``--json`` it is also a
JSON object on stdout (``{"error": {"code", "type", "message", "exit_code", ...}}``).
So is an ``OSError`` the library let through (a write it did not word itself), naming
the file and, when that is the trouble, its full disk.  Ctrl-C ends every command
within a second (:mod:`monorepo.cli.interrupt`), naming what was left unfinished.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from monorepo._core.speed import workerproc
from monorepo._core.terminal import TerminalReporter
from monorepo.cli import interrupt
from monorepo.cli.parser import parse, parser, subcommands

if TYPE_CHECKING:
    from monorepo.errors import MonorepoError
    from monorepo.locking.graph import TreeNode

# The values of monorepo.errors.EXIT_FAILED and EXIT_USAGE: that module is imported
# only when an error happens, so that `monorepo --version` loads only the CLI.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130


def _project(args: argparse.Namespace) -> Path:
    """``--project`` as given, else the project found upward from the working directory."""
    if args.project is not None:
        return Path(args.project)
    from monorepo.project.discover import find_project

    found: Path = args.found_project if "found_project" in args else find_project()
    args.found_project = found
    return found


def _exclude_newer(text: str | None) -> datetime | None:
    if text is None:
        return None
    from monorepo.errors import UsageError

    value = text.strip()
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(0, 0), tzinfo=UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--exclude-newer {text!r} is not an RFC 3339 date-time or a date; write e.g."
            " 2026-11-01T00:00:00Z or 2026-11-01",
            hint="--exclude-newer 2026-11-01",
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _cmd_lock(args: argparse.Namespace, reporter: TerminalReporter) -> int:
    project = _project(args)
    overrides: dict[str, Any] = {
        "exclude_newer": _exclude_newer(args.exclude_newer),
        "prereleases": args.prerelease,
        "extra_index_urls": tuple(args.extra_index_url),
    }
    if not args.check and not args.offline:
        # The lock's index workers import on other cores while this process does.
        workerproc.prestart("monorepo.index.speed.worker", "_serve", workerproc.index_workers())
    from monorepo.locking.locker import check, lock

    if args.check:
        result = check(project, index_url=args.index_url, cache_dir=args.cache_dir, **overrides)
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
        project,
        upgrade=args.upgrade,
        upgrade_packages=args.upgrade_package,
        offline=args.offline,
        index_url=args.index_url,
        reporter=reporter,
        write=not args.dry_run,
        cache_dir=args.cache_dir,
        **overrides,
    )
    packages = locked.document.packages
    roles = {p.name: p.role for p in packages}
    runtime = sum(1 for p in packages if p.role == "runtime")
    if args.json:
        _json(
            {
                "path": str(locked.path),
                "changed": locked.changed,
                "dry_run": args.dry_run,
                "changes": {k: {"old": a, "new": b} for k, (a, b) in locked.changes.items()},
                "runtime": runtime,
                "build_only": len(packages) - runtime,
                "packages": [
                    {
                        "name": p.name,
                        "version": str(p.version),
                        "marker": p.marker,
                        "role": p.role,
                        "dir": p.dir,
                    }
                    for p in packages
                ],
            }
        )
        return EXIT_OK
    reporter.close()
    for name, (old, new) in locked.changes.items():
        tag = "  (build-only)" if roles.get(name) == "build" else ""  # type: ignore[call-overload]
        if old is None:
            reporter.message("info", f" + {name} {new}{tag}")
        elif new is None:
            reporter.message("info", f" - {name} {old}")
        else:
            reporter.message("info", f" ~ {name} {old} -> {new}{tag}")
    if args.dry_run:
        state = "would change" if locked.changes else "would not change"
    else:
        state = "written" if locked.changed else "unchanged"
    reporter.message(
        "info",
        f"Locked {len(packages)} packages ({runtime} runtime, {len(packages) - runtime}"
        f" build-only): {locked.path} {state}",
    )
    return EXIT_OK


def _cmd_pull(args: argparse.Namespace, reporter: TerminalReporter) -> int:
    if args.dry_run:
        from monorepo.vendoring.dryrun import plan_pull

        result = plan_pull(
            _project(args),
            packages=args.packages,
            force=args.force,
            frozen=args.frozen,
            cache_dir=args.cache_dir,
        )
    else:
        from monorepo.vendoring.pull import pull

        result = pull(
            _project(args),
            packages=args.packages,
            offline=args.offline,
            force=args.force,
            jobs=args.jobs,
            frozen=args.frozen,
            reporter=reporter,
            cache_dir=args.cache_dir,
        )
    if args.json:
        _json(result.to_dict())
        return EXIT_OK
    reporter.close()
    added = set(result.added)
    for name in result.updated:
        reporter.message("info", f" {'+' if name in added else '~'} {name}")
    for name in result.removed:
        reporter.message("info", f" - {name}")
    changed = len(result.updated) - len(added)
    if args.dry_run:
        for warning in result.warnings:
            reporter.message("warning", warning)
    would = " (dry run: nothing changed)" if args.dry_run else ""
    reporter.message(
        "info",
        f"{result.duni}: {len(added)} new, {changed} changed, {len(result.unchanged)}"
        f" unchanged, {len(result.removed)} removed{would}",
    )
    if result.crates_updated or result.crates_removed:
        reporter.message(
            "info",
            f"{result.duni}/.crates: {len(result.crates_updated)} crates vendored,"
            f" {len(result.crates_removed)} removed",
        )
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace, reporter: TerminalReporter) -> int:
    from monorepo.vendoring.verify.report import text_lines
    from monorepo.vendoring.verify.verifier import verify

    if args.against is not None and not args.rebuild:
        from monorepo.errors import UsageError

        raise UsageError("--against compares a rebuild with a record: add --rebuild")
    project = _project(args)
    report = verify(
        project,
        packages=args.packages,
        remote=args.remote,
        resolve=args.resolve,
        index_url=args.index_url,
        jobs=args.jobs,
        reporter=reporter,
        cache_dir=args.cache_dir,
    )
    if args.rebuild:
        from monorepo.building.rebuild import verify_rebuild

        rebuilt = verify_rebuild(
            project,
            target=args.target,
            packages=args.packages,
            against=args.against,
            jobs=args.jobs,
            reporter=reporter,
        )
        report.checks.append(rebuilt.check())
    if args.published:
        from monorepo.building.published import verify_published

        published = verify_published(
            project,
            target=args.target,
            packages=args.packages,
            index_url=args.index_url,
            reporter=reporter,
        )
        report.checks.append(published.check())
    if args.json:
        _json(report.to_dict())
    else:
        reporter.close()
        for line in text_lines(report):
            print(line)
    return EXIT_OK if report.passed else EXIT_FAILED


def _cmd_list(args: argparse.Namespace, reporter: TerminalReporter) -> int:
    from monorepo.locking.graph import list_packages

    rows = list_packages(_project(args))
    if args.json:
        _json([row.to_dict() for row in rows])
        return EXIT_OK
    for row in rows:
        overlay = f"  overlay {row.overlay}" if row.overlay else ""
        print(f"{row.name} {row.version}  {row.role}  duni/{row.dir}{overlay}  {row.source}")
    return EXIT_OK


def _cmd_why(args: argparse.Namespace, reporter: TerminalReporter) -> int:
    from monorepo.locking.graph import why

    paths = why(_project(args), args.package)
    if args.json:
        _json([path.to_dict() for path in paths])
        return EXIT_OK
    if not paths:
        print(f"{args.package} is locked, but no dependency of the project leads to it")
    for path in paths:
        print(path)
    return EXIT_OK


def _cmd_tree(args: argparse.Namespace, reporter: TerminalReporter) -> int:
    from monorepo.locking.graph import tree

    trees = tree(_project(args), target=args.target, build=not args.no_build, depth=args.depth)
    if args.json:
        _json([t.to_dict() for t in trees])
        return EXIT_OK
    lines: list[str] = []
    for one in trees:
        lines.append(f"target {one.target}")
        for scope, nodes in one.scopes:
            lines.append(scope)
            for i, node in enumerate(nodes):
                _tree_lines(node, "", i == len(nodes) - 1, lines)
    print("\n".join(lines))
    return EXIT_OK


def _tree_lines(node: TreeNode, indent: str, last: bool, out: list[str]) -> None:
    marks = " (build-only)" if node.role == "build" else ""
    marks += " (build)" if node.via == "build" and node.role != "build" else ""
    marks += " (*)" if node.repeated else ""
    out.append(f"{indent}{'└── ' if last else '├── '}{node.name} {node.version}{marks}")
    deeper = indent + ("    " if last else "│   ")
    for i, child in enumerate(node.children):
        _tree_lines(child, deeper, i == len(node.children) - 1, out)


def _export_requirements(project: Path, target: str | None) -> str:
    from monorepo.locking.export import export_requirements

    return export_requirements(project, target=target)


def _export_cyclonedx(project: Path, target: str | None) -> str:
    from monorepo.vendoring.sbom import export_cyclonedx

    return export_cyclonedx(project, target=target)


EXPORTERS: dict[str, Callable[[Path, str | None], str]] = {
    "requirements-txt": _export_requirements,
    "cyclonedx": _export_cyclonedx,
}
"""``export --format`` name -> function(project, target) giving the file's text.

A format is added by one entry here (its library function does the work) and its
name in ``cli.parser.EXPORT_FORMATS``."""


def _cmd_export(args: argparse.Namespace, reporter: TerminalReporter) -> int:
    text = EXPORTERS[args.format](_project(args), args.target)
    if args.output is not None:
        from monorepo._core.atomic import write_text_if_changed

        write_text_if_changed(Path(args.output), text)
        reporter.message("info", f"wrote {args.output} ({args.format})")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _cmd_build(args: argparse.Namespace, reporter: TerminalReporter) -> int:
    from monorepo.building.builder import build

    result = build(
        _project(args),
        target=args.target,
        out=args.out,
        jobs=args.jobs,
        packages=args.packages,
        frozen=args.frozen,
        reporter=reporter,
        cache_dir=args.cache_dir,
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


def _cmd_cache(args: argparse.Namespace, reporter: TerminalReporter) -> int:
    from monorepo._core.paths import CacheDir

    cache = CacheDir.at(args.cache_dir)
    if args.cache_command == "dir":
        if args.json:
            _json({"path": str(cache.root)})
        else:
            print(cache.root)
        return EXIT_OK
    from monorepo._core.fstree import remove_tree

    removed = 0
    if cache.root.is_dir():
        for entry in sorted(cache.root.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                remove_tree(entry)
            else:
                entry.unlink()
            removed += 1
    if args.json:
        _json({"path": str(cache.root), "removed": removed})
    else:
        reporter.message("info", f"{cache.root}: {removed} entries removed")
    return EXIT_OK


def _cmd_completion(args: argparse.Namespace, reporter: TerminalReporter) -> int:
    from monorepo.cli.completion import script

    sys.stdout.write(script(args.shell, parser()))
    return EXIT_OK


def _cmd_help(args: argparse.Namespace, reporter: TerminalReporter) -> int:
    from monorepo.errors import UsageError

    top = parser()
    if args.topic is None:
        top.print_help()
        return EXIT_OK
    commands = subcommands(top)
    if args.topic not in commands:
        raise UsageError(
            f"no command {args.topic!r}; the commands are {', '.join(sorted(commands))}",
            hint="monorepo --help",
        )
    commands[args.topic].print_help()
    return EXIT_OK


def _json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def _os_error(error: OSError) -> MonorepoError:
    """A file error no library module worded, as a typed error: which file, which disk."""
    from monorepo.errors import StorageError, disk_full

    where = Path(error.filename).parent if error.filename else Path.cwd()
    full = disk_full(error, where, what=f"cannot write {error.filename or 'a file'}")
    if full is not None:
        return full
    name = f"{error.filename}: " if error.filename else ""
    return StorageError(
        f"{name}{error.strerror or error}. Check that path's permissions and free space,"
        " then run the command again.",
        path=error.filename,
    )


COMMANDS: dict[str, Callable[[argparse.Namespace, TerminalReporter], int]] = {
    "lock": _cmd_lock,
    "pull": _cmd_pull,
    "verify": _cmd_verify,
    "build": _cmd_build,
    "list": _cmd_list,
    "why": _cmd_why,
    "tree": _cmd_tree,
    "export": _cmd_export,
    "cache": _cmd_cache,
    "completion": _cmd_completion,
    "help": _cmd_help,
}
"""Each subcommand's handler: it calls one public function and renders the result."""


def _report(error: MonorepoError, reporter: TerminalReporter, as_json: bool) -> int:
    reporter.close()
    if as_json:
        _json({"error": error.to_dict()})
    reporter.error(str(error))
    return error.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``monorepo`` command line; returns its exit status (never raises for a
    user's error, prints no traceback)."""
    from monorepo.errors import MonorepoError, UsageError

    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse(words)
    except UsageError as exc:
        bare = TerminalReporter(verbose=0, quiet=True, progress=False)
        return _report(exc, bare, "--json" in words)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    reporter = TerminalReporter(
        verbose=args.verbose,
        quiet=args.quiet,
        progress=not args.no_progress,
        color=args.color,
    )
    run = COMMANDS[args.command]
    try:
        with interrupt.watching(reporter, as_json=args.json):
            return run(args, reporter)
    except MonorepoError as exc:
        return _report(exc, reporter, args.json)
    except OSError as exc:
        return _report(_os_error(exc), reporter, args.json)
    except KeyboardInterrupt:
        return interrupt.report(reporter, as_json=args.json)
    finally:
        reporter.close()


def script() -> NoReturn:
    """The ``monorepo`` console script: :func:`main`, then the process ends at once.

    Tearing the interpreter down (every module, parsed page and metadata object freed one
    by one) took 20 to 40 ms of a 0.3 s cold lock, for memory the kernel frees anyway.
    Nothing is lost by skipping it: everything :func:`main` writes is complete when it
    returns (atomic writes, pools shut down, workers stopped), the output is flushed
    here, and the atexit work monorepo registers (stopping unused worker processes) is
    done by the workers themselves when this process's end closes their pipe.  Ctrl-C
    ends the process within a second even while threads finish their step
    (:func:`monorepo.cli.interrupt.install`).
    """
    interrupt.install()
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (| head), a closed stream
            stream.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    script()

__all__ = ["COMMANDS", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "EXPORTERS", "main", "script"]
