"""Apply an overlay's patches to an extracted source tree with libgit2.

Patches are git-style unified diffs, and ``git apply`` semantics (renames, mode
changes, new and deleted files, binary hunks) are exactly what a hand-written
patcher gets subtly wrong, so the work is done by libgit2 through pygit2
(DESIGN.md section 5).  An extracted sdist has no ``.git``, and must not get one:
the tree hash recorded in the lock covers every file.  So each call makes a
throwaway bare repository in a temporary directory *outside* the tree and points
its work directory at the tree without writing a gitlink; nothing is left behind.

Each patch is all-or-nothing: ``Repository.applies`` checks the whole patch
before ``Repository.apply`` touches a file.  A sequence is applied in order, so
when patch 2 of 3 fails, patch 1 has been applied; callers (pull) work in a
staging directory that they discard on error, which makes the whole operation
atomic from the user's point of view.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

from monorepo.errors import OverlayError

if TYPE_CHECKING:  # imported where patches are applied: reading an overlay
    import pygit2  # (every lock does) should not pay for loading libgit2

__all__ = ["Patch", "apply_patches"]

# libgit2 runs checkout filters while applying: a ``.gitattributes`` shipped in an
# sdist (``* text eol=crlf``, ``filter=lfs``, ``ident``) would otherwise rewrite
# line endings or expand keywords in files the patch touches.  The repository's
# own info/attributes takes precedence over in-tree files, so this turns every
# conversion off and the tree gets the patch's bytes, nothing else.
_NO_FILTERS = "* -text -eol -filter -ident -crlf\n"


@dataclass(frozen=True)
class Patch:
    """One patch file of an overlay rule.

    *path* is relative to the overlay root in POSIX form, so that the lock names
    the patch the same way on every machine; *sha256* of *text* is what the lock
    records to notice that a patch changed.
    """

    path: str
    sha256: str
    text: bytes


def apply_patches(tree: Path, patches: Sequence[Patch], *, package: str) -> None:
    """Apply *patches* in order to the plain directory *tree*.

    Raises :class:`OverlayError` naming *package*, the patch and the file and
    hunk that did not apply; a patch that fails leaves the tree as the previous
    patch left it.
    """
    if not patches:
        return
    tree = Path(tree)
    if not tree.is_dir():
        raise OverlayError(
            f"Cannot patch {package}: the source tree {tree} is not a directory. "
            "Extract the sdist before applying overlay patches."
        )
    import pygit2

    with tempfile.TemporaryDirectory(prefix="monorepo-patch-") as gitdir:
        repo = pygit2.init_repository(gitdir, bare=True)
        info = Path(gitdir) / "info"
        info.mkdir(exist_ok=True)
        (info / "attributes").write_text(_NO_FILTERS, encoding="ascii")
        # Setting the attribute (unlike init_repository(workdir_path=...)) writes no
        # ``.git`` gitlink file into the tree.
        repo.workdir = str(tree.resolve())
        for patch in patches:
            _apply_one(repo, patch, package)


def _apply_one(repo: pygit2.Repository, patch: Patch, package: str) -> None:
    """Check then apply one patch, explaining a failure down to the hunk."""
    import pygit2
    from pygit2.enums import ApplyLocation

    diff = _parse(patch.text, patch, package)
    if repo.applies(diff, ApplyLocation.WORKDIR):
        try:
            repo.apply(diff, ApplyLocation.WORKDIR)
        except (pygit2.GitError, OSError) as exc:  # pragma: no cover - disk failure
            raise OverlayError(
                f"Patch {patch.path} for {package} passed the check but could not be "
                f"written to {repo.workdir}: {exc}. Check the directory's permissions "
                "and free space, then run the command again."
            ) from exc
        return
    raise OverlayError(_explain_failure(repo, diff, patch, package))


def _parse(text: bytes, patch: Patch, package: str) -> pygit2.Diff:
    """Parse *text* as a git diff, turning libgit2's complaint into a user message."""
    import pygit2

    try:
        diff = pygit2.Diff.parse_diff(text)
    except (pygit2.GitError, KeyError, ValueError) as exc:
        raise OverlayError(
            f"Patch {patch.path} for {package} is not a git-style unified diff "
            f"({_reason(exc)}). Regenerate it with `git diff` (or `git format-patch`) "
            "in a checkout of the package's sdist."
        ) from exc
    if len(diff) == 0:
        raise OverlayError(
            f"Patch {patch.path} for {package} contains no file changes. Regenerate it "
            "with `git diff` or remove it from the rule's `patches` list."
        )
    return diff


def _explain_failure(repo: pygit2.Repository, diff: pygit2.Diff, patch: Patch, package: str) -> str:
    """Find the first file, and within it the first hunk, that does not apply.

    libgit2 reports only "hunk at line N did not apply" for the whole patch, so
    each file's delta and then each of its hunks is re-checked on its own; this
    is diagnosis only, the application itself is always libgit2's.
    """
    import pygit2
    from pygit2.enums import ApplyLocation

    # split the user's own text, not libgit2's re-serialisation of it: that one
    # gains an ``index`` line which libgit2 itself refuses to parse back
    for data in _file_sections(patch.text):
        single = _parse(data, patch, package)
        if repo.applies(single, ApplyLocation.WORKDIR):
            continue
        first = single[0]
        if first is None:  # pragma: no cover - a binary delta without text
            continue
        delta = first.delta
        name = delta.new_file.path if delta.status_char() == "A" else delta.old_file.path
        detail = _libgit2_message(repo, single)
        hunk_text = ""
        for number, (header, hunk_diff) in enumerate(_hunks(data), start=1):
            try:
                one = pygit2.Diff.parse_diff(hunk_diff)
            except (pygit2.GitError, KeyError, ValueError):
                continue
            if not repo.applies(one, ApplyLocation.WORKDIR):
                hunk_text = f", hunk {number} `{header}`"
                break
        return (
            f"Patch {patch.path} for {package} does not apply: file {name}{hunk_text} "
            f"does not match the source ({detail}). The patch was written against a "
            "different version of the package: restrict the rule's `versions` or "
            "regenerate the patch with `git diff` against this version's sdist."
        )
    return (
        f"Patch {patch.path} for {package} does not apply as a whole although each file "
        f"does on its own ({_libgit2_message(repo, diff)}); two sections of the patch "
        "probably touch the same file. Regenerate it as one `git diff`."
    )


def _libgit2_message(repo: pygit2.Repository, diff: pygit2.Diff) -> str:
    """libgit2's own reason for refusing *diff*, for the error message."""
    import pygit2
    from pygit2.enums import ApplyLocation

    try:
        repo.applies(diff, ApplyLocation.WORKDIR, raise_error=True)
    except (pygit2.GitError, OSError) as exc:
        return _reason(exc)
    return "rejected by libgit2"


def _file_sections(text: bytes) -> list[bytes]:
    """The per-file sections of a patch (each starting at its ``diff --git`` line)."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith(b"diff --git ")]
    if not starts:
        return [text]
    bounds = [*starts, len(lines)]
    return [b"".join(lines[a:b]) for a, b in pairwise(bounds)]


def _hunks(file_patch: bytes) -> list[tuple[str, bytes]]:
    """Split one file's diff into (hunk header, header + that hunk alone).

    Lines before the first ``@@`` are the file header (``diff --git``, modes,
    ``---``/``+++``); prefixing each hunk with it gives a diff libgit2 can check.
    """
    lines = file_patch.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith(b"@@ ")]
    if not starts:
        return []
    header = b"".join(lines[: starts[0]])
    bounds = [*starts, len(lines)]
    return [
        (
            lines[start].decode("utf-8", "replace").split(" @@", 1)[0].rstrip() + " @@",
            header + b"".join(lines[start:end]),
        )
        for start, end in pairwise(bounds)
    ]


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().strip("'\"")
    return text or type(exc).__name__
