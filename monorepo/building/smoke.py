"""The import check of a cross build: every built wheel imported on the target, under its runner.

Each package is imported with its own wheel and the wheels of its runtime dependencies
(those built for the target) on the path, nothing else: a module it imports but does not
depend on is found missing, and named with the package that has it.  A package whose
dependency failed to build is not checked (it could not import, through no fault of its
own): its wheel is kept and a warning says why.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence

from monorepo._core import fstree
from monorepo.building.scheduler import Scheduler
from monorepo.building.targets import (
    Node,
)
from monorepo.errors import ExtractError
from monorepo.extract.archive import extract_archive

_NOT_IMPORTED = frozenset({"test", "tests", "testing", "docs", "doc", "examples", "benchmarks"})
_MISSING = re.compile(r"(?:ModuleNotFoundError|ImportError): No module named '([^']+)'")


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

    The target's interpreter from the sysroot runs under the target's ``runner`` (qemu);
    :func:`check_imports` does the rest.
    """
    variant = scheduler.variants[index]
    sysroot = variant.sysroot
    runner = variant.target.runner
    if sysroot is None or runner is None:
        return
    prefix = shlex.split(runner.format(sysroot=str(sysroot.root)))
    check_imports(
        scheduler,
        index,
        [*prefix, str(sysroot.interpreter_path), "-I"],
        where=f"on the target (under {prefix[0]})" if prefix else "on the target",
    )


def check_imports(
    scheduler: Scheduler, index: int, interpreter: Sequence[str], *, where: str
) -> None:
    """Import each wheel of variant *index* built in this run with *interpreter* (a command).

    Every ready wheel is unpacked once, by the one extractor (its rules and limits), into
    a directory of its own; each import runs with the directories of the package and its
    runtime dependencies on ``sys.path``.  A package that does not import fails and its
    wheel is removed, with the missing module's package named when the output says
    which module was missing; a package whose runtime dependency failed is not checked.
    """
    variant = scheduler.variants[index]
    nodes = [n for n in scheduler.status if n[0] == index]
    ready = [n for n in nodes if scheduler.status[n] in ("built", "skipped", "cached")]
    # a cached wheel is tested like a new one: the cache may hold it from a failed test
    todo = [n for n in nodes if scheduler.status[n] in ("built", "cached")]
    if not todo:
        return
    with fstree.temporary_directory(prefix="smoke-", dir=variant.root) as tmp:
        sites: dict[str, str] = {}
        modules: dict[str, list[str]] = {}
        for n, node in enumerate(sorted(ready)):
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
            sites[node[1]] = str(site)
            modules[node[1]] = _top_level_modules(written)
        owner = {m: d for d, names in modules.items() for m in names}
        for node in sorted(todo):
            d = node[1]
            if not modules.get(d):
                continue
            deps = sorted(scheduler.graph.closure([scheduler.pkgs[d]]) - {d})
            failed = [x for x in deps if scheduler.status.get((index, x)) == "failed"]
            if failed:
                labels = ", ".join(scheduler.pkgs[x].label for x in failed)
                scheduler.warn(
                    f"{scheduler.pkgs[d].label} was not import-checked {where}: its dependency"
                    f" {labels} failed to build; its wheel is kept"
                )
                continue
            path = [sites[x] for x in [d, *deps] if x in sites]
            _import_one(scheduler, node, modules[d], path, interpreter, where, owner)


def _import_one(
    scheduler: Scheduler,
    node: Node,
    modules: list[str],
    path: list[str],
    interpreter: Sequence[str],
    where: str,
    owner: Mapping[str, str],
) -> None:
    index, d = node
    variant = scheduler.variants[index]
    code = f"import sys; sys.path[:0] = {path!r}; " + "; ".join(f"import {m}" for m in modules)
    log = variant.logs / f"{d}.log"
    cmd = [*interpreter, "-c", code]
    try:
        proc = subprocess.run(
            [*scheduler.isolation, *cmd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=600,
            check=False,
        )
        output, status = proc.stdout.decode("utf-8", "replace"), proc.returncode
    except (OSError, subprocess.TimeoutExpired) as error:
        output, status = f"{error}\n", -1
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"\n# ---- import {where}: {shlex.join(cmd)} ----\n{output}")
    if status == 0:
        scheduler.reporter.message("debug", f"imports {where}: {', '.join(modules)}")
        return
    wheel = scheduler.wheels[node]
    scheduler.states[index].pop(d, None)
    scheduler.write_state(index)
    wheel.unlink(missing_ok=True)
    scheduler.fail(node, _reason(scheduler, d, modules, output, where, owner), log)


def _reason(
    scheduler: Scheduler,
    d: str,
    modules: list[str],
    output: str,
    where: str,
    owner: Mapping[str, str],
) -> str:
    """Why *d* does not import, naming the package of a missing module when there is one."""
    found = _MISSING.findall(output)
    if found:
        missing = found[-1].split(".", 1)[0]
        has = owner.get(missing)
        label = scheduler.pkgs[d].label
        if has is None:
            why = (
                f"it imports {found[-1]!r}, which no wheel built for this target provides"
                " (a dependency missing from its metadata, or from the lock?)"
            )
        elif has == d:
            why = f"its own module {found[-1]!r} is missing from its wheel"
        else:
            why = (
                f"it imports {found[-1]!r} of {scheduler.pkgs[has].label}, which is not among"
                " its dependencies (add it with an overlay rule's dependencies.add)"
            )
        return f"{label} does not import {where}: {why}; see the end of the log"
    return f"{', '.join(modules)} does not import {where}; see the end of the log"
