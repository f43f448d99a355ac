"""A Flask app whose client is connected and in use in the gunicorn master before ``--preload`` forks.

Run by tests/web/test_web_examples.py. At import (in the master, with ``--preload``) the client
connects, writes ``preload/master`` and starts a thread that writes ``preload/beat`` = 1, 2, ...
every 50 ms for as long as the master lives: the test reads it to see that the master's own
connection keeps working while the forked workers use theirs.
"""
import os
import threading
import time

from flask import Flask, jsonify, request

import topgun
from topgun import forking

MASTER = os.getpid()
client = topgun.TopGunClient.from_env(request_timeout=10.0)    # waits until connected
client.map("preload").set("master", MASTER)


def _beat() -> None:
    n = 0
    while os.getpid() == MASTER:
        n += 1
        try:
            client.map("preload").set("beat", n, timeout=5.0)
        except topgun.TopGunError:
            pass  # the test sees the beat stall
        time.sleep(0.05)


threading.Thread(target=_beat, name="master-beat", daemon=True).start()
app = Flask(__name__)


@app.put("/kv/<map_name>/<key>")
def put(map_name: str, key: str):
    client.map(map_name).set(key, request.get_json(force=True))
    return jsonify(ok=True)


@app.get("/kv/<map_name>/<key>")
def get(map_name: str, key: str):
    return jsonify(client.map(map_name).get(key))


@app.get("/healthz")
def healthz():
    return jsonify(connected=client.connected, pid=os.getpid(), master=MASTER, thread_mode=client.thread_mode,
                   forks_seen=forking.forks_seen)
