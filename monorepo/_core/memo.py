"""Compute each key once and share the result with concurrent callers.

The index client memoises pages and metadata this way, and the index workers their DNS
answers: a second caller asking while the first is still computing waits for the same
result instead of repeating the work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["Memo"]

T = TypeVar("T")


class Memo:
    """Each key computed once; concurrent and later callers get the same result.

    The first caller computes in its own thread (so a synchronous call never waits for a
    pool slot); the others wait on its future.  With *keep_failures* an exception is the
    key's answer from then on (the index client's retries already happened, asking again
    would only repeat the wait); without, callers already waiting get it and the next
    caller computes again.
    """

    def __init__(self, *, keep_failures: bool = True) -> None:
        self._keep_failures = keep_failures
        self._lock = threading.Lock()
        self._futures: dict[object, Future[Any]] = {}

    def get(self, key: object, compute: Callable[[], T]) -> T:
        with self._lock:
            future = self._futures.get(key)
            owner = future is None
            if future is None:
                future = Future()
                self._futures[key] = future
        if owner:
            try:
                future.set_result(compute())
            except BaseException as error:
                if not self._keep_failures:
                    with self._lock:
                        del self._futures[key]
                future.set_exception(error)
        result: T = future.result()
        return result

    def known(self, key: object) -> bool:
        with self._lock:
            return key in self._futures
