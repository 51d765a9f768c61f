"""The smoke test of a cross build: every built wheel imported on the target, under its runner."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterable

from monorepo._core import fstree
from monorepo.building.scheduler import Scheduler
from monorepo.building.targets import (
    Node,
)
from monorepo.errors import ExtractError
from monorepo.extract.archive import extract_archive

_NOT_IMPORTED = frozenset({"test", "tests", "testing", "docs", "doc", "examples", "benchmarks"})


def _top_level_modules(names: Iterable[str]) -> list[str]:
    """Importable top-level names of a wheel (packages, modules, extension modules)."""
    found: set[str] = set()
    for name in names:
        first, sep, rest = name.partition("/")
        if first.endswith((".dist-info", ".data")):
            continue
        if sep and rest == "__init__.py":
            found.add(first)
        elif not sep and first.endswith(".py"):
            found.add(first[:-3])
        elif not sep and first.endswith(".so"):
            found.add(first.split(".", 1)[0])
    return sorted(
        m for m in found if m.isidentifier() and m not in _NOT_IMPORTED and m != "__init__"
    )


def smoke_test(scheduler: Scheduler, index: int) -> None:
    """Import every top-level module of each wheel built for the target, on the target.

    All the target's wheels (built or up to date) are unpacked into one directory so
    that runtime dependencies import too; the target's interpreter from the sysroot
    runs under the target's ``runner`` (qemu).  A package that does not import fails.
    """
    variant = scheduler.variants[index]
    sysroot = variant.sysroot
    runner = variant.target.runner
    if sysroot is None or runner is None:
        return
    nodes = [n for n in scheduler.status if n[0] == index]
    ready = [n for n in nodes if scheduler.status[n] in ("built", "skipped", "cached")]
    # a cached wheel is tested like a new one: the cache may hold it from a failed test
    todo = [n for n in nodes if scheduler.status[n] in ("built", "cached")]
    if not todo:
        return
    prefix = shlex.split(runner.format(sysroot=str(sysroot.root)))
    with fstree.temporary_directory(prefix="smoke-", dir=variant.root) as tmp:
        # Each wheel unpacked by the one extractor (its rules and limits), into a
        # directory of its own; all of them are on the path, so dependencies import.
        sites: list[str] = []
        modules: dict[Node, list[str]] = {}
        for n, node in enumerate(ready):
            site = tmp / str(n)
            try:
                written = extract_archive(
                    scheduler.wheels[node], site, package=node[1], layout="tree"
                )
            except ExtractError as error:
                if node in todo:
                    scheduler.fail(node, str(error), None)
                    todo.remove(node)
                continue
            sites.append(str(site))
            if node in todo:
                modules[node] = _top_level_modules(written)
        for node in todo:
            if not modules[node]:
                continue
            code = f"import sys; sys.path[:0] = {sites!r}; " + "; ".join(
                f"import {m}" for m in modules[node]
            )
            log = variant.logs / f"{node[1]}.log"
            cmd = [*prefix, str(sysroot.interpreter_path), "-I", "-c", code]
            with log.open("a", encoding="utf-8") as fh:
                fh.write(f"\n# ---- import on the target: {shlex.join(cmd)} ----\n")
                fh.flush()
                try:
                    proc = subprocess.run(
                        [*scheduler.isolation, *cmd],
                        stdin=subprocess.DEVNULL,
                        stdout=fh,
                        stderr=subprocess.STDOUT,
                        timeout=600,
                        check=False,
                    )
                    code_ = proc.returncode
                except (OSError, subprocess.TimeoutExpired) as error:
                    fh.write(f"{error}\n")
                    code_ = -1
            if code_ != 0:
                wheel = scheduler.wheels[node]
                scheduler.states[index].pop(node[1], None)
                scheduler.write_state(index)
                wheel.unlink(missing_ok=True)
                scheduler.fail(
                    node,
                    f"{', '.join(modules[node])} does not import on the target"
                    f" (under {prefix[0]}); see the end of the log",
                    log,
                )
            else:
                scheduler.reporter.message(
                    "debug", f"imports on {variant.target.name}: {', '.join(modules[node])}"
                )
