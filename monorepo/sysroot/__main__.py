"""``python -m monorepo.sysroot DEST ...``: make a Debian sysroot (docs/cross.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from monorepo.errors import MonorepoError
from monorepo.sysroot.libs import arch_for_machine, lock_target, locked_system_libraries
from monorepo.sysroot.make import DEFAULT_KEYRING, make_sysroot

# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m monorepo.sysroot DEST ...``: progress on stderr, exit 2 on errors."""
    from monorepo._core.terminal import TerminalReporter

    parser = argparse.ArgumentParser(
        prog="python -m monorepo.sysroot",
        description="Make a Debian sysroot for cross-building CPython extensions.",
    )
    parser.add_argument("dest", type=Path, metavar="DEST", help="the sysroot directory")
    parser.add_argument(
        "--arch",
        default=None,
        help="Debian architecture: arm64, armhf, ... (default: DEST's, else the --target's"
        " machine, else arm64)",
    )
    parser.add_argument(
        "--suite", default=None, help="Debian suite (default: DEST's, else bookworm)"
    )
    parser.add_argument(
        "--mirror",
        default=None,
        metavar="URL",
        help="Debian mirror (default: $MONOREPO_DEBIAN_MIRROR, else apt's sources)",
    )
    parser.add_argument(
        "--python",
        default=None,
        help="CPython major.minor (default: DEST's, else the --target's, else 3.11)",
    )
    parser.add_argument(
        "--package",
        action="append",
        default=[],
        metavar="NAME",
        help="another Debian package to add, with its dependencies (repeatable); the"
        " packages added before are kept",
    )
    parser.add_argument(
        "--lock",
        type=Path,
        default=None,
        metavar="PYLOCK",
        help="add the Debian system-libraries the lock records for its packages",
    )
    parser.add_argument(
        "--target",
        default=None,
        metavar="NAME",
        help="with --lock: only the packages of this target (its machine and python, from"
        " the pyproject.toml beside the lock, choose --arch and --python)",
    )
    parser.add_argument(
        "--refresh", action="store_true", help="re-read the mirror even if DEST is up to date"
    )
    parser.add_argument(
        "--keyring",
        type=Path,
        default=DEFAULT_KEYRING,
        help=f"OpenPGP keyring for gpgv (default: {DEFAULT_KEYRING})",
    )
    parser.add_argument("-j", "--jobs", type=int, default=8, help="parallel downloads")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.target is not None and args.lock is None:
        parser.error("--target needs --lock")
    reporter = TerminalReporter(verbose=args.verbose, quiet=args.quiet)
    try:
        packages = list(args.package)
        arch, python = args.arch, args.python
        if args.lock is not None:
            wanted = locked_system_libraries(args.lock, args.target)
            for name, labels in wanted.items():
                reporter.message("info", f"{name} (for {', '.join(labels)})")
            packages += wanted
            machine, version = lock_target(args.lock, args.target)
            arch = arch or (arch_for_machine(machine) if machine else None)
            python = python or version
        info = make_sysroot(
            args.dest,
            arch=arch,
            suite=args.suite,
            mirror=args.mirror,
            python=python,
            extra_packages=packages,
            reporter=reporter,
            refresh=args.refresh,
            keyring=args.keyring,
            jobs=args.jobs,
        )
    except MonorepoError as e:
        reporter.close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        reporter.close()
        return 130
    reporter.close()
    if not args.quiet:
        print(f"{info.root}: python{info.python} for {info.triplet}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
