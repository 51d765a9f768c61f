"""The ``monorepo`` command: a thin layer over the library."""
