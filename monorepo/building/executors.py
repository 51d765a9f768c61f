"""Where a package's build runs: this machine's threads, or a cluster, behind one interface.

The scheduler (:mod:`monorepo.building.scheduler`) decides *what* is built and *when*: a
package is ready once every wheel its build needs (its build closure) is built.  An
:class:`Executor` decides *where*: it takes a :class:`BuildJob` (everything the build
needs, nothing to look up) and returns a :class:`concurrent.futures.Future` of the
:data:`~monorepo.building.hooks.Outcome`, whose wheel and log are on this machine by the
time the future is done.  The scheduler never learns which executor it talks to, so
another engine (a REAPI service such as BuildGrid or Buildbarn) is one more class here
and one more scheme in ``open_executor``; the planner does not change.

- :class:`LocalExecutor` (the default, ``local``): a pool of *jobs* threads on this
  machine, each running :func:`~monorepo.building.hooks.build_one` in place.
- :class:`~monorepo.building.cluster.DaskExecutor` (``dask://HOST:PORT``): one Dask task
  per build on a distributed cluster, inputs and outputs moved content-addressed.

:func:`monorepo.building.builder.open_executor` turns a spec (``local``,
``dask://HOST:PORT``) into one.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from monorepo.building.hooks import Outcome, build_one
from monorepo.building.plan import Graph, Package
from monorepo.building.targets import Variant
from monorepo.errors import BuildError
from monorepo.project.config import ProjectConfig

__all__ = ["BuildJob", "Executor", "LocalExecutor", "check_executor_spec"]

LOCAL = "local"
DASK_SCHEME = "dask://"


@dataclass(frozen=True)
class BuildJob:
    """One package's build, self-contained: what to build, for what, with which wheels."""

    config: ProjectConfig
    pkg: Package
    variant: Variant
    graph: Graph
    needs: frozenset[str]
    """The dirs whose build-machine wheels go into the build's venv (its build closure)."""
    available: Mapping[str, Path]
    """Every build-machine wheel built so far, by dir (a superset of *needs*)."""
    isolation: tuple[str, ...]
    """This machine's network-isolation prefix (a remote worker finds its own)."""
    isolate: bool | None
    """The user's choice: force (True), forbid (False) or use when available (None)."""
    tree: str
    """The tree hash of ``duni/<dir>``: the source's content address."""
    key: str
    """The build's input key (as the scheduler computed it before building)."""


class Executor(Protocol):
    """Runs builds; the scheduler submits each ready package and waits on the futures."""

    name: str
    """How progress and errors name it: ``local`` or the cluster's address."""

    def submit(self, job: BuildJob) -> Future[Outcome]:
        """Start *job*; the future's wheel and log are local files once it is done."""

    def cancel(self) -> None:
        """Stop everything submitted and not finished (Ctrl-C): local threads finish their
        current build, a cluster drops its tasks."""

    def close(self) -> None:
        """Wait for what runs, then release the resources (threads, a cluster connection)."""


class LocalExecutor:
    """Today's behaviour: *jobs* builds at once, in threads of this process."""

    name = LOCAL

    def __init__(self, jobs: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="build")

    def submit(self, job: BuildJob) -> Future[Outcome]:
        return self._pool.submit(
            build_one,
            job.config,
            job.pkg,
            job.variant,
            job.graph,
            set(job.needs),
            dict(job.available),
            list(job.isolation),
        )

    def cancel(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def check_executor_spec(spec: str, *, where: str) -> str:
    """*spec* if it names an executor this version knows, else a :class:`BuildError`."""
    if spec == LOCAL:
        return spec
    if spec.startswith(DASK_SCHEME):
        rest = spec[len(DASK_SCHEME) :]
        host, sep, port = rest.rpartition(":")
        if host and sep and port.isdigit() and "/" not in rest:
            return spec
    raise BuildError(
        f"{where}: executor {spec!r} is not one this monorepo knows; use 'local' (the"
        " default) or 'dask://HOST:PORT', the address of a Dask scheduler (docs/build.md)"
    )
