"""``python -m monorepo``: the console script, for when only the interpreter is on PATH."""

from monorepo.cli.commands import script

if __name__ == "__main__":
    script()
