"""``monorepo build``: every package of ``duni/`` built into a wheel, offline, in dependency order.

Inputs are ``duni/workspace.toml`` (written by ``pull``: backends, build
requirements, overlay build facts, a topological order) and ``pylock.toml`` (the
runtime dependencies that make up a build requirement's closure).  Nothing comes
from outside ``duni/``: no index, no cached wheel, no pip.

Layout, per target (``duni-build/<target>/``)::

    envs/<dir>/   the package's build environment: a venv with what its build needs
    wheels/       the wheels (the default ``--out``)
    logs/<dir>.log   everything the backend printed, one file per package
    src/<dir>/    scratch copy of duni/<dir> a build runs in (kept when it fails)
    state.json    what was built from what (the up-to-date check)

Bootstrap
---------
Every build gets its own venv (:mod:`monorepo.building.buildenv`) holding exactly the wheels
its build needs: each build requirement matched to a locked package (the newest
version it allows), plus that package's runtime dependencies, recursively.  A
package is *ready* when all of those are built.  A backend that builds itself
(``backend-path``: flit-core, setuptools, hatchling, poetry-core ...) needs only
its own declared requirements, so those go first, then whatever they unlock.
Separate venvs let two builds use two versions of one backend, and a build never
sees a venv change under it.

Cross builds
------------
For a target that is not this machine, what the builds need is built natively
first (in the project's native target's ``duni-build`` directory, shared with
native builds), then the target's runtime packages with the sysroot's sysconfig
variables (:meth:`monorepo.sysroot.info.SysrootInfo.cross_env`) and a cross
environment per build system (:mod:`monorepo.building.crossenv`: compilers, a meson
cross file, a CMake toolchain, pkg-config and ``*-config`` answering for the sysroot),
checked for the target, and imported on the target under its ``runner``.

PEP 517 hooks run through ``pyproject-hooks`` in a subprocess of the venv's
Python, in the scratch copy.  ``get_requires_for_build_wheel`` may ask for more
(hatchling's in-tree backend asks for hatchling's own dependencies): each must be
a locked package, otherwise the build fails naming the requirement and suggesting
an overlay ``build-requires``; when they are locked but not built yet, the
package waits for them.

Offline
-------
Every hook runs in a new network namespace (``unshare``) when the system allows
it, with proxies pointing at a closed loopback port and pip told ``--no-index``
regardless, and with an audit hook in the venv that fails (and records) any
Python socket connection or name lookup: a backend that tries the network fails
its build at once, even when it catches the error.

Checks
------
After each build: the wheel's tags fit the target, every extension module is an
ELF file for the target machine (:mod:`monorepo.building.elfcheck`), and a package an
overlay marks ``c-extension = true`` has one (a C library that was missing makes
pyyaml and markupsafe fall back to pure Python silently).  Overlay
``system-libraries`` are checked before anything starts, all at once, with the
command that installs them.

Up to date
----------
A package is skipped when ``state.json`` records the same key and its wheel is in
the output directory unchanged.  The key hashes the tree hash of ``duni/<dir>``
(recomputed, so a local edit rebuilds), the target, the backend, the build
requirements, the overlay's build facts and the keys of everything the build
needed: rebuilding a backend rebuilds what it built.
"""
