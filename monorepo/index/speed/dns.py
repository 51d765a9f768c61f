"""Speed only: one resolver query per host, for processes that only make index requests.

Saves the resolver's lost queries (a 5 s wait each) in the index workers.  Turn it
off with ``MONOREPO_NO_SPEEDUPS=dns``: each connection then asks the resolver itself.
"""

from __future__ import annotations

from typing import Any


def share_dns_lookups() -> None:
    """Make this process ask the resolver once per host, not once per connection.

    For processes that only make index requests (the index workers call it): httpcore
    opens each new pooled connection with its own ``getaddrinfo``, so a cold lock asked
    the system resolver up to sixteen times per host and process.  Where the resolver
    drops a query now and then (glibc then waits its 5 s timeout; measured here on one
    lookup in forty), that made about one cold lock in three 5 s slower.  Answers are
    kept for the life of the process, seconds for a lock; failures are not kept, and
    concurrent lookups of the same host share one query.
    """
    import socket

    from monorepo._core.memo import Memo

    original = socket.getaddrinfo
    if getattr(original, "_monorepo_shared", False):
        return
    answers = Memo(keep_failures=False)  # a failed lookup is asked again next time

    def getaddrinfo(*args: Any, **kwargs: Any) -> list[Any]:
        key = (*args, *sorted(kwargs.items()))
        return list(answers.get(key, lambda: original(*args, **kwargs)))

    getaddrinfo._monorepo_shared = True  # type: ignore[attr-defined]
    socket.getaddrinfo = getaddrinfo
