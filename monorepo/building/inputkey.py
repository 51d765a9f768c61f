"""The key of a package build's inputs: what a wheel is a function of.

Two builds with the same key must make the same wheel; that is what the build record
(``duni-build/<target>/build.toml``) promises another machine, what ``verify --rebuild``
checks, and what a content-addressed wheel cache is indexed by.  The key is therefore
everything that can change the bytes of a wheel and nothing that cannot (an absolute
checkout path, the time of day, the order a directory was listed in).

The module is pure: collaborators find the values (hash the tree, run the compiler's
``--version``, read the sysroot's facts) and pass them in; here they are only normalised,
serialised canonically and hashed.  That keeps the key testable without a compiler and
lets a remote worker recompute it from a table.

Decisions:

* The toolchain is ``None`` only when no compiler takes part (a pure package).  A native
  build of a C extension still names the host compiler: another gcc makes other bytes.
* A toolchain is identified by its path *and* the digest of its ``--version`` output; the
  path because ``cc`` on two machines can be different programs, the output because an
  upgraded compiler keeps its path.
* The sysroot is identified by a digest of its facts (its ``monorepo-sysroot.toml``), not
  of its files: the facts name every Debian package and version that went into it.
* Build-closure wheels are named by file name and sha256, so that a rebuilt (different)
  setuptools wheel changes the key of everything built with it.
* ``SCHEMA`` is part of the digest, so a change to what the key covers (or to how builds
  are normalised) invalidates every cached wheel at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import tomlkit
from tomlkit.items import InlineTable, Table

from monorepo.errors import BuildError

__all__ = [
    "SCHEMA",
    "InputKey",
    "TargetIdentity",
    "ToolchainIdentity",
    "sysroot_identity",
]

#: Bumped whenever the meaning of a key changes (new inputs, other normalisation).
SCHEMA = 1

ConfigValue = str | tuple[str, ...]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, order=True)
class TargetIdentity:
    """The parts of a target that change a wheel (not where its compiler lives)."""

    name: str
    python: str
    platform: str
    machine: str
    implementation: str = "cpython"

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "python": self.python,
            "platform": self.platform,
            "machine": self.machine,
            "implementation": self.implementation,
        }


@dataclass(frozen=True, order=True)
class ToolchainIdentity:
    """A C compiler: its path and a digest of what its ``--version`` says."""

    compiler: str
    version_digest: str

    @classmethod
    def from_version_output(cls, compiler: str, output: str | bytes) -> ToolchainIdentity:
        """The identity of *compiler* from its ``--version`` output; line endings and
        trailing blanks are normalised because they carry no identity."""
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
        lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
        normal = "\n".join(lines).strip("\n") + "\n"
        return cls(compiler=compiler, version_digest=_sha256(normal.encode("utf-8")))

    def as_dict(self) -> dict[str, str]:
        return {"compiler": self.compiler, "version-digest": self.version_digest}


def sysroot_identity(facts: str | bytes | Mapping[str, Any]) -> str:
    """A sysroot's identity: the digest of its facts file (text or bytes), or of its
    parsed facts (a mapping, hashed canonically so that key order does not matter)."""
    if isinstance(facts, Mapping):
        return _sha256(_canonical(facts))
    data = facts.encode("utf-8") if isinstance(facts, str) else facts
    return _sha256(data)


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _normal_settings(
    settings: Mapping[str, str | Sequence[str]],
) -> tuple[tuple[str, ConfigValue], ...]:
    out: list[tuple[str, ConfigValue]] = []
    for key, value in settings.items():
        if isinstance(value, str):
            out.append((str(key), value))
        else:
            # The order of a list setting is the order the backend sees: kept.
            out.append((str(key), tuple(str(v) for v in value)))
    return tuple(sorted(out, key=lambda kv: kv[0]))


def _normal_wheels(
    wheels: Mapping[str, str] | Iterable[tuple[str, str]],
) -> tuple[tuple[str, str], ...]:
    pairs = wheels.items() if isinstance(wheels, Mapping) else wheels
    seen: dict[str, str] = {}
    for name, digest in pairs:
        digest = digest.removeprefix("sha256:").lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise BuildError(f"the build-closure wheel {name} has no sha256 digest ({digest!r})")
        if seen.get(name, digest) != digest:
            raise BuildError(f"the build-closure wheel {name} is given with two digests")
        seen[name] = digest
    return tuple(sorted(seen.items()))


@dataclass(frozen=True)
class InputKey:
    """Everything one package's wheel is built from, normalised and sorted.

    Build one with :meth:`create`, which accepts mappings in any order; the fields are
    the normal form (sorted tuples), so two keys compare equal exactly when their
    digests do.
    """

    package: str
    version: str
    source_tree: str
    target: TargetIdentity
    toolchain: ToolchainIdentity | None
    sysroot: str | None
    build_wheels: tuple[tuple[str, str], ...]
    config_settings: tuple[tuple[str, ConfigValue], ...]
    build_env: tuple[tuple[str, str], ...]
    schema: int = field(default=SCHEMA)

    @classmethod
    def create(
        cls,
        *,
        package: str,
        version: str,
        source_tree: str,
        target: TargetIdentity,
        toolchain: ToolchainIdentity | None,
        sysroot: str | None,
        build_wheels: Mapping[str, str] | Iterable[tuple[str, str]],
        config_settings: Mapping[str, str | Sequence[str]] | None = None,
        build_env: Mapping[str, str] | None = None,
    ) -> InputKey:
        """The key of these inputs; *source_tree* is the tree hash after patches."""
        if not source_tree:
            raise BuildError(f"{package} {version} has no source tree hash to key its build by")
        return cls(
            package=package,
            version=version,
            source_tree=source_tree,
            target=target,
            toolchain=toolchain,
            sysroot=sysroot,
            build_wheels=_normal_wheels(build_wheels),
            config_settings=_normal_settings(config_settings or {}),
            build_env=tuple(sorted((str(k), str(v)) for k, v in (build_env or {}).items())),
        )

    # ------------------------------------------------------------------ identity

    def as_dict(self) -> dict[str, Any]:
        """The key as plain data: the canonical form hashed by :meth:`digest`."""
        return {
            "schema": self.schema,
            "package": self.package,
            "version": self.version,
            "source-tree": self.source_tree,
            "target": self.target.as_dict(),
            "toolchain": None if self.toolchain is None else self.toolchain.as_dict(),
            "sysroot": self.sysroot,
            "build-wheels": dict(self.build_wheels),
            "config-settings": {
                k: (v if isinstance(v, str) else list(v)) for k, v in self.config_settings
            },
            "build-env": dict(self.build_env),
        }

    def digest(self) -> str:
        """The sha256 (hex) of the canonical JSON of :meth:`as_dict`."""
        return _sha256(_canonical(self.as_dict()))

    def differences(self, other: InputKey) -> list[str]:
        """The names of the inputs that differ from *other*'s, sorted: what a report says
        when two builds were not of the same thing."""
        mine, theirs = self.as_dict(), other.as_dict()
        return sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))

    # ---------------------------------------------------------------------- TOML

    def to_toml_table(self) -> Table:
        """A tomlkit table of the key with its digest first; the same key always renders
        to the same text.  ``toolchain`` and ``sysroot`` are left out when ``None``."""
        table = tomlkit.table()
        table.add("digest", self.digest())
        table.add("schema", self.schema)
        table.add("package", self.package)
        table.add("version", self.version)
        table.add("source-tree", self.source_tree)
        table.add("target", _inline(self.target.as_dict()))
        if self.toolchain is not None:
            table.add("toolchain", _inline(self.toolchain.as_dict()))
        if self.sysroot is not None:
            table.add("sysroot", self.sysroot)
        table.add("build-wheels", _inline(dict(self.build_wheels)))
        settings = _inline({})
        for key, value in self.config_settings:
            if isinstance(value, str):
                settings.append(key, value)
            else:
                array = tomlkit.array()
                array.extend(value)
                settings.append(key, array)
        table.add("config-settings", settings)
        table.add("build-env", _inline(dict(self.build_env)))
        return table

    @classmethod
    def from_toml_table(cls, table: Mapping[str, Any], *, where: str = "build.toml") -> InputKey:
        """The key a table of :meth:`to_toml_table` holds (as tomlkit or tomllib reads it);
        its recorded digest must match, so a hand-edited record is caught."""
        try:
            target = table["target"]
            toolchain = table.get("toolchain")
            key = cls(
                package=str(table["package"]),
                version=str(table["version"]),
                source_tree=str(table["source-tree"]),
                target=TargetIdentity(
                    name=str(target["name"]),
                    python=str(target["python"]),
                    platform=str(target["platform"]),
                    machine=str(target["machine"]),
                    implementation=str(target.get("implementation", "cpython")),
                ),
                toolchain=None
                if toolchain is None
                else ToolchainIdentity(
                    compiler=str(toolchain["compiler"]),
                    version_digest=str(toolchain["version-digest"]),
                ),
                sysroot=None if table.get("sysroot") is None else str(table["sysroot"]),
                build_wheels=_normal_wheels(
                    (str(k), str(v)) for k, v in table.get("build-wheels", {}).items()
                ),
                config_settings=_normal_settings(
                    {
                        str(k): (v if isinstance(v, str) else [str(x) for x in v])
                        for k, v in table.get("config-settings", {}).items()
                    }
                ),
                build_env=tuple(
                    sorted((str(k), str(v)) for k, v in table.get("build-env", {}).items())
                ),
                schema=int(table.get("schema", SCHEMA)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise BuildError(
                f"{where}: an input key is malformed ({error!r}); rebuild to write it again"
            ) from None
        recorded = table.get("digest")
        if recorded is not None and str(recorded) != key.digest():
            raise BuildError(
                f"{where}: the input key of {key.package} {key.version} says digest {recorded},"
                f" but its fields hash to {key.digest()}; the record was edited or damaged,"
                " rebuild to write it again"
            )
        return key


def _inline(values: Mapping[str, Any]) -> InlineTable:
    inline = tomlkit.inline_table()
    for k, v in values.items():
        inline.append(k, v)
    return inline
