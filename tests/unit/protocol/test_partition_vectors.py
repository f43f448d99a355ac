"""FNV-1a partition hashing against the 350 vectors computed by the TypeScript core (tests/golden).

One test per vector checks the client's hash (``topgun.protocol.hashing``) and the dev server's
cached copy (``topgun.server.store``) together: the two share the hash, so a routing test that is
"checked server-side" cannot see a wrong hash; only these vectors can.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from topgun.protocol.hashing import PARTITION_COUNT, fnv1a32, merkle_path, partition_id
from topgun.server.store import key_hash, pid_of

VECTORS_FILE = Path(__file__).resolve().parents[2] / "golden" / "partition_vectors.json"
DOC: Dict[str, Any] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
VECTORS: List[Dict[str, Any]] = DOC["vectors"]


def _id(v: Dict[str, Any]) -> str:
    return f"{v['category']}:{v['key'][:12].encode('unicode_escape', 'backslashreplace').decode()}"


def test_the_golden_file_is_complete() -> None:
    assert DOC["partition_count"] == PARTITION_COUNT == 271
    assert len(VECTORS) == 350
    assert sum(1 for v in VECTORS if not v["wire_sendable"]) == 2  # lone surrogates


@pytest.mark.parametrize("vector", VECTORS, ids=[_id(v) for v in VECTORS])
def test_vector(vector: Dict[str, Any]) -> None:
    key = vector["key"]
    assert fnv1a32(key) == vector["hash_u32"]
    assert partition_id(key) == vector["partition"]
    assert merkle_path(key) == vector["hash_hex8"]
    assert (key_hash(key), pid_of(key)) == (vector["hash_u32"], vector["partition"])   # the dev server
    if "utf16_units" in vector:
        assert len(vector["utf16_units"]) == vector["utf16_len"]
    if vector.get("rust_verified_live"):
        assert partition_id(key) == vector["rust_server_2_2_0_partition"]


def test_cached_answers_stay_right() -> None:
    # partition_id caches; a second pass over every key must give the same answers.
    for vector in VECTORS:
        assert partition_id(vector["key"]) == vector["partition"]


def test_no_unicode_normalisation() -> None:
    assert partition_id("caf\u00e9") == 118
    assert partition_id("cafe\u0301") == 15


def test_non_str_keys_are_refused() -> None:
    for bad in (42, b"key", None, ("a",)):
        with pytest.raises(TypeError):
            partition_id(bad)  # type: ignore[arg-type]


def test_the_python_fallback_gives_the_c_hash_values(monkeypatch: pytest.MonkeyPatch) -> None:
    # ASCII keys go through fnv_hash_fast's C function; without it (hashing._fast None) the Python
    # loop must give every vector the same hash and partition.
    from topgun.protocol import hashing
    if sys.version_info >= (3, 11):  # the dependency has wheels for 3.11+ only (setup.py marker)
        assert hashing._fast is not None, "fnv_hash_fast (a dependency) is not installed"
    monkeypatch.setattr(hashing, "_fast", None)
    hashing._cache.clear()
    for vector in VECTORS:
        assert fnv1a32(vector["key"]) == vector["hash_u32"]
        assert partition_id(vector["key"]) == vector["partition"]
    assert sum(1 for v in VECTORS if v["key"].isascii()) > 100  # the C path's share was covered above
