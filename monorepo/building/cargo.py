"""Rust extensions: cargo pointed at the vendored crates, offline, natively or for a target.

setuptools-rust and maturin both run cargo, and cargo reads its configuration from
``$CARGO_HOME/config.toml`` and the environment; so a package whose lock records
crates (:mod:`monorepo.sources.crates`) gets, whatever its backend:

* a ``CARGO_HOME`` of its own in the build directory (``duni-build/<target>/cargo/<dir>``;
  never duni/, which is the vendored source and stays as pulled) whose ``config.toml``
  replaces every registry its ``Cargo.lock`` names by the directory source
  ``duni/.crates`` (``[source.crates-io] replace-with = "vendored-sources"``), with
  ``[net] offline = true``, and ``CARGO_NET_OFFLINE=true`` beside it;
* for a cross target, ``CARGO_BUILD_TARGET`` (the target triple, which setuptools-rust
  and maturin pass to cargo as ``--target``), the linker
  ``CARGO_TARGET_<TRIPLE>_LINKER`` (the target's C compiler) with the sysroot as a link
  argument, and pyo3's ``PYO3_CROSS_LIB_DIR`` / ``PYO3_CROSS_PYTHON_VERSION`` from the
  sysroot.  A toolchain without the target's standard library is reported before the
  build, naming the package and what to install.

A failed build whose log shows cargo missing a crate is reported as that, naming the
crate, not as a generic hook failure (:func:`explain_cargo_failure`).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from monorepo._core.atomic import write_text_if_changed
from monorepo.sources.crates import CRATES_DIR, Crate

__all__ = [
    "RUST_TRIPLES",
    "cargo_environ",
    "explain_cargo_failure",
    "is_default_registry",
    "missing_standard_library",
    "rust_triple",
]

RUST_TRIPLES: Mapping[str, str] = {
    "x86_64": "x86_64-unknown-linux-gnu",
    "aarch64": "aarch64-unknown-linux-gnu",
    "armv7l": "armv7-unknown-linux-gnueabihf",
    "armhf": "armv7-unknown-linux-gnueabihf",
    "i686": "i686-unknown-linux-gnu",
    "ppc64le": "powerpc64le-unknown-linux-gnu",
    "s390x": "s390x-unknown-linux-gnu",
    "riscv64": "riscv64gc-unknown-linux-gnu",
}
"""Linux machine names (``platform.machine()``, as targets name them) to Rust target triples."""

_VENDORED = "vendored-sources"


def rust_triple(machine: str) -> str | None:
    return RUST_TRIPLES.get(machine)


def _toml_str(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


@functools.lru_cache(maxsize=64)
def is_default_registry(cargo: str, source: str) -> bool:
    """Whether cargo takes the ``Cargo.lock`` *source* for its default registry.

    The default registry must be replaced under its own name (``crates-io``) and cargo
    refuses a second name for it; which URL that is, only cargo knows (this code names
    no registry host).  So cargo is asked: a throwaway configuration that names the
    source under another name, and an offline ``cargo metadata`` of an empty crate.
    """
    url = source.removeprefix("registry+")
    with tempfile.TemporaryDirectory(prefix="monorepo-cargo-probe-") as tmp:
        root = Path(tmp)
        (root / "probe" / "src").mkdir(parents=True)
        (root / "probe" / "src" / "lib.rs").write_text("", encoding="utf-8")
        (root / "probe" / "Cargo.toml").write_text(
            '[package]\nname = "probe"\nversion = "0.0.0"\n', encoding="utf-8"
        )
        (root / "home").mkdir()
        (root / "home" / "config.toml").write_text(
            f"[source.probe]\nregistry = {_toml_str(url)}\nreplace-with = 'empty'\n"
            f"[source.empty]\ndirectory = {_toml_str(str(root / 'empty'))}\n",
            encoding="utf-8",
        )
        (root / "empty").mkdir()
        try:
            done = subprocess.run(
                [cargo, "metadata", "--offline", "--format-version", "1"],
                cwd=root / "probe",
                env={**_base_env(), "CARGO_HOME": str(root / "home")},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
    return done.returncode != 0 and "crates-io" in done.stderr


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CARGO_")}


def cargo_config(crates: Sequence[Crate], directory: Path, cargo: str) -> str:
    """The ``config.toml`` replacing every registry the crates come from by *directory*."""
    lines = [
        "# Written by `monorepo build`: crates come from duni/.crates (vendored by",
        "# `monorepo pull`), never from a registry.",
        "[source.crates-io]",
        f'replace-with = "{_VENDORED}"',
        "",
    ]
    sources = sorted({c.source for c in crates})
    others = [source for source in sources if not is_default_registry(cargo, source)]
    for i, source in enumerate(others, 1):
        lines += [
            f"[source.monorepo-registry-{i}]",
            f"registry = {_toml_str(source.removeprefix('registry+'))}",
            f'replace-with = "{_VENDORED}"',
            "",
        ]
    lines += [
        f"[source.{_VENDORED}]",
        f"directory = {_toml_str(str(directory))}",
        "",
        "[net]",
        "offline = true",
        "",
    ]
    return "\n".join(lines)


def missing_standard_library(rustc: str, triple: str) -> str | None:
    """Why *rustc* cannot build for *triple* (its standard library is absent), or None."""
    try:
        done = subprocess.run(
            [rustc, "--print", "target-libdir", "--target", triple],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{rustc} cannot be run ({error})"
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no output"])[0]
        return f"{rustc} does not know the target {triple} ({first})"
    libdir = Path(done.stdout.strip())
    if not libdir.is_dir() or not any(libdir.glob("libstd-*.rlib")):
        return f"{rustc} has no standard library for {triple} (nothing in {libdir})"
    return None


def _install_hint(triple: str, arch: str | None) -> str:
    debian = f" (Debian's rustc: apt-get install libstd-rust-dev:{arch})" if arch else ""
    return f"install it with `rustup target add {triple}`{debian}"


def cargo_environ(
    crates: Sequence[Crate],
    *,
    label: str,
    duni: Path,
    home: Path,
    path: str,
    cross: tuple[str, str, Path, Path, str | None] | None,
    remap: Mapping[str, str] | None = None,
    rustflags: str = "",
) -> dict[str, str] | str:
    """The environment for cargo (writing *home*/config.toml), or why it cannot build.

    *cross*, for a cross build: (machine, C compiler, sysroot root, sysroot directory
    holding only the sysconfigdata module, Debian architecture).  *remap* maps the
    scratch paths to fixed ones in what rustc writes (``--remap-path-prefix``: panic
    messages and debug information name the source files), so a build elsewhere gives
    the same bytes.  ``RUSTFLAGS`` is the one place for flags (cargo reads only the first
    of ``RUSTFLAGS`` and ``CARGO_TARGET_<TRIPLE>_RUSTFLAGS`` it finds), so ours go first
    and *rustflags* (the environment's or an overlay's ``build-env``) after them.
    """
    cargo = shutil.which("cargo", path=path)
    rustc = shutil.which("rustc", path=path)
    if cargo is None or rustc is None:
        missing = " and ".join(n for n, p in (("cargo", cargo), ("rustc", rustc)) if p is None)
        return (
            f"{label} is a Rust extension (its Cargo.lock names {len(crates)} crates) and"
            f" {missing} is not on PATH; install Rust (Debian: apt-get install cargo rustc,"
            " or rustup) and build again"
        )
    home.mkdir(parents=True, exist_ok=True)
    write_text_if_changed(home / "config.toml", cargo_config(crates, duni / CRATES_DIR, cargo))
    env = {"CARGO_HOME": str(home), "CARGO_NET_OFFLINE": "true"}
    flags = [f"--remap-path-prefix={old}={new}" for old, new in sorted((remap or {}).items())]
    if cross is None:
        env["RUSTFLAGS"] = " ".join([*flags, rustflags]).strip()
        return env
    machine, cc, sysroot, pythonpath, arch = cross
    triple = rust_triple(machine)
    if triple is None:
        return f"{label} is a Rust extension and monorepo knows no Rust target for {machine}"
    problem = missing_standard_library(rustc, triple)
    if problem is not None:
        return (
            f"{label} is a Rust extension, and to cross-compile it for {machine}: {problem};"
            f" {_install_hint(triple, arch)}"
        )
    key = triple.upper().replace("-", "_")
    compiler = cc.split()[0] if cc.split() else cc
    env.update(
        {
            "CARGO_BUILD_TARGET": triple,
            f"CARGO_TARGET_{key}_LINKER": compiler,
            # with --target, RUSTFLAGS reach only the target's artifacts, not build scripts
            "RUSTFLAGS": " ".join([*flags, f"-Clink-arg=--sysroot={sysroot}", rustflags]).strip(),
            "PYO3_CROSS": "1",
            "PYO3_CROSS_LIB_DIR": str(pythonpath),
        }
    )
    return env


_MISSING = (
    re.compile(r"no matching package named `([^`]+)` found"),
    re.compile(r"failed to select a version for the requirement `([^`=\s]+)"),
    re.compile(r"failed to get `([^`]+)` as a dependency"),
    re.compile(r"failed to load source for dependency `([^`]+)`"),
)
_STD = re.compile(r"can't find crate for `(?:std|core)`")
_CHECKSUM = re.compile(r"checksum for `([^`]+)` changed|the listed checksum of `([^`]+)`")


def explain_cargo_failure(log: str, label: str) -> str | None:
    """What a failed Rust build's log says cargo lacked, in one sentence (None: nothing)."""
    for pattern in _MISSING:
        found = pattern.search(log)
        if found:
            return (
                f"cargo could not find the crate `{found.group(1)}` among the vendored crates"
                f" (duni/{CRATES_DIR}) while building {label}: its Cargo.lock does not lock"
                " it (a Cargo.toml changed by a patch needs its Cargo.lock updated too), or"
                " `monorepo pull` has not vendored it; run `monorepo lock` and `monorepo pull`"
            )
    found = _CHECKSUM.search(log)
    if found:
        name = found.group(1) or found.group(2)
        return (
            f"cargo found the vendored crate `{name}` different from the checksum in"
            f" {label}'s Cargo.lock; run `monorepo verify` and `monorepo pull`"
        )
    if _STD.search(log):
        return (
            f"rustc has no standard library for the target of {label}; install the target"
            " (rustup target add <triple>, or Debian's libstd-rust-dev for the architecture)"
        )
    return None
