"""Fork two children from a process holding a connected client; run by tests/threads/test_fork_safety.py.

    python fork_children.py URL plain|gevent|patched [CA_FILE]

plain: unpatched, no gevent in the main thread (the client runs on a loop thread);
gevent: unpatched, but the main thread already runs gevent (direct home, os.fork unpatched);
patched: monkey-patched (direct home, gevent's own fork wrapper).
With CA_FILE (a wss:// URL through a TLS proxy) the client trusts that CA: a child writing into
the parent's TLS session would corrupt it for both, so the same checks matter even more there.
Exit 0 when children and parent all worked and no child kept the parent's socket.
"""
import os
import sys

url, mode = sys.argv[1], sys.argv[2]
if mode == "patched":
    from gevent import monkey
    monkey.patch_all()
elif mode == "gevent":
    import gevent
    gevent.sleep(0)

import ssl  # noqa: E402

import topgun  # noqa: E402

ctx = ssl.create_default_context(cafile=sys.argv[3]) if len(sys.argv) > 3 else None
client = topgun.TopGunClient(url=url, ssl_context=ctx)
kv = client.map("fork_safety")
kv.set("parent", -1)
parent_inodes = {os.fstat(s.fileno()).st_ino for s in list(client._sockets._sockets) if s.fileno() >= 0}
assert parent_inodes, "the parent holds a socket"
print("mode", client.thread_mode, flush=True)
# One subscription of every kind: a child's copies are closed (they would never deliver), the parent's live on.
subs = [kv.subscribe(), client.topic("fork_safety").subscribe(), client.counter("fork_safety").subscribe(),
        client.ormap("fork_safety").subscribe()]


def open_socket_inodes() -> set:
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            found.add(os.fstat(int(name)).st_ino)
        except OSError:
            pass
    return found


def child(i: int) -> int:
    if open_socket_inodes() & parent_inodes:
        print(f"child {i}: the parent's socket is still open here", flush=True)
        return 3
    kv.set(f"child{i}", os.getpid())                 # first use: a fresh home and connection
    still_open = [repr(s) for s in subs if not s.closed]
    if still_open:
        print(f"child {i}: inherited subscriptions not marked closed: {still_open}", flush=True)
        return 4
    assert kv.get(f"child{i}") == os.getpid()
    mine = {os.fstat(s.fileno()).st_ino for s in list(client._sockets._sockets) if s.fileno() >= 0}
    assert mine and not mine & parent_inodes
    print(f"child {i} ok ({client.thread_mode})", flush=True)
    client.close()
    return 0


pids = []
for i in range(2):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = child(i)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(code)
    pids.append(pid)

for j in range(100):                                  # the parent's connection is untouched
    kv.set("parent", j)
    assert kv.get("parent") == j
if mode == "plain":
    statuses = [os.waitpid(pid, 0)[1] for pid in pids]
else:
    import gevent.os
    statuses = [gevent.os.waitpid(pid, 0)[1] for pid in pids]
codes = [os.waitstatus_to_exitcode(s) for s in statuses]
print("children exited", codes, flush=True)
assert codes == [0, 0], codes
assert sorted(k for k in kv.keys()) == ["child0", "child1", "parent"]
client.ping()
assert not [s for s in subs if s.closed], subs       # the children closed only their copies
client.close()
print("parent ok", flush=True)
