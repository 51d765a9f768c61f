"""How long a request may take: a floor plus its size at a minimum speed, all attempts included."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from monorepo.errors import (
    ConfigError,
    TooSlowError,
)

DEADLINE_ENV = "MONOREPO_HTTP_DEADLINE"
"""Seconds every request may take whatever its size (the deadline's floor)."""
MIN_SPEED_ENV = "MONOREPO_HTTP_MIN_SPEED"
"""kB/s (1000 bytes) a request must average beyond the floor."""
DEFAULT_DEADLINE = 60.0
DEFAULT_MIN_SPEED = 10.0
DEFAULT_TIMEOUT = 30.0
"""Seconds to connect, and to wait for each read, before an attempt fails (and is retried)."""


@dataclass(frozen=True)
class Deadline:
    """How long one request may take: *floor* seconds plus its size at *min_speed*.

    The per-read timeout of :class:`HttpClient` stops a server that goes silent, but
    not one that sends a byte every few seconds: each byte starts the timeout again,
    and a 1 MB page would take weeks.  So each request (all of its attempts, retries
    and waits included) must be done within ``floor + size / min_speed`` seconds,
    where the size is the largest of what the caller expects (the lock's or the
    index's size), what the server declares (``Content-Length``) and what has
    arrived so far: a download of unknown size is allowed as long as it keeps
    averaging *min_speed*.  Nothing a real index serves at a usable speed comes near
    it; a trickling server is cut off and named (:class:`~monorepo.errors.TooSlowError`).
    """

    floor: float = DEFAULT_DEADLINE
    """Seconds."""
    min_speed: float = DEFAULT_MIN_SPEED * 1000
    """Bytes per second."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Deadline:
        """The deadline ``MONOREPO_HTTP_DEADLINE`` and ``MONOREPO_HTTP_MIN_SPEED`` ask for."""
        env = os.environ if environ is None else environ
        floor = _positive(env, DEADLINE_ENV, DEFAULT_DEADLINE, "seconds")
        speed = _positive(env, MIN_SPEED_ENV, DEFAULT_MIN_SPEED, "kB/s")
        return cls(floor=floor, min_speed=speed * 1000)

    def allowed(self, size: int) -> float:
        """Seconds a request of *size* bytes may take."""
        return self.floor + size / self.min_speed

    def describe(self) -> str:
        return f"{self.floor:g} s plus its size at {self.min_speed / 1000:g} kB/s"


def _positive(env: Mapping[str, str], name: str, default: float, unit: str) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ConfigError(
            f"the environment variable {name}={text!r} must be a positive number of {unit}"
            f" (default {default:g}); correct or unset it."
        )
    return value


@dataclass
class Budget:
    """The time one logical request has left: its :class:`Deadline`, its bytes so far."""

    url: str
    deadline: Deadline
    expected: int = 0
    earlier: int = 0
    """Bytes received by finished attempts (they took time too)."""
    current: int = 0
    """Bytes received by the attempt under way."""
    started: float = field(default_factory=time.monotonic)

    def expect(self, size: int) -> None:
        self.expected = max(self.expected, size)

    def allowed(self) -> float:
        return self.deadline.allowed(max(self.expected, self.earlier + self.current))

    def remaining(self) -> float:
        return self.started + self.allowed() - time.monotonic()

    def attempt_over(self) -> None:
        self.earlier += self.current
        self.current = 0

    def check(self, cause: str = "") -> None:
        """Raise :class:`TooSlowError` when the deadline has passed."""
        if self.remaining() <= 0:
            raise self.too_slow(cause)

    def too_slow(self, cause: str = "") -> TooSlowError:
        received = self.earlier + self.current
        size = f" of {self.expected}" if self.expected else ""
        why = f" (last failure: {cause})" if cause else ""
        return TooSlowError(
            f"GET {self.url} was too slow: {received}{size} bytes arrived in"
            f" {_seconds(time.monotonic() - self.started)} s, past the"
            f" {_seconds(self.allowed())} s it was allowed"
            f" ({self.deadline.describe()}){why}. The server or the network is"
            " too slow: retry later, or allow more time with the environment variables"
            f" {DEADLINE_ENV} (seconds) and {MIN_SPEED_ENV} (kB/s)."
        )

    def timeout(self, base: float) -> float:
        """The per-read timeout of the next attempt: never beyond the deadline."""
        return max(0.001, min(base, self.remaining()))


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value >= 1 else f"{value:.2g}"
