"""Target sysroots from Debian packages, for cross builds (``python -m monorepo.sysroot``)."""
