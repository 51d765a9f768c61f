"""The build graph run: each package started as soon as what it needs is built."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any

from monorepo._core.atomic import write_text_if_changed
from monorepo._core.reporter import Reporter
from monorepo.building.buildenv import file_sha256
from monorepo.building.cache import BuildCache
from monorepo.building.executors import BuildJob, Executor, LocalExecutor
from monorepo.building.hooks import Failed, NeedMore, Outcome
from monorepo.building.plan import Graph, Package
from monorepo.building.results import PackageResult, log_tail
from monorepo.building.targets import (
    Node,
    Variant,
)
from monorepo.project.config import ProjectConfig
from monorepo.sources.treehash import tree_hash

_FORMAT = 1


class Scheduler:
    """Every node of the build graph (a package for a variant) built once what it needs is.

    Nodes of variant 0 build for the build machine's venvs; a cross build's target is the
    last variant.  ``state.json`` per variant records what each wheel was built from.
    """

    def __init__(
        self,
        config: ProjectConfig,
        pkgs: Mapping[str, Package],
        order: Sequence[str],
        variants: Sequence[Variant],
        *,
        jobs: int,
        reporter: Reporter,
        isolation: Sequence[str],
        isolate: bool | None = None,
        executor: Executor | None = None,
        cache: BuildCache | None = None,
        toolchain: Callable[[Package, Variant], object] | None = None,
    ) -> None:
        self.config = config
        self.pkgs = pkgs
        self.rank = {d: i for i, d in enumerate(order)}
        self.graph = Graph(pkgs, build_dependencies=config.build_dependencies)
        self.variants = variants
        self.jobs = jobs
        self.reporter = reporter
        self.isolation = list(isolation)
        self.isolate = isolate
        self.executor: Executor = executor if executor is not None else LocalExecutor(jobs)
        self.cache = cache
        self.toolchain = toolchain
        """The identity of what compiles a package for a variant (its compiler's version,
        the sysroot's digest): part of the key, so that a build cache shared between
        machines never hands out a wheel another compiler made."""
        self.states = [self._read_state(v) for v in variants]
        self.tree_hashes: dict[str, str] = {}
        self.static: dict[str, tuple[set[str], list[str]]] = {}
        self.dynamic: dict[Node, set[str]] = {}
        self.status: dict[Node, str] = {}
        self.keys: dict[Node, str] = {}
        self.wheels: dict[Node, Path] = {}
        self.pending: set[Node] = set()
        self.results: dict[Node, PackageResult] = {}
        self.warnings: list[str] = []
        self.opened: set[str] = set()
        self.waiting: list[Node] = []
        """Submitted beyond *jobs*: queued in the executor, their tasks not open yet."""
        """Keys of the per-package tasks open on the reporter (see :meth:`started`)."""

    # ---------------------------------------------------------------- state

    @staticmethod
    def _read_state(variant: Variant) -> dict[str, Any]:
        try:
            data = json.loads(variant.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            return {}
        packages = data.get("packages")
        return packages if isinstance(packages, dict) else {}

    def write_state(self, index: int) -> None:
        variant = self.variants[index]
        data = {"format": _FORMAT, "packages": self.states[index]}
        write_text_if_changed(variant.state_path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    # ---------------------------------------------------------------- graph

    def static_needs(self, d: str) -> tuple[set[str], list[str]]:
        if d not in self.static:
            pkg = self.pkgs[d]
            locked = self.graph.locked_closure(pkg)
            self.static[d] = (
                locked if locked is not None else self.graph.needs(pkg, pkg.requires, strict=False)
            )
        return self.static[d]

    def needs(self, node: Node) -> set[str]:
        return self.static_needs(node[1])[0] | self.dynamic.get(node, set())

    def enqueue(self, node: Node) -> None:
        """Add *node* and (as build-machine builds) everything its build needs."""
        stack = [node]
        while stack:
            n = stack.pop()
            if n in self.status or n in self.pending:
                continue
            self.pending.add(n)
            stack += [(0, d) for d in self.needs(n)]

    def tree_key(self, d: str) -> str:
        if d not in self.tree_hashes:
            actual = tree_hash(self.config.duni / d)
            pkg = self.pkgs[d]
            if pkg.lock_tree_hash and actual != pkg.lock_tree_hash:
                self.warn(
                    f"duni/{d} differs from the tree pylock.toml records for {pkg.label}"
                    " (edited by hand?); building it as it is. `monorepo verify` lists the"
                    " differences"
                )
            self.tree_hashes[d] = actual
        return self.tree_hashes[d]

    def key(self, node: Node, needs: Iterable[str]) -> str:
        index, d = node
        pkg = self.pkgs[d]
        target = self.variants[index].target
        data = {
            "format": _FORMAT,
            "target": {
                **target.canonical(),
                "cc": target.cc,
                "sysroot": target.sysroot,
                "runner": target.runner,
            },
            "cross": self.variants[index].cross,
            "tree": self.tree_key(d),
            "backend": pkg.backend,
            "requires": list(pkg.requires),
            "backend-path": list(pkg.backend_path),
            "build-env": dict(sorted(pkg.build_env.items())),
            "config-settings": pkg.config_settings_for(target),
            "c-extension": [pkg.c_extension, pkg.c_extension_overlay],
            "needs": {n: self.keys[(0, n)] for n in sorted(needs)},
        }
        if self.toolchain is not None:
            data["toolchain"] = self.toolchain(pkg, self.variants[index])
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.reporter.message("warning", text)

    # ------------------------------------------------------------ scheduling

    def result(self, node: Node, **kw: Any) -> PackageResult:
        pkg = self.pkgs[node[1]]
        return PackageResult(
            dir=pkg.dir,
            name=str(pkg.name),
            version=str(pkg.version),
            host=len(self.variants) > 1 and node[0] == 0,
            **kw,
        )

    def fail(self, node: Node, reason: str, log: Path | None) -> None:
        self.closed(node)  # requeued, then its needs failed
        self.status[node] = "failed"
        self.results[node] = self.result(node, reason=reason, log=log, tail=log_tail(log))
        label = self.results[node].label
        where = f" (log: {log})" if log is not None else ""
        self.reporter.message("info", f"failed {label}: {reason}{where}")

    def done(
        self, node: Node, status: str, wheel: Path, seconds: float, log: Path | None = None
    ) -> None:
        index, d = node
        self.closed(node)  # requeued, then served from the cache
        self.status[node] = status
        self.wheels[node] = wheel
        if status == "built":
            log = self.variants[index].logs / f"{d}.log"
        self.results[node] = self.result(node, wheel=wheel, log=log, seconds=seconds)
        if status == "built":
            self.reporter.message(
                "info", f"built {self.results[node].label} ({seconds:.1f}s): {wheel.name}"
            )

    def available(self) -> dict[str, Path]:
        """Build-machine wheels ready to go into a build's venv, by dir."""
        return {
            d: self.wheels[(i, d)]
            for (i, d), status in self.status.items()
            if i == 0 and status in ("built", "skipped", "cached")
        }

    def up_to_date(self, node: Node, key: str) -> Path | None:
        index, d = node
        recorded = self.states[index].get(d)
        if not isinstance(recorded, dict) or recorded.get("key") != key:
            return None
        wheel = self.variants[index].wheels / str(recorded.get("wheel", ""))
        if not wheel.is_file() or file_sha256(wheel) != recorded.get("sha256"):
            return None
        return wheel

    def run(self, requested: Iterable[Node]) -> None:
        for node in requested:
            self.enqueue(node)
        for node in list(self.pending):
            recorded = self.states[node[0]].get(node[1])
            if isinstance(recorded, dict):
                known = {str(x) for x in recorded.get("dynamic", ()) if str(x) in self.pkgs}
                if known:
                    self.dynamic[node] = known
                    self.pending.discard(node)
                    self.enqueue(node)
        total = len(self.pending)
        self.reporter.task("build", f"Building {total} packages", total)
        running: dict[Future[Outcome], tuple[Node, str]] = {}
        try:
            while True:
                self.schedule(running)
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    node, key = running.pop(future)
                    self.finish(node, key, future)
        except BaseException:  # Ctrl-C: drop what was submitted (a cluster's tasks too)
            self.executor.cancel()
            raise
        finally:
            self.executor.close()
        for node in sorted(self.pending, key=self.order):
            ready = self.available()
            waiting = sorted(n for n in self.needs(node) if n not in ready)
            self.fail(
                node,
                "not built: its build requirements wait on each other"
                f" ({', '.join(waiting)}); break the cycle with an overlay's build-requires",
                None,
            )
            self.reporter.advance("build")
        self.pending.clear()
        self.reporter.done("build")

    def order(self, node: Node) -> tuple[int, int]:
        return (node[0], self.rank.get(node[1], len(self.rank)))

    def schedule(self, running: dict[Future[Outcome], tuple[Node, str]]) -> None:
        progressed = True
        while progressed:
            progressed = False
            ready = self.available()
            for node in sorted(self.pending, key=self.order):
                needs = self.needs(node)
                problems = self.static_needs(node[1])[1]
                broken = sorted(n for n in needs if self.status.get((0, n)) == "failed")
                if problems or broken:
                    self.pending.discard(node)
                    if problems:
                        reason = "; ".join(problems)
                    else:
                        labels = ", ".join(self.pkgs[n].label for n in broken)
                        reason = f"not built: its build needs {labels}, which failed"
                    self.fail(node, reason, None)
                    self.reporter.advance("build")
                    progressed = True
                    continue
                if not needs <= ready.keys():
                    continue
                self.pending.discard(node)
                progressed = True
                key = self.key(node, needs)
                self.keys[node] = key
                wheel = self.up_to_date(node, key)
                if wheel is not None:
                    self.reporter.message("debug", f"up to date: {wheel.name}")
                    if self.cache is not None and self.cache.get(key) is None:
                        self.cache.put(key, wheel, None, self.dynamic.get(node, ()))
                    self.done(node, "skipped", wheel, 0.0)
                    self.reporter.advance("build")
                    continue
                cached = self.from_cache(node, key, needs)
                if cached is not None:
                    if cached:
                        self.reporter.advance("build")
                    continue
                self.status[node] = "running"
                self.started(node)
                job = BuildJob(
                    config=self.config,
                    pkg=self.pkgs[node[1]],
                    variant=self.variants[node[0]],
                    graph=self.graph,
                    needs=frozenset(needs),
                    available=dict(ready),
                    isolation=tuple(self.isolation),
                    isolate=self.isolate,
                    tree=self.tree_key(node[1]),
                    key=key,
                )
                running[self.executor.submit(job)] = (node, key)

    def from_cache(self, node: Node, key: str, needs: set[str]) -> bool | None:
        """True when *node*'s wheel came from the cache, False when it waits again for
        the build requirements the cache says its backend asks for, None to build it."""
        if self.cache is None:
            return None
        entry = self.cache.get(key)
        if entry is None:
            return None
        asked = {d for d in entry.dynamic if d in self.pkgs}
        if not asked <= needs:
            self.dynamic[node] = self.dynamic.get(node, set()) | asked
            self.enqueue(node)
            return False
        index, d = node
        wheel = self.cache.fetch(entry, self.variants[index].wheels)
        if wheel is None:
            if entry.wheel is not None:
                self.reporter.message(
                    "warning",
                    f"the build cache's entry for {self.pkgs[d].label} ({entry.path}) is"
                    " damaged; removed it, building the package again",
                )
            return None
        self.record(node, key, wheel, asked)
        self.done(node, "cached", wheel, 0.0, log=entry.log)
        self.reporter.message("debug", f"from the build cache: {wheel.name}")
        return True

    def record(self, node: Node, key: str, wheel: Path, dynamic: Iterable[str]) -> None:
        """``state.json``: *node*'s wheel was made from *key* (the up-to-date check)."""
        index, d = node
        state = self.states[index]
        previous = state.get(d)
        if isinstance(previous, dict) and previous.get("wheel") != wheel.name:
            (self.variants[index].wheels / str(previous.get("wheel"))).unlink(missing_ok=True)
        state[d] = {
            "key": key,
            "wheel": wheel.name,
            "sha256": file_sha256(wheel),
            "dynamic": sorted(dynamic),
        }
        self.write_state(index)

    def task_key(self, node: Node) -> str:
        """The reporter's key for one package's build: ``build:<dir>``, and the target
        (``build:<dir>@<target>``) when a cross build also builds it for the host."""
        index, d = node
        if len(self.variants) > 1:
            return f"build:{d}@{self.variants[index].target.name}"
        return f"build:{d}"

    def started(self, node: Node) -> None:
        """Open the package's task when it is submitted (once, even when it is requeued
        for dynamic needs); beyond *jobs* tasks at once the executor queues the build,
        so its task opens when an earlier one closes: an open task is a running build."""
        key = self.task_key(node)
        if key in self.opened or node in self.waiting:
            return
        if len(self.opened) >= self.jobs:
            self.waiting.append(node)
            return
        self.opened.add(key)
        pkg = self.pkgs[node[1]]
        where = f" for {self.variants[node[0]].target.name}" if len(self.variants) > 1 else ""
        self.reporter.task(key, f"{pkg.label}: building{where}")

    def closed(self, node: Node) -> None:
        """Close *node*'s task if open (and open the next waiting one's)."""
        if node in self.waiting:
            self.waiting.remove(node)
        key = self.task_key(node)
        if key in self.opened:
            self.opened.discard(key)
            self.reporter.done(key)
        while self.waiting and len(self.opened) < self.jobs:
            self.started(self.waiting.pop(0))

    def finish(self, node: Node, key: str, future: Future[Outcome]) -> None:
        index, d = node
        try:
            outcome = future.result()
        except Exception as error:  # a bug or an unexpected OS error: keep the others going
            outcome = Failed(f"internal error: {error!r}", None)
        if isinstance(outcome, NeedMore):
            del self.status[node]
            self.dynamic[node] = outcome.dynamic
            self.enqueue(node)
            return
        self.closed(node)
        self.reporter.advance("build")
        if isinstance(outcome, Failed):
            self.fail(node, outcome.reason, outcome.log)
            return
        needs = self.needs(node) | outcome.dynamic
        self.dynamic[node] = outcome.dynamic
        started, key = key, self.key(node, needs)
        self.keys[node] = key
        self.record(node, key, outcome.wheel, outcome.dynamic)
        if self.cache is not None:
            log = self.variants[index].logs / f"{d}.log"
            self.cache.put(key, outcome.wheel, log if log.is_file() else None, outcome.dynamic)
            if started != key:
                self.cache.hint(started, outcome.dynamic)
        self.done(node, "built", outcome.wheel, outcome.seconds)

    # ------------------------------------------------------------ smoke test
