"""``python -m monorepo.sysroot DEST ...``: make a Debian sysroot (docs/cross.md)."""

import sys

from monorepo.sysroot.make import main

if __name__ == "__main__":
    sys.exit(main())
