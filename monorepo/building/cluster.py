"""``--executor dask://HOST:PORT``: each package's build one task on a Dask distributed cluster.

The scheduler submits a package once its build closure is built, as with the local
executor; here that becomes one Dask task (:func:`monorepo.building.remote.run_build`)
whose dependencies are its inputs, each under a content address: the source tree as
``monorepo-tree-<tree hash>`` and every build-closure wheel as ``monorepo-wheel-<sha256>``,
scattered once and then moved between workers by Dask.  Nothing else reaches the worker,
which checks each input against its address before building.  The result comes back as
the wheel's bytes, checked against the sha256 the worker reported, and the build's log;
both are written where a local build puts them, so the scheduler, the cache, progress and
the summary cannot tell the difference.

A worker that dies during a build loses only that task: Dask's scheduler runs it again on
another worker (up to its ``allowed-failures``, 3 by default, before it gives up with
``KilledWorker``).  When the dead worker held the only copy of a scattered input, the
task is cancelled by Dask; it is resubmitted here with the inputs scattered again.

A cross target's builds carry the Dask resource ``target-<platform>-<machine>``, so only
workers started with ``--resources target-linux-aarch64=1`` (say) receive them; build-
machine builds go to any worker, which must be the client's kind of machine (checked).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from monorepo._core.atomic import write_bytes
from monorepo._core.reporter import Reporter
from monorepo.building.buildenv import file_sha256
from monorepo.building.executors import BuildJob
from monorepo.building.hooks import Built, Failed, NeedMore, Outcome
from monorepo.building.remote import (
    RemoteJob,
    RemoteOutcome,
    build_compiler,
    compiler_identity,
    machine_identity,
    pack_tree,
    run_build,
    sysroot_digest,
    target_resource,
)
from monorepo.errors import BuildError
from monorepo.sources.crates import CRATES_DIR
from monorepo.sources.treehash import tree_hash

# distributed is only partly typed (untyped methods on Client and Future): its objects
# are Any here, behind these two names.
DaskClient = Any
DaskFuture = Any

__all__ = ["DaskExecutor"]

_RESUBMITS = 3
"""How often a build whose scattered inputs were lost with a worker is submitted again."""

_INSTALL = "pip install 'monorepo[dask]'"


class DaskExecutor:
    """Builds on the Dask cluster whose scheduler listens at *address* (``tcp://HOST:PORT``).

    The cluster is the user's: started with ``dask scheduler`` and ``dask worker``, by
    dask-jobqueue on Slurm or PBS, or by dask-kubernetes (docs/build.md).  *client* is an
    existing :class:`distributed.Client` to use instead of connecting (tests, notebooks).
    """

    def __init__(
        self,
        address: str,
        *,
        reporter: Reporter,
        timeout: float = 20.0,
        client: DaskClient | None = None,
    ) -> None:
        self.name = address
        self.reporter = reporter
        if client is None:
            client = _connect(address, timeout)
            self._owns_client = True
        else:
            self._owns_client = False
        self.client = client
        self._collector = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dask-collect")
        self._lock = threading.Lock()
        self._blobs: dict[str, DaskFuture] = {}
        self._sha: dict[tuple[str, int, int], str] = {}
        self._tasks: dict[str, tuple[DaskFuture, Future[Outcome]]] = {}
        self._cancelled = False
        self._compilers: dict[str, str] = {}
        self._crates: dict[Path, str] = {}
        self._resources: tuple[float, set[str]] = (0.0, set())
        workers = self._workers()
        reporter.message(
            "info", f"building on the Dask cluster at {address} ({len(workers)} workers)"
        )

    # ------------------------------------------------------------------ interface

    def submit(self, job: BuildJob) -> Future[Outcome]:
        result: Future[Outcome] = Future()
        result.set_running_or_notify_cancel()
        self._start(job, result, 0)
        return result

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            tasks = list(self._tasks.values())
            self._tasks.clear()
        with contextlib.suppress(Exception):  # the cluster may be gone already
            self.client.cancel([task for task, _ in tasks], force=True)
        for _, result in tasks:
            if not result.done():
                result.set_result(Failed("cancelled", None))

    def close(self) -> None:
        self._collector.shutdown(wait=True)
        with self._lock:
            blobs = list(self._blobs.values())
            self._blobs.clear()
        with contextlib.suppress(Exception):
            self.client.cancel(blobs)
        if self._owns_client:
            with contextlib.suppress(Exception):
                self.client.close()

    # ----------------------------------------------------------------- submission

    def _workers(self) -> dict[str, Any]:
        info = self.client.scheduler_info()
        workers = info.get("workers", {})
        return workers if isinstance(workers, dict) else {}

    def _advertised(self, resource: str) -> bool:
        """Whether some worker has *resource* (asked again at most every 2 seconds)."""
        when, names = self._resources
        if resource not in names and time.monotonic() - when > 2.0:
            names = set()
            for worker in self._workers().values():
                names |= set((worker.get("resources") or {}).keys())
            self._resources = (time.monotonic(), names)
        return resource in names

    def _start(self, job: BuildJob, result: Future[Outcome], attempt: int) -> None:
        try:
            task = self._submit(job, attempt)
        except BuildError as error:
            result.set_result(Failed(str(error), None))
            return
        except Exception as error:  # the cluster went away: this build fails, others try
            result.set_result(
                Failed(f"cannot submit to the Dask cluster at {self.name}: {error}", None)
            )
            return
        with self._lock:
            if self._cancelled:
                self.client.cancel([task], force=True)
                result.set_result(Failed("cancelled", None))
                return
            self._tasks[task.key] = (task, result)
        task.add_done_callback(
            lambda done: self._collector.submit(self._collect, job, result, done, attempt)
        )

    def _submit(self, job: BuildJob, attempt: int) -> DaskFuture:
        variant = job.variant
        resources: dict[str, float] | None = None
        digest = compiler = ""
        if variant.cross and variant.sysroot is not None:
            target = variant.target
            resource = target_resource(target.platform, target.machine)
            if not self._advertised(resource):
                raise BuildError(
                    f"no worker of the Dask cluster at {self.name} advertises {resource}, so"
                    f" none can build for target {target.name}; start workers that have its"
                    f" cross compiler and sysroot with `dask worker ... --resources"
                    f" {resource}=1` (docs/build.md)"
                )
            resources = {resource: 1}
            digest = sysroot_digest(variant.sysroot.root)
        cc = build_compiler(job.pkg, variant, os.environ)
        if cc is not None:
            if cc not in self._compilers:
                self._compilers[cc] = compiler_identity(cc)
            compiler = self._compilers[cc]
        wheels: dict[str, tuple[str, str]] = {}
        for d in sorted(job.needs):
            path = job.available[d]
            wheels[d] = (path.name, self._wheel_sha(path))
        duni = job.config.duni
        crates = {c.dir: self._crate_hash(duni / CRATES_DIR / c.dir) for c in job.pkg.crates}
        spec = RemoteJob(
            config=job.config,
            pkg=job.pkg,
            variant=variant,
            graph=job.graph,
            needs=job.needs,
            wheels=wheels,
            tree=job.tree,
            isolate=job.isolate,
            machine=machine_identity(),
            sysroot_digest=digest,
            compiler=compiler,
            crates=crates,
        )
        tree = self._blob(_tree_key(job), lambda: pack_tree(job.config.duni / job.pkg.dir))
        inputs = {
            d: self._blob(f"monorepo-wheel-{sha}", _reader(job.available[d]))
            for d, (_, sha) in wheels.items()
        }
        vendored = {
            name: self._blob(
                f"monorepo-crate-{digest.removeprefix('sha256:')}",
                lambda name=name: pack_tree(duni / CRATES_DIR / name),
            )
            for name, digest in crates.items()
        }
        return self.client.submit(
            run_build,
            spec,
            tree,
            inputs,
            vendored,
            key=f"monorepo-build-{job.pkg.dir}-{uuid.uuid4().hex[:12]}",
            pure=False,
            resources=resources,
        )

    def _crate_hash(self, path: Path) -> str:
        """A vendored crate's tree hash (once per run: crates are shared by packages)."""
        with self._lock:
            known = self._crates.get(path)
        if known is None:
            known = tree_hash(path)
            with self._lock:
                self._crates[path] = known
        return known

    def _wheel_sha(self, path: Path) -> str:
        st = path.stat()
        stamp = (str(path), st.st_size, st.st_mtime_ns)
        if stamp not in self._sha:
            self._sha[stamp] = file_sha256(path)
        return self._sha[stamp]

    def _blob(self, key: str, data: Any) -> DaskFuture:
        """The scattered input under *key* (its content address), scattered if need be."""
        with self._lock:
            known = self._blobs.get(key)
        if known is not None and known.status == "finished":
            return known
        scattered = self.client.scatter({key: data()}, hash=False)[key]
        with self._lock:
            self._blobs[key] = scattered
        return scattered

    # ------------------------------------------------------------------ results

    def _collect(
        self, job: BuildJob, result: Future[Outcome], task: DaskFuture, attempt: int
    ) -> None:
        with self._lock:
            self._tasks.pop(task.key, None)
            cancelled = self._cancelled
        if cancelled or result.done():
            return
        try:
            outcome = self._outcome(job, task, attempt)
        except Exception as error:  # keep the build going; this package fails, visibly
            outcome = Failed(
                f"internal error collecting the build from the cluster: {error!r}", None
            )
        task.release()
        if outcome is None:
            self._start(job, result, attempt + 1)
            return
        if (
            isinstance(outcome, NeedMore)
            and outcome.dynamic <= job.available.keys()
            and not outcome.dynamic <= job.needs
        ):
            # What the backend asked for is built: send it along and go on, as a local
            # build does with every built wheel at hand (a worker gets only what it needs).
            more = dataclasses.replace(job, needs=job.needs | outcome.dynamic)
            self._start(more, result, attempt)
            return
        if not isinstance(outcome, NeedMore):  # the source is not needed again (this run)
            with self._lock:
                tree = self._blobs.pop(_tree_key(job), None)
            if tree is not None:
                tree.release()
        result.set_result(outcome)

    def _outcome(self, job: BuildJob, task: DaskFuture, attempt: int) -> Outcome | None:
        """The build's outcome, or None to submit it again (its inputs were lost)."""
        from distributed import KilledWorker

        label = job.pkg.label
        if task.status == "finished":
            remote: RemoteOutcome = task.result()
            return self._materialise(job, remote)
        error: BaseException | None = None
        if task.status == "error":
            error = task.exception()
            if isinstance(error, KilledWorker):
                return Failed(
                    f"the Dask cluster gave up on building {label}: every worker that ran it"
                    f" died ({error}); see the workers' logs (out of memory?)",
                    None,
                )
        if attempt < _RESUBMITS:  # cancelled by Dask: an input died with its only worker
            self.reporter.message(
                "debug", f"resubmitting {label}: its task ended {task.status} ({error!r})"
            )
            with self._lock:
                self._forget_lost()
            return None
        return Failed(
            f"the Dask cluster at {self.name} lost the build of {label} {attempt + 1} times"
            f" ({task.status}: {error!r}); check that the workers stay up",
            None,
        )

    def _forget_lost(self) -> None:
        for key, blob in list(self._blobs.items()):
            if blob.status != "finished":
                del self._blobs[key]

    def _materialise(self, job: BuildJob, remote: RemoteOutcome) -> Outcome:
        """The worker's outcome as local files: the log always, the wheel once checked."""
        variant = job.variant
        d = job.pkg.dir
        log: Path | None = None
        if remote.log:
            log = variant.logs / f"{d}.log"
            footer = f"\n# ---- built on Dask worker {remote.worker} ----\n".encode()
            write_bytes(log, remote.log + footer)
        if remote.kind == "need-more":
            return NeedMore(set(remote.dynamic))
        if remote.kind != "built":
            return Failed(remote.reason, log)
        if hashlib.sha256(remote.wheel).hexdigest() != remote.sha256:
            return Failed(
                f"the wheel {remote.wheel_name} came back from worker {remote.worker} damaged"
                " (its sha256 differs from the one the worker computed); build again",
                log,
            )
        final = variant.wheels / remote.wheel_name
        write_bytes(final, remote.wheel)
        return Built(final, set(remote.dynamic), remote.seconds)


def _tree_key(job: BuildJob) -> str:
    return f"monorepo-tree-{job.tree.removeprefix('sha256:')}"


def _reader(path: Path) -> Any:
    return path.read_bytes


def _packer(path: Path) -> Any:
    return lambda: pack_tree(path)


def _connect(address: str, timeout: float) -> DaskClient:
    try:
        import distributed
    except ImportError:
        raise BuildError(
            f"--executor dask:// needs the distributed package, which is not installed: {_INSTALL}"
        ) from None
    try:
        make: Any = distributed.Client
        client = make(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise BuildError(
            f"cannot reach the Dask scheduler at {address} ({error}); start one with"
            " `dask scheduler` and workers with `dask worker ADDRESS`, or fix the address"
            " in --executor or [tool.monorepo] executor"
        ) from None
    deadline = time.monotonic() + timeout
    while not client.scheduler_info().get("workers"):
        if time.monotonic() > deadline:
            client.close()
            raise BuildError(
                f"the Dask scheduler at {address} has no workers; start some with"
                f" `dask worker {address}` (docs/build.md)"
            )
        time.sleep(0.2)
    return client
