"""put_all over many windows: everything acknowledged and readable; a bad entry fails its whole
window, after the windows before it were acknowledged, and writes nothing of its own window."""
from __future__ import annotations

import pytest

import topgun

pytestmark = pytest.mark.integration


@pytest.fixture
def client(topgun_cluster_factory, topgun_url_client_factory):
    node = topgun_cluster_factory(1)
    return topgun_url_client_factory(node.urls[0], thread_mode="direct")


def test_many_windows_are_all_acknowledged_and_readable(client):
    users = client.map("bulk")
    items = {f"user:{i}": {"n": i} for i in range(12_000)}       # three windows of 5000 at most
    assert users.put_all(items) == len(items)
    assert users.entries() == items


def test_a_bad_value_fails_its_window_only(client):
    users = client.map("bulk-bad")
    window = client.runtime.engine.max_in_flight                        # put_all's window (at most 5000)
    good = [(f"k{i}", i) for i in range(window + window // 2)]   # one window and a half
    with pytest.raises(topgun.ConfigurationError, match="msgpack"):
        users.put_all(good + [("bad", object()), ("after", 1)])
    stored = users.entries()
    assert all(stored.get(f"k{i}") == i for i in range(window))  # the window before: acknowledged
    assert "bad" not in stored and "after" not in stored
    assert not any(f"k{i}" in stored for i in range(window, len(good)))  # nothing of the bad window


def test_bad_keys_are_refused_before_anything_is_sent(client):
    users = client.map("bulk-keys")
    with pytest.raises(topgun.ConfigurationError, match="keys must be str"):
        users.put_all([("ok", 1), (7, 2)])
    assert users.entries() == {}


def test_a_filtered_query_beyond_the_server_limit_says_so(client):
    users = client.map("bulk-query")
    users.put_all({f"k{i}": {"team": "a"} for i in range(10_050)})
    with pytest.raises(topgun.ServerError, match="narrow it"):
        users.query(where={"team": "a"})
    assert len(users.query(where={"team": "a"}, limit=10)) == 10
