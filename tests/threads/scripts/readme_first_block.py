"""The README's first example, as a user runs it: a script whose clients are module globals.

Usage: readme_first_block.py SEED_URL OTHER_URL (two nodes of one dev cluster).
"""
import sys
import threading

import topgun

client = topgun.TopGunClient(cluster=topgun.ClusterConfig(seeds=[sys.argv[1]]))
users = client.map("users")
print(users.set("user:42", {"name": "Ada"}))
print(users.get("user:42"))
other = topgun.TopGunClient(url=sys.argv[2])
got = threading.Event()


def cb(change):
    print("change:", change)
    got.set()


with users.subscribe(lambda change: cb(change), where={"name": "Ada"}):
    other.map("users").set("user:43", {"name": "Ada"})
    print("change seen:", got.wait(5))
print(topgun.partition_id("user:42"), client.cluster.owner_of("user:42"), client.cluster.map_version)
print(client.cluster.node_states())
print(client.cluster.stats)
other.close()
client.close()
