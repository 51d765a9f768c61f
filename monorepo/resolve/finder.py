"""Candidates for one target: index releases, git sources and archive URLs.

This is the resolver's view of the world (the :class:`monorepo.resolve.resolver.Finder`
protocol).  It filters what the index offers for the *target* environment:
files whose requires-python admits the target's Python, wheels whose tags the
target accepts, files uploaded before exclude-newer.  A version is a candidate
when it has a source to vendor (an sdist, or an overlay rule's replacement
``source``) and a file usable on the target.  A release uploaded only as wheels is
passed over, as ``pip install --no-binary :all:`` would, and remembered so that a
failed resolution can say why (:meth:`IndexFinder.sourceless`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path

from packaging.metadata import Metadata
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from monorepo._core.paths import CacheDir
from monorepo._core.speed.switches import enabled
from monorepo.errors import MetadataError
from monorepo.index.backend import BuildBackend
from monorepo.index.client import IndexClient
from monorepo.index.pages import DistFile
from monorepo.overlays.rules import OverlaySet
from monorepo.project import pyproject
from monorepo.project.pyproject import project_table
from monorepo.project.targets import Target
from monorepo.resolve.resolver import Candidate, Dependencies, Wanted


@dataclass(frozen=True, eq=False)
class IndexRelease:
    """A version on the index: the files usable for the target.

    Compared by identity: the finder makes one per version and target, and hashing every
    file's fields each time a candidate is a dict key was a measurable share of a lock.
    """

    files: tuple[DistFile, ...]

    @property
    def sdist(self) -> DistFile | None:
        sdists = [f for f in self.files if f.kind == "sdist" and not f.yanked]
        sdists = sdists or [f for f in self.files if f.kind == "sdist"]
        # prefer .tar.gz over .zip: the modern standard form
        sdists.sort(key=lambda f: (not f.filename.endswith(".tar.gz"), f.filename))
        return sdists[0] if sdists else None


@dataclass(frozen=True)
class GitRelease:
    """A git source pinned to a commit."""

    url: str  # clone URL
    requested: str | None  # branch, tag or commit as asked
    commit: str
    subdirectory: str | None
    tree: Path  # exported checkout in the cache


def target_tags(target: Target) -> frozenset[Tag]:
    """The wheel tags a target interpreter would accept (never the host's)."""
    parts = target.python.split(".")
    version = (int(parts[0]), int(parts[1]))
    machine = target.machine
    if target.platform == "linux":
        arch = {"arm64": "aarch64", "amd64": "x86_64"}.get(machine.lower(), machine)
        platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(28, 4, -1)]
        platforms += {
            "x86_64": ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"],
            "i686": ["manylinux2014_i686", "manylinux2010_i686", "manylinux1_i686"],
        }.get(arch, [f"manylinux2014_{arch}"])
        platforms.append(f"linux_{arch}")
    elif target.platform == "darwin":
        arch = "arm64" if machine.lower() in ("arm64", "aarch64") else "x86_64"
        platforms = []
        for major in range(15, 10, -1):
            platforms += [f"macosx_{major}_0_{arch}", f"macosx_{major}_0_universal2"]
        if arch == "x86_64":
            platforms += [
                f"macosx_10_{m}_{a}"
                for m in range(16, 8, -1)
                for a in ("x86_64", "universal2", "intel")
            ]
    else:
        platforms = {"arm64": ["win_arm64"], "x86": ["win32"]}.get(machine.lower(), ["win_amd64"])
    tags: list[Tag] = []
    if target.implementation == "cpython":
        tags += cpython_tags(version, platforms=platforms)
    tags += compatible_tags(version, f"cp{version[0]}{version[1]}", platforms=platforms)
    return frozenset(tags)


#: How many projects the read-ahead crawl may visit (a bound on wasted fetches).
_CRAWL_LIMIT = 1000


class IndexFinder:
    """The :class:`~monorepo.resolve.resolver.Finder` over an index client for one target."""

    def __init__(
        self,
        client: IndexClient,
        target: Target,
        *,
        cache: CacheDir,
        exclude_newer: datetime | None = None,
        offline: bool = False,
        overlays: OverlaySet | None = None,
    ) -> None:
        self.client = client
        self.cache = cache
        self.overlays = overlays or OverlaySet()
        self.target = target
        self.exclude_newer = exclude_newer
        self.offline = offline
        env = target.marker_environment()
        self.python = Version(env["python_full_version"])
        self._lock = threading.Lock()
        self._direct_found: dict[tuple[str, str], Candidate] = {}
        self._releases: dict[tuple[str, Version], Candidate | None] = {}
        self._metadata: dict[Candidate, Dependencies] = {}
        self._crawled: set[Wanted] = set()
        self._python_cache: dict[int, bool] = {}
        self._python_keep: list[SpecifierSet] = []
        self._sourceless: dict[NormalizedName, set[Version]] = {}

    @cached_property
    def tags(self) -> frozenset[Tag]:
        return target_tags(self.target)

    # -- Finder protocol --------------------------------------------------
    def versions(self, name: NormalizedName, url: str | None) -> Sequence[Version]:
        if url:
            return (self._direct(name, url).version,)
        return self.client.project(name).versions()

    def candidate(
        self, name: NormalizedName, version: Version, url: str | None
    ) -> Candidate | None:
        if url:
            found = self._direct(name, url)
            return found if found.version == version else None
        key = (name, version)
        with self._lock:
            if key in self._releases:
                return self._releases[key]
        usable = [f for f in self.client.project(name).files(version) if self._usable(f)]
        candidate = None
        if usable and not self._has_source(name, version, usable):
            with self._lock:
                self._sourceless.setdefault(name, set()).add(version)
        elif usable:
            release = IndexRelease(tuple(sorted(usable, key=lambda f: f.filename)))
            yanked = all(f.yanked is not None for f in usable)
            candidate = Candidate(name=name, version=version, source=release, yanked=yanked)
        with self._lock:
            return self._releases.setdefault(key, candidate)

    def metadata_is_cheap(self, candidate: Candidate) -> bool:
        """Known already, or a wheel's (PEP 658 file or byte ranges): no sdist build."""
        source = candidate.source
        if not isinstance(source, IndexRelease):
            return False
        key = Candidate(candidate.name, candidate.version, source=source, url=candidate.url)
        with self._lock:
            if key in self._metadata:
                return True
        return any(f.kind == "wheel" for f in self._metadata_files(candidate))

    def sourceless(self, name: NormalizedName) -> Sequence[Version]:
        with self._lock:
            return tuple(self._sourceless.get(name, ()))

    def _has_source(self, name: NormalizedName, version: Version, usable: list[DistFile]) -> bool:
        """Whether this release can be vendored: an sdist, or an overlay's replacement."""
        if any(f.kind == "sdist" for f in usable):
            return True
        matched = self.overlays.rule_for(name, version)
        return matched is not None and matched.rule.source is not None

    def dependencies(self, candidate: Candidate) -> Dependencies:
        key = Candidate(
            candidate.name, candidate.version, source=candidate.source, url=candidate.url
        )
        with self._lock:
            cached = self._metadata.get(key)
        if cached is not None:
            return cached
        source = candidate.source
        if isinstance(source, IndexRelease):
            meta = self.client.release_metadata(self._metadata_files(candidate), self.tags)
            deps = _dependencies(meta, f"{candidate.name} {candidate.version}")
        elif isinstance(source, GitRelease):
            deps = tree_dependencies(
                source.tree,
                what=f"{candidate.name} @ {source.url}@{source.commit}",
                backend=self.client.backend,
            )[1]
        else:  # pragma: no cover - the finder only makes the two kinds above
            raise TypeError(source)
        deps = self._apply_overlay(candidate, deps)
        with self._lock:
            self._metadata[key] = deps
        return deps

    def _apply_overlay(self, candidate: Candidate, deps: Dependencies) -> Dependencies:
        """An overlay's dependency fix always wins over the package's metadata."""
        matched = self.overlays.rule_for(candidate.name, candidate.version)
        if matched is None:
            return deps
        rule = matched.rule
        if not rule.add_dependencies and not rule.remove_dependencies:
            return deps
        removed = set(rule.remove_dependencies)
        kept = tuple(r for r in deps.requires if canonicalize_name(r.name) not in removed)
        return Dependencies(kept + tuple(rule.add_dependencies), deps.requires_python)

    def prefetch(self, wanted: Iterable[Wanted]) -> None:
        """Fetch these pages in the background, and crawl ahead from each (see :meth:`_crawl`).

        Speed only: off with ``MONOREPO_NO_SPEEDUPS=read-ahead``.
        """
        if not enabled("read-ahead"):
            return
        for key in wanted:
            if key[0].startswith(":"):
                continue
            with self._lock:
                if key in self._crawled or len(self._crawled) >= _CRAWL_LIMIT:
                    continue
                self._crawled.add(key)
            self.client.background(self._crawl, key)

    def _crawl(self, wanted: Wanted) -> None:
        """Guess the version the resolver will take and start fetching its dependencies.

        The resolver pins one package at a time and only then asks for its dependencies'
        pages, so a deep graph costs one round trip per level.  Following the newest usable
        final release of each page that the asking requirement allows ahead of it (its
        metadata, then the pages of the dependencies it has on this target with the extras
        asked for) turns that into a wave of parallel fetches.  The specifier matters: a
        dependency capped below the newest release (``mpmath<1.4``) was otherwise found
        only when the resolver got there, one round trip at the very end of a lock.  Only
        caches are warmed: what the resolver decides does not depend on how far the crawl
        got.
        """
        name, extras, specifier = wanted
        page = self.client.project(name)
        for version in sorted(page.versions(), reverse=True):
            if version.is_prerelease or not specifier.contains(version):
                continue
            candidate = self.candidate(name, version, None)
            if candidate is not None:
                break
        else:
            return
        if not self.metadata_is_cheap(candidate):
            return  # never build an sdist on a guess: the resolver may not want it at all
        deps = self.dependencies(candidate)
        base = self.target.marker_environment()
        envs = [dict(base, extra=extra) for extra in ("", *extras)]
        self.prefetch(
            (
                canonicalize_name(r.name),
                frozenset(canonicalize_name(e) for e in r.extras),
                r.specifier,
            )
            for r in deps.requires
            if not r.url and (r.marker is None or any(r.marker.evaluate(e) for e in envs))
        )

    def prefetch_dependencies(self, candidates: Iterable[Candidate]) -> None:
        """Start reading these candidates' metadata (speed only, like :meth:`prefetch`)."""
        if not enabled("read-ahead"):
            return
        releases = [
            self._metadata_files(c)
            for c in candidates
            if isinstance(c.source, IndexRelease) and self.metadata_is_cheap(c)
        ]
        self.client.prefetch_metadata(releases, self.tags)

    # -- helpers ----------------------------------------------------------
    def _python_ok(self, spec: SpecifierSet) -> bool:
        """requires-python check, memoised: a project's files share a handful of specifiers."""
        key = id(spec)  # index.py shares one object per distinct specifier string
        ok = self._python_cache.get(key)
        if ok is None:
            ok = spec.contains(self.python, prereleases=True)
            self._python_cache[key] = ok
            self._python_keep.append(spec)  # keep the id valid for this finder's life
        return ok

    def _usable(self, f: DistFile) -> bool:
        if f.requires_python is not None and not self._python_ok(f.requires_python):
            return False
        if self.exclude_newer is not None and (
            f.upload_time is None or f.upload_time > self.exclude_newer
        ):
            return False
        return f.kind == "sdist" or bool(f.tags & self.tags)

    def _metadata_files(self, candidate: Candidate) -> tuple[DistFile, ...]:
        """The files whose metadata may stand for *candidate*'s: every file of its version.

        Not only the target's: Requires-Dist uses markers, so a wheel for another platform
        (read with byte ranges) beats running the sdist's build backend.  Files uploaded
        after exclude-newer stay out, so the answer does not change with later uploads.
        """
        assert isinstance(candidate.source, IndexRelease)
        files = {f.url: f for f in candidate.source.files}
        for f in self.client.project(candidate.name).files(candidate.version):
            if f.url not in files:
                if self.exclude_newer is not None and (
                    f.upload_time is None or f.upload_time > self.exclude_newer
                ):
                    continue
                files[f.url] = f
        return tuple(sorted(files.values(), key=lambda f: f.filename))

    def _direct(self, name: NormalizedName, url: str) -> Candidate:
        """The one candidate a direct reference names (cloned and read once per URL)."""
        with self._lock:
            found = self._direct_found.get((name, url))
        if found is None:
            found = self._read_direct(name, url)
            with self._lock:
                found = self._direct_found.setdefault((name, url), found)
        return found

    def _read_direct(self, name: NormalizedName, url: str) -> Candidate:
        from monorepo.sources import git  # libgit2 is loaded only by runs that need it

        if not url.startswith("git+"):
            raise MetadataError(
                f"{name} @ {url}: only git+ direct references are supported as sources; "
                "use [tool.monorepo.sources] with a git URL or an overlay `source` for archives."
            )
        clone_url, rev, subdirectory = git.split_git_url(url)
        repo = git.open_mirror(
            clone_url,
            cache=self.cache,
            offline=self.offline,
            need=rev if rev and len(rev) == 40 else None,
        )
        commit = git.resolve_rev(repo, rev, url=clone_url)
        tree = git.export_commit(clone_url, commit, cache=self.cache, offline=self.offline)
        project_dir = tree / subdirectory if subdirectory else tree
        found_name, deps, version = tree_metadata(
            project_dir, what=f"{name} @ {url}", backend=self.client.backend
        )
        if found_name != name:
            raise MetadataError(
                f"{url} contains the project {found_name!r}, not {name!r}: fix the name in "
                "[tool.monorepo.sources] or the requirement."
            )
        release = GitRelease(clone_url, rev, commit, subdirectory, project_dir)
        candidate = Candidate(name=name, version=version, source=release, url=url)
        with self._lock:
            self._metadata[candidate] = self._apply_overlay(candidate, deps)
        return candidate


def _dependencies(meta: Metadata, what: str) -> Dependencies:
    return Dependencies(
        requires=tuple(meta.requires_dist or ()),
        requires_python=meta.requires_python,
    )


def tree_metadata(
    project_dir: Path, *, what: str, backend: BuildBackend | None
) -> tuple[NormalizedName, Dependencies, Version]:
    """Name, dependencies and version of a source tree (a git checkout).

    Static ``[project]`` metadata (PEP 621) is read directly; when any of name,
    version or dependencies is dynamic, the build backend is asked.
    """
    name, deps = tree_dependencies(project_dir, what=what, backend=backend)
    return name, deps, _tree_version(project_dir, what=what, backend=backend)


def _read_project(project_dir: Path, what: str) -> dict[str, object]:
    return project_table(pyproject.load(project_dir, what=what))


def _static(project: dict[str, object]) -> bool:
    dynamic = project.get("dynamic", [])
    dyn = set(dynamic) if isinstance(dynamic, list) else set()
    return (
        bool(project.get("name"))
        and not dyn & {"version", "dependencies", "optional-dependencies", "requires-python"}
        and "version" in project
    )


def tree_dependencies(
    project_dir: Path, *, what: str, backend: BuildBackend | None
) -> tuple[NormalizedName, Dependencies]:
    project = _read_project(project_dir, what)
    if _static(project):
        reqs: list[Requirement] = []
        try:
            for r in project.get("dependencies", []) or []:  # type: ignore[attr-defined]
                reqs.append(Requirement(str(r)))
            extras = project.get("optional-dependencies", {}) or {}
            for extra, items in extras.items():  # type: ignore[attr-defined]
                for r in items:
                    req = Requirement(str(r))
                    marker = f"extra == '{canonicalize_name(extra)}'"
                    if req.marker is not None:
                        marker = f"({req.marker}) and {marker}"
                    reqs.append(Requirement(f"{str(req).split(';')[0]}; {marker}"))
            rp = project.get("requires-python")
            spec = SpecifierSet(str(rp)) if rp else None
        except (InvalidRequirement, InvalidSpecifier) as exc:
            raise MetadataError(
                f"{what}: invalid [project] metadata in pyproject.toml: {exc}"
            ) from None
        return canonicalize_name(str(project["name"])), Dependencies(tuple(reqs), spec)
    from monorepo.index.metadata import metadata_from_source_tree

    meta = metadata_from_source_tree(project_dir, what=what, backend=_required(backend, what))
    return canonicalize_name(meta.name), _dependencies(meta, what)


def _tree_version(project_dir: Path, *, what: str, backend: BuildBackend | None) -> Version:
    project = _read_project(project_dir, what)
    if _static(project):
        try:
            return Version(str(project["version"]))
        except InvalidVersion:
            raise MetadataError(
                f"{what}: [project] version {project['version']!r} is not a valid version"
            ) from None
    from monorepo.index.metadata import metadata_from_source_tree

    return metadata_from_source_tree(
        project_dir, what=what, backend=_required(backend, what)
    ).version


def _required(backend: BuildBackend | None, what: str) -> BuildBackend:
    if backend is None:
        raise MetadataError(
            f"{what}: its [project] table is dynamic, so only its build backend can say"
            " what it is, and this index client runs no build backend."
        )
    return backend
