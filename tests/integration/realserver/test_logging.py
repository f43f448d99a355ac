"""What topgun logs (issue 12, item 4): never a token, values only at DEBUG, lifecycle at INFO.

A workload against the real server in JWT mode, with every ``topgun.*`` logger at DEBUG:
writes, reads, a query, a live query, a forced reconnect (the token callable is asked again)
and a client whose token is refused. Then every record is searched, its arguments and its
traceback included.
"""
from __future__ import annotations

import logging
import traceback
from typing import Callable, List

import pytest
from realserver_helpers import MakeClient, wait_until

import topgun
from topgun.testing.jwt import make_hs256_token
from topgun.testing.realserver import RealServer

pytestmark = pytest.mark.realserver

VALUE = "value-sentinel-6f1d93"     # appears in every value written
REFUSED = "refused-token-sentinel"  # a token the server refuses


@pytest.fixture
def jwt_server(topgun_real_server_factory: Callable[..., RealServer]) -> RealServer:
    return topgun_real_server_factory(auth=True)


def record_text(record: logging.LogRecord) -> str:
    parts = [record.getMessage(), repr(record.args)]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append("".join(traceback.format_exception(record.exc_info[1])))
    return "\n".join(parts)


@pytest.mark.parametrize("mode", ["url", "cluster"])
def test_no_token_ever_and_no_value_above_debug(mode: str, jwt_server: RealServer, make_client: MakeClient,
                                                caplog: pytest.LogCaptureFixture) -> None:
    secret = jwt_server.jwt_secret
    assert secret
    token = make_hs256_token(secret, sub="logging-user")
    calls: List[int] = []

    def token_source() -> str:
        calls.append(1)
        return token

    caplog.set_level(logging.DEBUG, logger="topgun")
    target = dict(url=jwt_server.url) if mode == "url" else dict(cluster=topgun.ClusterConfig(seeds=[jwt_server.url]))
    client = make_client(**target, token=token_source)
    notes = client.map("notes")
    notes.set("k1", {"text": VALUE})
    assert notes.get("k1") == {"text": VALUE}
    assert notes.query() == [("k1", {"text": VALUE})]
    with notes.subscribe() as sub:
        assert sub.results == {"k1": {"text": VALUE}}
    for conn in client.runtime.home.run(lambda: client.runtime.provider.open_connections(), timeout=5.0):
        client.runtime.home.run(conn.close, timeout=5.0)
    wait_until(lambda: len(calls) >= 2 and client.connected, 15.0, "reconnected with a new token")
    notes.set("k2", VALUE + "-2")
    assert notes.get("k2") == VALUE + "-2"
    with pytest.raises(topgun.AuthError):
        topgun.TopGunClient(jwt_server.url, token=REFUSED, connect_timeout=2.0).close()

    records = caplog.records
    with_token = [r for r in records if token in record_text(r) or REFUSED in record_text(r)]
    assert with_token == [], f"a token was logged: {with_token[0].name}: {with_token[0].getMessage()}"
    loud_values = [r for r in records if r.levelno > logging.DEBUG and VALUE in record_text(r)]
    assert loud_values == [], f"a value was logged above DEBUG: {loud_values[0].getMessage()}"
    # The capture did see the workload: frames at DEBUG, the connections at INFO.
    assert any(r.levelno == logging.DEBUG and "<- OP_ACK" in r.getMessage() for r in records)
    assert any(r.levelno == logging.INFO and r.getMessage().startswith("connected") for r in records)
    assert any(r.levelno >= logging.WARNING and "refused" in r.getMessage() for r in records)


def test_the_package_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("topgun").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
