"""Exceptions raised by topgun.

Every error the library raises derives from :class:`TopGunError`::

    TopGunError
    ├── ConfigurationError            bad arguments; never retried
    │   └── StorageLocked             the storage file is held by another client (storage=)
    ├── ProtocolError
    │   ├── LocalProtocolError        we were about to send something the server cannot take
    │   └── RemoteProtocolError       the peer sent bytes we cannot decode
    ├── TransportError                retryable
    │   ├── ConnectTimeout            the TCP/TLS/WebSocket handshake did not finish in time
    │   ├── ConnectionLost            an open connection dropped (or was closed under us)
    │   └── TLSVerificationError      the server's certificate was refused (not retryable)
    ├── OperationTimeout              the caller's deadline passed with no answer
    ├── ServerError                   an ERROR frame from the server (.code)
    │   ├── AuthError                 AUTH_FAIL, or no usable token
    │   │   └── TokenProviderError    the token= callable raised (its exception is __cause__)
    │   ├── OpRejected                OP_REJECTED for one operation
    │   ├── ServerOverloaded          ERROR 429: retry the frame after a back-off (retryable)
    │   └── NotOwnerError             the node does not own the key's partition (retryable, stale_routing)
    ├── ClusterUnavailable            no owner reachable before the deadline
    ├── ClientClosed                  the client was closed; no new work is accepted
    └── LockNotHeld                   release() of a lock this handle does not hold (also a RuntimeError)
        └── LockLost                  the lock was held but is gone (connection, node, ttl, map change)

``retryable`` says whether failover may try the same operation again; ``stale_routing``
says the partition map should be refreshed before the next try.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Type

__all__ = [
    "TopGunError", "ConfigurationError", "StorageLocked", "ProtocolError", "LocalProtocolError",
    "RemoteProtocolError", "TransportError", "ConnectTimeout", "ConnectionLost", "TLSVerificationError",
    "OperationTimeout", "ServerError", "AuthError", "TokenProviderError", "OpRejected", "ServerOverloaded",
    "NotOwnerError", "ClusterUnavailable", "ClientClosed", "LockNotHeld", "LockLost", "server_error", "cause_of",
    "refused", "timed_out",
]


class TopGunError(Exception):
    """Base class of every error raised by topgun."""

    retryable = False
    stale_routing = False


class ConfigurationError(TopGunError, ValueError):
    """Bad arguments or configuration; never retried."""


class StorageLocked(ConfigurationError):
    """The ``storage=`` file is open in another client (this process or another); one owner at a time."""


class ProtocolError(TopGunError):
    """A frame that does not follow the TopGun wire protocol."""


class LocalProtocolError(ProtocolError):
    """We were about to send something the server cannot accept."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something we cannot decode."""


class TransportError(TopGunError):
    """The network failed; the operation may be tried again."""

    retryable = True


class ConnectTimeout(TransportError):
    """Connecting (TCP plus WebSocket handshake) took longer than allowed."""


class ConnectionLost(TransportError):
    """An open connection closed before the answer arrived."""


class TLSVerificationError(TransportError):
    """The server's TLS certificate failed verification (untrusted issuer, wrong hostname, expired).

    Not ``retryable``: an operation tried again meets the same certificate. Reconnecting
    still goes on in the background at the slowest back-off pace (a proxy may get a new
    certificate), and a constructor waiting for its first connection raises this at once.
    ``.verify_message`` is OpenSSL's reason, e.g. ``"Hostname mismatch, certificate is not
    valid for 'localhost'."`` or ``"self-signed certificate in certificate chain"``.
    """

    retryable = False

    def __init__(self, message: str, *, verify_message: str = "") -> None:
        super().__init__(message)
        self.verify_message = verify_message


class OperationTimeout(TopGunError):
    """The caller's deadline passed before the server answered.

    The TopGun server answers most bad requests with silence, so this is also what a
    request the server dropped looks like.
    """


class ServerError(TopGunError):
    """An error reported by the server (an ERROR frame or a failure reply)."""

    def __init__(self, message: str, *, code: Any = None, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class AuthError(ServerError):
    """Authentication failed (AUTH_FAIL) or no token was available when one was required."""


class TokenProviderError(AuthError):
    """The ``token=`` callable raised while a connection was being made.

    Its exception is ``__cause__`` (and named in the message). Reconnecting treats it like any
    failed connect: the callable is asked again after the usual back-off, for as long as the
    client is open.
    """


class OpRejected(ServerError):
    """The server rejected one operation (OP_REJECTED)."""


class ServerOverloaded(ServerError):
    """ERROR 429: the server shed load; the whole frame was dropped and may be resent."""

    retryable = True


class NotOwnerError(ServerError):
    """The node that answered does not own the key's partition."""

    retryable = True
    stale_routing = True

    def __init__(self, message: str, *, partition_id: int, map_version: int) -> None:
        super().__init__(message, code="NOT_OWNER")
        self.partition_id = partition_id
        self.map_version = map_version


class ClusterUnavailable(TopGunError):
    """No node owning the key could be reached before the deadline."""


class ClientClosed(TopGunError):
    """The client (or connection) has been closed and accepts no new work."""


class LockNotHeld(TopGunError, RuntimeError):
    """``release()`` of a lock this handle does not hold (``threading.Lock`` raises RuntimeError)."""


class LockLost(LockNotHeld):
    """A lock this handle held is gone: its connection or node was lost, its ttl ran out, the
    partition map moved its name to another node, or the server no longer knew the token.

    Whatever the lock protected may have been entered by another holder since ``.lost_at``
    (``clock.monotonic()``); ``.reason`` says why, in words.
    """

    def __init__(self, message: str, *, reason: str = "", lost_at: Optional[float] = None) -> None:
        super().__init__(message)
        self.reason = reason or message
        self.lost_at = lost_at


_BY_CODE: Dict[Any, Type[ServerError]] = {
    429: ServerOverloaded,
    401: AuthError,
    403: OpRejected,
}


def server_error(code: Any, message: str, details: Any = None) -> ServerError:
    """Build the right ServerError subclass for an ERROR frame's code."""
    if code == "NOT_OWNER":
        hint: Dict[str, Any] = details if isinstance(details, dict) else {}
        return NotOwnerError(message, partition_id=int(hint.get("partitionId", -1)),
                             map_version=int(hint.get("mapVersion", 0)))
    cls = _BY_CODE.get(code, ServerError)
    return cls(message, code=code, details=details)


def cause_of(exc: Optional[BaseException]) -> Optional[BaseException]:
    """What a caller-facing error should chain as ``__cause__`` for a connection error ``exc``:
    the token callable's own exception for a :class:`TokenProviderError`, else ``exc``."""
    if isinstance(exc, TokenProviderError) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def describe(exc: Optional[BaseException]) -> str:
    """One short line naming an exception, for logs."""
    return "none" if exc is None else f"{type(exc).__name__}: {exc}"


def refused(exc: Optional[BaseException]) -> bool:
    """True if ``exc`` was raised from a refused TCP connect (ECONNREFUSED: nothing listens there)."""
    for _ in range(8):  # a short chain: ConnectionLost from ConnectionRefusedError, perhaps wrapped once more
        if exc is None:
            return False
        if isinstance(exc, ConnectionRefusedError):
            return True
        exc = exc.__cause__
    return False


def timed_out(message: str, cause: Optional[BaseException]) -> OperationTimeout:
    """An OperationTimeout that names and chains ``cause`` (the last connection error), if any.

    Reads and writes both build theirs here, so a caller sees why nothing answered in the same
    words either way.
    """
    if cause is None:
        return OperationTimeout(message)
    error = OperationTimeout(f"{message} (last error: {describe(cause)})")
    error.__cause__ = cause_of(cause)  # a token callable's own exception, if that was it
    return error
