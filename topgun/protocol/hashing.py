"""Key hashing shared with every TopGun core.

``fnv1a32`` is 32-bit FNV-1a over the key's UTF-16 code units (a character outside the BMP
counts as its two surrogates), exactly as ``hashString`` in the TypeScript core and
``fnv1a_hash`` in the Rust server. ``partition_id`` is that hash modulo 271.
Keys are hashed as given: no Unicode normalisation.
"""
from __future__ import annotations

from typing import Dict

__all__ = ["PARTITION_COUNT", "fnv1a32", "partition_id", "merkle_path"]

PARTITION_COUNT = 271
_OFFSET = 0x811C9DC5
_PRIME = 0x01000193
_MASK = 0xFFFFFFFF

_cache: Dict[str, int] = {}
_CACHE_LIMIT = 200_000


def fnv1a32(text: str) -> int:
    """32-bit FNV-1a of ``text`` over UTF-16 code units (lone surrogates allowed)."""
    h = _OFFSET
    if text.isascii():  # UTF-16 code units of ASCII text are its bytes: about twice as fast
        for b in text.encode():
            h = ((h ^ b) * _PRIME) & _MASK
        return h
    data = text.encode("utf-16-le", "surrogatepass")
    for i in range(0, len(data), 2):
        h = ((h ^ (data[i] | (data[i + 1] << 8))) * _PRIME) & _MASK
    return h


def partition_id(key: str) -> int:
    """The partition (0..270) that owns ``key``.

    Raises:
        TypeError: ``key`` is not a str (the server only accepts string keys).
    """
    try:
        return _cache[key]
    except KeyError:
        pass
    except TypeError:
        raise TypeError(f"keys must be str, got {type(key).__name__}") from None
    if not isinstance(key, str):
        raise TypeError(f"keys must be str, got {type(key).__name__}")
    pid = fnv1a32(key) % PARTITION_COUNT
    if len(_cache) >= _CACHE_LIMIT:
        _cache.clear()
    _cache[key] = pid
    return pid


def merkle_path(key: str) -> str:
    """The key's path in a Merkle tree: its hash as 8 lower-case hex digits."""
    return format(fnv1a32(key), "08x")
