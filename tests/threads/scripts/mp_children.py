"""multiprocessing (fork start method) from a process holding a connected client; run by test_fork_safety.py.

    python mp_children.py URL plain|gevent

A Pool of 2 forked workers runs 6 tasks; each writes and reads back a key through the client
the parent connected before the Pool existed. The parent keeps writing while they run. Exit 0
when every task worked in a worker (not the parent), the workers held none of the parent's
sockets, and the parent still has the very sockets it had before (no reconnect).
"""
import multiprocessing
import os
import sys

url, mode = sys.argv[1], sys.argv[2]
if mode == "gevent":
    import gevent
    gevent.sleep(0)

import topgun  # noqa: E402

client = topgun.TopGunClient(url=url)
kv = client.map("fork_mp")
kv.set("parent", -1)
PARENT = os.getpid()


def socket_inodes() -> set:
    return {os.fstat(s.fileno()).st_ino for s in list(client._sockets._sockets)}


parent_inodes = socket_inodes()
assert parent_inodes, "the parent holds a socket"
print("mode", client.thread_mode, flush=True)


def open_fd_inodes() -> set:
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            found.add(os.fstat(int(name)).st_ino)
        except OSError:
            pass
    return found


def task(i: int) -> tuple:
    inherited = bool(open_fd_inodes() & parent_inodes)
    kv.set(f"task{i}", os.getpid())
    got = kv.get(f"task{i}")
    return os.getpid(), got, inherited, bool(socket_inodes() & parent_inodes)


ctx = multiprocessing.get_context("fork")
with ctx.Pool(2) as pool:
    pending = pool.map_async(task, range(6))
    for j in range(50):                                # the parent's connection, meanwhile
        kv.set("parent", j)
        assert kv.get("parent") == j
    results = pending.get(timeout=60)
print("tasks", results, flush=True)
pids = {pid for pid, _, _, _ in results}
assert PARENT not in pids and 1 <= len(pids) <= 2, pids
assert all(got == pid for pid, got, _, _ in results), results
assert not any(inherited or shared for _, _, inherited, shared in results), results
assert socket_inodes() == parent_inodes, "the parent reconnected"
assert sorted(kv.keys()) == sorted(["parent"] + [f"task{i}" for i in range(6)])
assert kv.get("parent") == 49
client.ping()
client.close()
print("parent ok", flush=True)
