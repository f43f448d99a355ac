"""Key hashing shared with every TopGun core.

``fnv1a32`` is 32-bit FNV-1a over the key's UTF-16 code units (a character outside the BMP
counts as its two surrogates), exactly as ``hashString`` in the TypeScript core and
``fnv1a_hash`` in the Rust server. ``partition_id`` is that hash modulo 271.
Keys are hashed as given: no Unicode normalisation.

ASCII text (whose UTF-16 code units are its bytes) is hashed by ``fnv_hash_fast``'s C
``fnv1a_32`` when it is installed (a dependency; about 15 times faster than the Python loop),
else by the Python loop; other text always by the loop over its code units. Both give the
same value for every input (tests/unit covers the vectors and compares the two).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

_fast: Optional[Callable[[bytes], int]]
try:  # a C extension; the pure-Python loop below gives identical values without it
    from fnv_hash_fast import fnv1a_32 as _fast
except ImportError:  # pragma: no cover - the dependency is installed with topgun
    _fast = None

__all__ = ["PARTITION_COUNT", "fnv1a32", "partition_id", "merkle_path"]

PARTITION_COUNT = 271
_OFFSET = 0x811C9DC5
_PRIME = 0x01000193
_MASK = 0xFFFFFFFF

_cache: Dict[str, int] = {}
_CACHE_LIMIT = 200_000


def fnv1a32(text: str) -> int:
    """32-bit FNV-1a of ``text`` over UTF-16 code units (lone surrogates allowed)."""
    if text.isascii():  # UTF-16 code units of ASCII text are its bytes
        if _fast is not None:
            return _fast(text.encode())
        return _fnv1a32_bytes(text.encode())
    h = _OFFSET
    data = text.encode("utf-16-le", "surrogatepass")
    for i in range(0, len(data), 2):
        h = ((h ^ (data[i] | (data[i + 1] << 8))) * _PRIME) & _MASK
    return h


def _fnv1a32_bytes(data: bytes) -> int:
    """32-bit FNV-1a over bytes, in Python (the fallback of the C function)."""
    h = _OFFSET
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF  # literals, not globals: one less lookup per byte
    return h


def partition_id(key: str) -> int:
    """The partition (0..270) that owns ``key``.

    ASCII keys with the C hash are hashed every time (cheaper than a cache); others are cached.

    Raises:
        TypeError: ``key`` is not a str (the server only accepts string keys).
    """
    fast = _fast
    if fast is not None and key.__class__ is str and key.isascii():
        return fast(key.encode()) % PARTITION_COUNT
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
