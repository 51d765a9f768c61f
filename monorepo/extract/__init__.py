"""The one extractor: every archive the tool opens is checked here, by one set of rules.

Sdists (``.tar.gz``, ``.tar.bz2``, ``.tar.xz``, ``.tar``, ``.zip``) unpacked into
duni/ by ``pull`` and into scratch trees by ``lock`` and ``verify``, sdists and wheels
read for their metadata, the wheels a cross build unpacks for its smoke test, and the
``data.tar`` of the Debian packages of a sysroot (:mod:`monorepo.sysroot`) are all
untrusted input.  Each goes through :class:`Planner`, under the same :class:`Limits`,
before a byte of it is written or handed to a caller:

1. **Scan first.**  Every member is checked before a single byte is written:
   absolute paths, ``..`` components, backslashes, device/fifo members, duplicate
   names (after normalisation), members below a file or symlink, symlinks whose
   target leaves the tree (resolved through the archive's other symlinks, not just
   lexically, which is what the tarfile data-filter bypasses of 2025 exploited),
   hard links to anything but an earlier regular file, and the :class:`Limits` on
   member count, uncompressed bytes and compression ratio (every member counts: a
   hard link is extracted as a copy, so it counts its target's bytes), nesting depth
   and path length.  The limits are enforced while the member list is read, so a
   bomb is refused at its first oversized header rather than after decompressing it,
   and a tree too deep for the walks that later hash, verify and remove it is never
   made.
2. **Write the checked plan into a staging directory** beside the destination
   (``.tmp-<name>-<random>``, made only once the whole plan passed), with size checks on the bytes actually read for zip
   (header sizes are not trusted).  The single top-level directory of an sdist is
   stripped.  The second layer is structural (:class:`Writer`): only planned
   relative paths, directories the writer made itself, files opened with
   ``O_NOFOLLOW``, and symlinks created last, so nothing is written through a link.
   This replaces tarfile's ``"data"`` filter, whose ``realpath`` of every member was
   most of the extraction time, and it checks the same things (PEP 721).  A gzip
   stream is decompressed once, into memory (up to a limit), for both steps.
   Every file is hashed while written: the stamps returned spare the tree hash a
   second read.  (:func:`read_archive` and :func:`read_zip` run the same plan and
   return the few members asked for instead of writing anything.)
3. **Rename** the staging directory to the destination.  On any failure the
   staging directory is removed: no half-extracted tree is ever left behind.

Permissions are normalised the way the data filter intends, but independent of
the umask: files 0o755 when any executable bit was set, else 0o644; directories
0o755.  Owners and special bits are dropped.  Hard links are extracted as copies so
that patching one path can never edit another.  Empty directories are kept.
"""
