"""A CycloneDX 1.6 SBOM of the locked set: what a target ships, and what built it.

``monorepo export --format cyclonedx`` writes one document per target: the project as
the root component, every runtime package of the target and every build-only package
(marked ``scope: excluded`` and ``monorepo:role = build``, CycloneDX's way of listing
what is used but not shipped), each with its sdist (or git commit) as a
``distribution`` reference carrying the sha256, its license from its core metadata
(the vendored ``PKG-INFO``, else ``pyproject.toml``), the overlay patches applied (as
pedigree patches, each with its sha256) and the dependency graph of the lock.

``build`` puts a one-package document into each wheel's ``.dist-info/sboms/`` (PEP 770).

The documents are built with cyclonedx-python-lib and are byte-identical across runs:
the serial number is a UUID derived from the content (uuid5 of the lock's digest and
the target) and the timestamp is the newest upload time in the lock, not "now".
"""

from __future__ import annotations

import hashlib
import tomllib
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from monorepo._core.version import VERSION
from monorepo.errors import ConfigError
from monorepo.project.config import ProjectConfig
from monorepo.project.lockfile import (
    LockDocument,
    LockedPackage,
    SdistSource,
    VcsSource,
)

__all__ = [
    "SBOM_NAMESPACE",
    "export_cyclonedx",
    "package_license",
    "package_sbom",
    "target_sbom",
]

SBOM_NAMESPACE = uuid.UUID("6f1c3d52-8d4e-5b0a-9a57-2f8e0c1d7b64")
"""The uuid5 namespace of the documents' serial numbers."""

_EPOCH = datetime(1980, 1, 1, tzinfo=UTC)


def _purl(p: LockedPackage) -> Any:
    from packageurl import PackageURL

    qualifiers: dict[str, str] = {}
    if isinstance(p.source, VcsSource):
        qualifiers["vcs_url"] = f"git+{p.source.url}@{p.source.commit}"
    return PackageURL(
        type="pypi", name=str(p.name), version=str(p.version), qualifiers=qualifiers or None
    )


def _ref(p: LockedPackage) -> str:
    return f"pkg:pypi/{p.name}@{p.version}"


def package_license(tree: Path) -> str | None:
    """The license a package's core metadata declares: ``License-Expression`` (PEP 639),
    else ``License``, else the license classifiers; read from the vendored ``PKG-INFO``,
    else from ``pyproject.toml``'s ``[project]``.  None when it declares none."""
    try:
        text = (tree / "PKG-INFO").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = None
    if text is not None:
        msg = HeaderParser().parsestr(text)
        expression = (msg.get("License-Expression") or "").strip()
        if expression:
            return expression
        free = (msg.get("License") or "").strip()
        if free and free.upper() != "UNKNOWN" and "\n" not in free and len(free) <= 100:
            return free
        classifiers = [
            c.split("::")[-1].strip()
            for c in msg.get_all("Classifier") or []
            if c.startswith("License ::") and c.count("::") >= 2
        ]
        if classifiers:
            return " AND ".join(sorted(set(classifiers)))
        if free:
            return free.splitlines()[0].strip()[:100] or None
    try:
        project = tomllib.loads((tree / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    value = project.get("project", {}).get("license")
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, dict) and isinstance(value.get("text"), str) and value["text"].strip():
        return str(value["text"]).strip().splitlines()[0][:100]
    return None


def _component(p: LockedPackage, duni: Path) -> Any:
    from cyclonedx.contrib.license.factories import LicenseFactory
    from cyclonedx.model import (
        ExternalReference,
        ExternalReferenceType,
        HashAlgorithm,
        HashType,
        Property,
        XsUri,
    )
    from cyclonedx.model.component import (
        Component,
        ComponentScope,
        Diff,
        Patch,
        PatchClassification,
        Pedigree,
    )

    source = p.source
    refs = []
    if isinstance(source, VcsSource):
        refs.append(
            ExternalReference(
                type=ExternalReferenceType.VCS,
                url=XsUri(f"{source.url}#{source.commit}"),
                comment=f"git commit {source.commit}",
            )
        )
    else:
        refs.append(
            ExternalReference(
                type=ExternalReferenceType.DISTRIBUTION,
                url=XsUri(source.url),
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=source.sha256)],
                comment="sdist" if isinstance(source, SdistSource) else "archive",
            )
        )
    properties = [
        Property(name="monorepo:role", value=p.role),
        Property(name="monorepo:dir", value=p.dir),
    ]
    if p.tree_hash:
        properties.append(Property(name="monorepo:tree-hash", value=p.tree_hash))
    for t in p.targets:
        properties.append(Property(name="monorepo:target", value=t))
    patches = [x for x in p.tool.get("patches", ()) if isinstance(x, Mapping)]
    pedigree = None
    if patches or p.tool.get("overlay"):
        overlay = p.tool.get("overlay", {})
        pedigree = Pedigree(
            patches=[
                Patch(type=PatchClassification.UNOFFICIAL, diff=Diff(url=XsUri(str(x["path"]))))
                for x in patches
            ],
            notes=(
                f"overlay {overlay.get('name')} at {overlay.get('commit')}, rule"
                f" {overlay.get('rule')}: {overlay.get('reason')}"
                if overlay
                else None
            ),
        )
        for x in patches:
            properties.append(
                Property(name=f"monorepo:patch:{x['path']}", value=f"sha256:{x['sha256']}")
            )
    license_text = package_license(duni / p.dir)
    licenses = [LicenseFactory().make_from_string(license_text)] if license_text else []
    return Component(
        name=str(p.name),
        version=str(p.version),
        bom_ref=_ref(p),
        purl=_purl(p),
        scope=ComponentScope.EXCLUDED if p.role == "build" else ComponentScope.REQUIRED,
        external_references=refs,
        licenses=licenses,
        properties=properties,
        pedigree=pedigree,
    )


def _selected(lock: LockDocument, target: str | None) -> list[LockedPackage]:
    return [
        p
        for p in lock.packages
        if p.role == "build" or target is None or not p.targets or target in p.targets
    ]


def _document(
    root: Any,
    packages: Iterable[LockedPackage],
    duni: Path,
    *,
    seed: str,
    timestamp: datetime,
    graph: bool = True,
    direct: Iterable[str] = (),
) -> str:
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component
    from cyclonedx.output.json import JsonV1Dot6

    chosen = sorted(packages, key=lambda p: (str(p.name), p.version))
    components = {_ref(p): _component(p, duni) for p in chosen}
    tool = Component(name="monorepo", version=VERSION, bom_ref=f"monorepo@{VERSION}")
    metadata = BomMetaData(component=root, timestamp=timestamp)
    metadata.tools.components.add(tool)
    bom = Bom(
        components=components.values(),
        serial_number=uuid.uuid5(SBOM_NAMESPACE, seed),
        metadata=metadata,
        properties=[Property(name="monorepo:document", value="locked set")],
    )
    if graph:
        by_name: dict[str, list[LockedPackage]] = {}
        for p in chosen:
            by_name.setdefault(str(p.name), []).append(p)
        runtime = []
        wanted = set(direct)
        for p in chosen:
            deps = []
            for name, version in p.dependencies:
                found = [d for d in by_name.get(str(name), []) if version in (None, d.version)]
                deps += [components[_ref(d)] for d in found]
            bom.register_dependency(components[_ref(p)], deps)
            if p.role == "runtime" and (not wanted or str(p.name) in wanted):
                runtime.append(components[_ref(p)])
        bom.register_dependency(root, runtime)
    else:
        bom.register_dependency(root, list(components.values()))
    return str(JsonV1Dot6(bom).output_as_string(indent=2)) + "\n"


def _lock_digest(lock_path: Path) -> str:
    return hashlib.sha256(lock_path.read_bytes()).hexdigest()


def _newest(lock: LockDocument) -> datetime:
    times = [
        p.source.upload_time
        for p in lock.packages
        if isinstance(p.source, SdistSource) and p.source.upload_time is not None
    ]
    newest = max(times, default=_EPOCH)
    return newest if newest.tzinfo is not None else newest.replace(tzinfo=UTC)


def target_sbom(config: ProjectConfig, lock: LockDocument, target: str | None) -> str:
    """The CycloneDX 1.6 JSON document of *lock* for *target* (None: every package):
    the runtime packages the target installs and every build-only package."""
    from cyclonedx.model.component import Component, ComponentType

    names = [t.name for t in config.targets]
    if target is not None and target not in names:
        raise ConfigError(
            f"{config.pyproject}: no target named {target!r} in [tool.monorepo] targets"
            f" (targets: {', '.join(names)})"
        )
    from monorepo.project.lockfile import LOCK_NAME

    digest = _lock_digest(config.root / LOCK_NAME)
    name = config.name or config.root.name
    root = Component(
        name=name,
        type=ComponentType.APPLICATION,
        bom_ref=f"project:{name}",
        description=f"the locked set of {name}" + (f" for target {target}" if target else ""),
    )
    return _document(
        root,
        _selected(lock, target),
        config.duni,
        seed=f"{digest}:{target or ''}",
        timestamp=_newest(lock),
        direct=_direct_names(config),
    )


def _direct_names(config: ProjectConfig) -> set[str]:
    """What the project itself asks for: the root's edges in the dependency graph."""
    from packaging.utils import canonicalize_name

    reqs = list(config.dependencies)
    for group in (*config.optional_dependencies.values(), *config.dependency_groups.values()):
        reqs += group
    return {str(canonicalize_name(r.name)) for r in reqs}


def package_sbom(p: LockedPackage, duni: Path) -> str:
    """The SBOM a package's wheel carries (PEP 770): the package itself, from its
    locked source with its patches and license (read in ``duni/<dir>``); the build is
    described by the build record, not here.  It needs the lock entry alone, so a build
    on another machine (a cluster worker) writes the same document."""
    from cyclonedx.model.component import Component, ComponentType

    root = Component(
        name=str(p.name),
        version=str(p.version),
        type=ComponentType.LIBRARY,
        bom_ref=f"wheel:{p.name}@{p.version}",
        description=f"the wheel monorepo built of {p.name} {p.version}",
    )
    seed = f"{p.name}:{p.version}:{_source_id(p)}:{p.tree_hash or ''}"
    when = p.source.upload_time if isinstance(p.source, SdistSource) else None
    stamp = (when if when.tzinfo else when.replace(tzinfo=UTC)) if when else _EPOCH
    return _document(root, [p], duni, seed=seed, timestamp=stamp, graph=False)


def _source_id(p: LockedPackage) -> str:
    source = p.source
    return source.commit if isinstance(source, VcsSource) else source.sha256


def export_cyclonedx(project: Path | str = ".", *, target: str | None = None) -> str:
    """``monorepo export --format cyclonedx``: the SBOM of *project*'s lock for
    *target* (default: the first target, as ``export --format requirements-txt``)."""
    from monorepo.errors import LockFileError
    from monorepo.project.config import load_config
    from monorepo.project.lockfile import LOCK_NAME, read

    config = load_config(Path(project))
    names = [t.name for t in config.targets]
    if target is None:
        target = names[0] if names else None
    path = config.root / LOCK_NAME
    if not path.exists():
        raise LockFileError(f"{path} does not exist: run `monorepo lock` first")
    return target_sbom(config, read(path), target)
