"""A map larger than one QUERY_RESP (the server stops at 10,000 results) is still read whole."""
from __future__ import annotations

import pytest

import topgun

pytestmark = pytest.mark.realserver


def test_entries_of_a_map_past_the_query_limit_are_complete(topgun_real_server_factory, make_client):
    server = topgun_real_server_factory(unbounded_write_behind=True)
    client = make_client(server.url, thread_mode="direct", request_timeout=30.0)
    users = client.map("twelve-thousand")
    items = {f"user:{i}": {"n": i} for i in range(12_000)}
    users.put_all(items)
    users.remove("user:5")
    del items["user:5"]
    assert users.entries() == items
    with pytest.raises(topgun.ServerError, match="narrow it"):
        users.query(predicate=topgun.P.gte("n", 0))
