"""Which failures another attempt may fix (5xx, resets, timeouts) and which not (TLS set-up)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx


RETRYABLE_STATUS = range(500, 600)


class Retryable(Exception):
    """An attempt failed in a way another attempt may fix; carries the cause for the report.

    *dropped* marks a connection the server closed under us: usually a pooled keep-alive
    connection that went stale, which a new connection fixes at once (urllib3 retries
    those without waiting too), so the first retry does not back off.
    """

    def __init__(self, cause: str, *, dropped: bool = False) -> None:
        super().__init__(cause)
        self.dropped = dropped


def dropped(error: httpx.TransportError) -> bool:
    """The connection was closed or reset mid-request (not refused, not timed out)."""
    import httpx

    return isinstance(error, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError)


#: OpenSSL reasons that say the TLS set-up itself is wrong (certificate, protocol, plain
#: HTTP on an https URL), which no retry fixes.  Other TLS failures (a decode or record
#: alert, an unexpected EOF) are a server or network hiccup and are retried.
PERMANENT_TLS = (
    "CERTIFICATE",
    "WRONG_VERSION_NUMBER",
    "RECORD_LAYER_FAILURE",
    "HANDSHAKE_FAILURE",
    "PROTOCOL_VERSION",
    "UNSUPPORTED_PROTOCOL",
    "NO_PROTOCOLS_AVAILABLE",
    "UNKNOWN_CA",
    "NO_SHARED_CIPHER",
    "HOSTNAME",
)


def is_tls_error(error: BaseException) -> bool:
    """Certificate and handshake set-up failures: configuration problems, retrying only delays.

    A set-up reason on a connection that was already up (a read or write of a reused
    keep-alive connection) is not one: the handshake once succeeded, so what came back is a
    broken record from a proxy or middlebox, and a new connection is the cure.  Seen here:
    ``WRONG_VERSION_NUMBER`` on a read, one request in a few thousand, failing a whole lock.
    """
    import ssl

    import httpx

    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    if any(isinstance(e, ssl.SSLCertVerificationError | ssl.CertificateError) for e in chain):
        return True
    if isinstance(error, httpx.ReadError | httpx.WriteError):
        return False
    for link in chain:
        text = str(link)
        if "[SSL" in text or isinstance(link, ssl.SSLError):
            return any(reason in text.upper() for reason in PERMANENT_TLS)
    return False
