"""Sans-IO TopGun protocol: messages, the write fast path, codec, HLC, hashing, correlation. No sockets, no clocks."""
from .hashing import PARTITION_COUNT, fnv1a32, partition_id
from .hlc import HLC, Timestamp

__all__ = ["PARTITION_COUNT", "fnv1a32", "partition_id", "HLC", "Timestamp"]
