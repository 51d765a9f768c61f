"""Git repositories fetched with pygit2 into the cache, pinned to commits.

Git sources (``[tool.monorepo.sources]``, PEP 508 ``git+`` references) and git
overlays all need the same three things: a bare mirror in the cache, a revision
resolved to a commit id, and the commit's tree exported without ``.git``.
Exports are keyed by commit id, so they are immutable and shared between runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pygit2

from monorepo._core.fstree import remove_tree
from monorepo._core.paths import CacheDir
from monorepo.errors import MonorepoError
from monorepo.index.deadline import DEFAULT_TIMEOUT, Deadline


class GitError(MonorepoError):
    """A git repository could not be fetched or a revision not found."""

    code = "git"


def _mirror_dir(url: str, cache: CacheDir) -> Path:
    return cache.git / "db" / hashlib.sha256(url.encode()).hexdigest()[:32]


def _is_commit_id(rev: str | None) -> bool:
    return rev is not None and len(rev) == 40 and all(c in "0123456789abcdef" for c in rev.lower())


def limit_waits() -> None:
    """Give libgit2 the connect and read timeout of monorepo's HTTP client.

    libgit2 does its own HTTP, and its default is to wait forever: a git server that
    stopped answering held ``lock`` and ``pull`` until they were killed.  The timeout is
    the HTTP client's (30 s), or the deadline's floor (``MONOREPO_HTTP_DEADLINE``) when
    that is shorter.  A process-wide setting of libgit2, set before each fetch.
    """
    seconds = min(DEFAULT_TIMEOUT, Deadline.from_env().floor)
    milliseconds = max(1, int(seconds * 1000))
    pygit2.settings.server_connect_timeout = milliseconds
    pygit2.settings.server_timeout = milliseconds


def open_mirror(
    url: str, *, cache: CacheDir, offline: bool = False, need: str | None = None
) -> pygit2.Repository:
    """A bare mirror of *url* in the cache, fetched unless *offline*.

    With *need* (a commit id) already present, no fetch happens: locked commits
    never change, so a warm cache answers without the network.
    """
    path = _mirror_dir(url, cache)
    if path.exists():
        repo = pygit2.Repository(str(path))
        if need is not None and has_commit(repo, need):
            return repo
        if offline:
            if need is None or has_commit(repo, need):
                return repo
            raise GitError(
                f"{url}: commit {need} is not in the cache and --offline was given; run once without --offline."
            )
        limit_waits()
        try:
            repo.remotes["origin"].fetch(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"])
        except pygit2.GitError as exc:
            raise GitError(f"cannot fetch {url}: {exc}") from None
        return repo
    if offline:
        raise GitError(
            f"{url} is not in the cache and --offline was given; run once without --offline."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".clone-", dir=path.parent))
    limit_waits()
    try:
        pygit2.clone_repository(url, str(tmp), bare=True)
        repo = pygit2.Repository(str(tmp))
        repo.remotes.set_url("origin", url)
        try:
            os.rename(tmp, path)
        except OSError:  # another process won the race: use its mirror
            shutil.rmtree(tmp, ignore_errors=True)
    except pygit2.GitError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise GitError(
            f"cannot clone {url}: {exc}. Check the URL and that the repository is reachable."
        ) from None
    return pygit2.Repository(str(path))


def mirror_exists(url: str, *, cache: CacheDir) -> bool:
    """Whether *url* was ever fetched into the cache (what ``--offline`` can use)."""
    return (_mirror_dir(url, cache) / "HEAD").is_file()


def has_commit(repo: pygit2.Repository, commit: str) -> bool:
    try:
        return isinstance(repo[commit], pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError):
        return False


def tree_links(repo: pygit2.Repository, commit: str) -> str | None:
    """The first symlink or submodule in *commit*'s tree, for callers that refuse them."""
    stack: list[tuple[pygit2.Tree, str]] = [(repo[commit].peel(pygit2.Tree), "")]
    while stack:
        tree, prefix = stack.pop()
        for entry in tree:
            rel = prefix + (entry.name or "")
            if entry.filemode == pygit2.enums.FileMode.TREE:
                stack.append((repo[entry.id].peel(pygit2.Tree), rel + "/"))
            elif entry.filemode in (pygit2.enums.FileMode.LINK, pygit2.enums.FileMode.COMMIT):
                return rel
    return None


def resolve_rev(repo: pygit2.Repository, rev: str | None, *, url: str) -> str:
    """The commit id a branch, tag, commit or ``None`` (HEAD) names."""
    candidates = [rev] if rev else ["HEAD"]
    if rev and not _is_commit_id(rev):
        candidates = [f"refs/tags/{rev}", f"refs/heads/{rev}", rev]
    for name in candidates:
        try:
            obj = repo.revparse_single(name)
        except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
            continue
        commit = obj.peel(pygit2.Commit)
        return str(commit.id)
    raise GitError(f"{url}: revision {rev or 'HEAD'!r} not found (no such branch, tag or commit).")


def export_commit(
    url: str, commit: str, *, cache: CacheDir, offline: bool = False, dest: Path | None = None
) -> Path:
    """The tree of *commit* as a plain directory (no ``.git``), written once.

    *dest* defaults to a shared place in the cache keyed by the commit id; an export is
    immutable, so an existing one is returned without touching the repository.
    """
    dest = dest or cache.git / "checkouts" / commit
    if dest.exists():
        return dest
    repo = open_mirror(url, cache=cache, offline=offline, need=commit)
    if not has_commit(repo, commit):
        raise GitError(f"{url}: commit {commit} does not exist in the repository.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=dest.parent))
    try:
        write_tree(repo, repo[commit].peel(pygit2.Tree), tmp)
        os.rename(tmp, dest)
    except OSError:
        remove_tree(tmp, ignore_errors=True)
        if not dest.exists():
            raise
    return dest


def write_tree(repo: pygit2.Repository, tree: pygit2.Tree, dest: Path) -> None:
    """Write a git tree to *dest*, keeping the executable bit and symlinks.

    Iterative (a stack of subtrees, not one call per level), so a tree of any depth
    is written instead of dying with RecursionError half-way.
    """
    stack: list[tuple[pygit2.Tree, Path]] = [(tree, dest)]
    while stack:
        current, directory = stack.pop()
        for entry in current:
            if entry.name is None:  # pragma: no cover - libgit2 always names tree entries
                continue
            target = directory / entry.name
            obj = repo[entry.id]
            if entry.filemode == pygit2.enums.FileMode.TREE:
                target.mkdir()
                stack.append((obj.peel(pygit2.Tree), target))
            elif entry.filemode == pygit2.enums.FileMode.LINK:
                os.symlink(obj.peel(pygit2.Blob).data.decode(), target)
            elif entry.filemode == pygit2.enums.FileMode.COMMIT:
                target.mkdir()  # submodules are not fetched
            else:
                target.write_bytes(obj.peel(pygit2.Blob).data)
                target.chmod(
                    0o755 if entry.filemode == pygit2.enums.FileMode.BLOB_EXECUTABLE else 0o644
                )


def split_git_url(url: str) -> tuple[str, str | None, str | None]:
    """Split ``git+URL@rev#subdirectory=x`` into (clone URL, rev, subdirectory)."""
    if url.startswith("git+"):
        url = url[4:]
    subdirectory = None
    if "#" in url:
        url, fragment = url.split("#", 1)
        for part in fragment.split("&"):
            if part.startswith("subdirectory="):
                subdirectory = part.split("=", 1)[1]
    rev = None
    scheme_end = url.find("://")
    at = url.rfind("@")
    if at > url.rfind("/") or (at > scheme_end + 3 and "/" not in url[at:]):
        url, rev = url[:at], url[at + 1 :]
    return url, rev or None, subdirectory
