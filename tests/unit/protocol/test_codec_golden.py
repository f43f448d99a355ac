"""Codec golden files: checked-in frame bytes (tests/golden/codec/*.msgpack) against their .json twins.

The hex-sourced files are real topgun-server 2.2.0 frames (see generate.py there), so these tests
pin the codec to what the server actually sends, with no sockets.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

from topgun.protocol import codec
from topgun.protocol import messages as m
from topgun.protocol.hlc import Timestamp

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "codec"
NAMES = sorted(p.stem for p in GOLDEN.glob("*.msgpack"))


def load(name: str) -> tuple[bytes, Dict[str, Any]]:
    data = (GOLDEN / f"{name}.msgpack").read_bytes()
    twin = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    return data, twin


def test_every_golden_file_has_a_twin_and_a_check() -> None:
    assert {"client_op", "op_ack", "server_event", "pong"} <= set(NAMES)
    for name in NAMES:
        assert (GOLDEN / f"{name}.json").is_file(), name
    assert set(NAMES) == set(CHECKS), "add a typed check for every golden file"


@pytest.mark.parametrize("name", NAMES)
def test_golden_bytes_decode_to_their_json_twin(name: str) -> None:
    data, twin = load(name)
    assert codec.decode_wire(data) == twin["decoded"]


@pytest.mark.parametrize("name", NAMES)
def test_golden_bytes_decode_to_the_right_message(name: str) -> None:
    data, twin = load(name)
    msg = codec.decode(data)
    assert type(msg) is m.REGISTRY[twin["decoded"]["type"]]
    CHECKS[name](msg)


@pytest.mark.parametrize("name", NAMES)
def test_golden_message_survives_a_round_trip(name: str) -> None:
    msg = codec.decode(load(name)[0])
    assert codec.decode(codec.encode(msg)) == msg


@pytest.mark.parametrize("name", NAMES)
def test_packing_the_twin_gives_the_same_bytes(name: str) -> None:
    # The server and msgpack-python both use minimal-width ints and keep key order, so the
    # decoded dict packs back to the very same bytes (u64 millis stay 0xcf + 8 bytes).
    data, twin = load(name)
    assert codec.encode_wire(twin["decoded"]) == data


def test_client_op_built_by_the_library_matches_the_probe_frame() -> None:
    data, _ = load("client_op")
    ts = Timestamp(0x18BCFE56800, 0, "py")
    op = m.ClientOp(map_name="hexmap", key="k", id="7", record=m.LWWRecord("v", ts))
    # Key order differs (ours: mapName, key, id), so compare decoded values, not bytes.
    assert codec.decode_wire(codec.encode(op)) == codec.decode_wire(data)
    assert codec.decode(data) == op


def _client_op(msg: Any) -> None:
    assert msg == m.ClientOp(map_name="hexmap", key="k", id="7",
                             record=m.LWWRecord("v", Timestamp(1700000000000, 0, "py")))


def _op_ack(msg: Any) -> None:
    assert msg == m.OpAck(last_id="7", achieved_level="APPLIED")


def _server_event(msg: Any) -> None:
    assert msg.map_name == "hexmap" and msg.event_type == "PUT" and msg.key == "k"
    assert msg.record == m.LWWRecord("v", Timestamp(1795660653928, 0, "n1"), None)
    assert msg.or_record is None and msg.or_tag is None


def _pong(msg: Any) -> None:
    assert msg == m.Pong(timestamp=1700000000000, server_time=0x1A215B72954)


def _query_resp(msg: Any) -> None:
    assert msg.query_id == "q1"
    assert [r["key"] for r in msg.results] == ["p2", "p0"]
    assert msg.results[0]["value"] == {"name": "Cid"}
    assert msg.merkle_root_hash == 2073254496


def _sync_resp_leaf(msg: Any) -> None:
    assert (msg.map_name, msg.path) == ("orders", "1d3")
    assert msg.records == [m.LeafRecord("o2", m.LWWRecord({"n": 2}, Timestamp(1795659424090, 2, "n1")))]


def _auth_fail(msg: Any) -> None:
    assert msg == m.AuthFail(error="Authentication failed")


def _error_429(msg: Any) -> None:
    assert msg.code == 429 and msg.message == "server overloaded, try again later"


def _query_update_leave(msg: Any) -> None:
    assert msg == m.QueryUpdate(query_id="qB", key="u2", change_type="LEAVE", value=None)


CHECKS: Dict[str, Callable[[Any], None]] = {
    "client_op": _client_op, "op_ack": _op_ack, "server_event": _server_event, "pong": _pong,
    "query_resp": _query_resp, "sync_resp_leaf": _sync_resp_leaf, "auth_fail": _auth_fail,
    "error_429": _error_429, "query_update_leave": _query_update_leave,
}
