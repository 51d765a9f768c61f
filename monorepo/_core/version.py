"""The version of monorepo: one definition, read by the package, the CLI and the lock memo."""

VERSION = "0.1.0"
