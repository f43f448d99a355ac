"""topgun: a partition-aware, gevent-based blocking client for the TopGun data grid.

``import topgun`` patches nothing. Start with :class:`TopGunClient`.
"""
from __future__ import annotations

import logging

from .config import ClientConfig, ClusterConfig, ReconnectPolicy, RetryPolicy
from .errors import (
    AuthError,
    ClientClosed,
    ClusterUnavailable,
    ConfigurationError,
    ConnectionLost,
    ConnectTimeout,
    LocalProtocolError,
    LockLost,
    LockNotHeld,
    NotOwnerError,
    OperationTimeout,
    OpRejected,
    ProtocolError,
    RemoteProtocolError,
    ServerError,
    ServerOverloaded,
    StorageLocked,
    TLSVerificationError,
    TokenProviderError,
    TopGunError,
    TransportError,
)
from .protocol.hashing import PARTITION_COUNT, partition_id
from .storage import MemoryStorage, SQLiteStorage

__version__ = "0.1.0"

__all__ = [
    "TopGunClient", "ClusterConfig", "ClientConfig", "RetryPolicy", "ReconnectPolicy", "partition_id",
    "PARTITION_COUNT", "TopGunError", "ConfigurationError", "ProtocolError", "LocalProtocolError",
    "RemoteProtocolError", "TransportError", "ConnectTimeout", "ConnectionLost", "TLSVerificationError",
    "OperationTimeout", "TokenProviderError",
    "ServerError", "AuthError", "OpRejected", "ServerOverloaded", "NotOwnerError", "ClusterUnavailable",
    "ClientClosed", "LockNotHeld", "LockLost", "P", "Change", "__version__", "StorageLocked", "MemoryStorage",
    "SQLiteStorage", "NearCache",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str):  # lazy: keeps `import topgun` light and free of gevent side effects
    if name == "TopGunClient":
        from .client import TopGunClient
        return TopGunClient
    if name == "NearCache":
        from .storage.nearcache import NearCache
        return NearCache
    if name in ("P", "Change"):
        from . import queries
        return getattr(queries, name)
    raise AttributeError(f"module 'topgun' has no attribute {name!r}")
