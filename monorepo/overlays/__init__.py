"""Overlay repositories: per-package fixes layered over what the index serves.

An overlay (DESIGN.md section 5) is a directory or a git repository holding, per
normalized package name, an ordered list of rules: patches to the sdist, metadata
fixes, a replacement source, build facts.  The lock records which overlay (and
which of its commits) and which rule applied to every package, so a later ``pull``
or ``verify`` reproduces the same tree.

Parsing and rule matching are pure functions of the files' bytes; the only I/O is
reading the overlay directory and, for git overlays, fetching into the cache and
exporting one commit's tree.  Exports are keyed by commit id and never modified
afterwards, so what was locked is what is read, whatever happens to the branch.

Precedence is explicit, unlike opam-monorepo's "picked arbitrarily": overlays are
consulted in configuration order and the *first overlay that has a rule file for
the package owns that package*; inside the file the first rule whose ``versions``
contain the version wins.  A later overlay is never consulted for a package an
earlier one has a file for, so a project overlay can replace, or with an empty rule
file switch off, what the default overlay says about a package.
"""
