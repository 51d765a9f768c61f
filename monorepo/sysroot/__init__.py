"""Target sysroots from Debian packages, for cross builds (DESIGN.md section 8).

``python -m monorepo.sysroot DEST`` makes a directory holding what a cross build for
a Debian/Linux target needs from the target itself: the C library and its headers,
CPython's headers, ``libpython``, the ``_sysconfigdata`` module and the interpreter
binary (which runs under ``qemu-<machine> -L DEST``).  It does so by download and
unpack only -- no ``dpkg --add-architecture``, nothing changes outside *DEST* and the
cache:

1. ``dists/<suite>/InRelease`` (or ``Release``) is fetched from the mirror, its
   signature checked with ``gpgv`` when that and the Debian keyring are installed, and
   the SHA256 it records for ``main/binary-<arch>/Packages.xz`` (or ``.gz``) is what the
   downloaded index must hash to.
2. The packages :func:`root_packages` names are resolved with their ``Depends`` and
   ``Pre-Depends`` closure (:func:`resolve_closure`).
3. Each ``.deb`` is downloaded into the cache directory's ``debian`` (verified against the
   SHA256 in ``Packages``), its ``ar`` container parsed (:func:`ar_members`) and its
   ``data.tar.*`` member unpacked under the safe rules of :func:`plan_deb` into a
   staging directory beside *DEST*: no absolute paths, no ``..``, no device files, no
   writes through symlinks.  Absolute symlinks are rewritten relative so they stay in
   the sysroot, and ``/bin``, ``/sbin``, ``/lib`` are merged into ``/usr`` (with
   compatibility links) so there is one library directory.
4. ``monorepo-sysroot.toml`` records the request, the packages and versions and the
   paths a builder needs.  The staging directory then replaces *DEST* in one rename.

A second run finds the toml and does nothing (not even network access) when the sysroot
already holds what is asked; packages added by earlier runs are kept.  ``refresh=True``
re-reads the mirror and rebuilds if a version changed.

Any other directory holding a CPython is a sysroot too (:mod:`monorepo.sysroot.discover`):
:func:`~monorepo.sysroot.discover.read_sysroot` returns the toml's facts as
:class:`~monorepo.sysroot.info.SysrootInfo` when there is one, and otherwise reads them
from the tree's sysconfigdata module, headers and libpython.
:mod:`monorepo.sysroot.libs` reads the lock's ``system-libraries`` and checks which a
sysroot lacks.

The mirror comes from the *mirror* argument, else ``MONOREPO_DEBIAN_MIRROR``, else the
machine's apt configuration (``/etc/apt/sources.list``, ``sources.list.d/*.list`` and
deb822 ``*.sources``).
"""
