"""Flask + topgun: a JSON key-value API over one shared client, served by gunicorn.

    python -m topgun.server --nodes 3 --port 8080 &
    TOPGUN_SEEDS=ws://127.0.0.1:8080/ws gunicorn -k gevent -w 2 -b 127.0.0.1:8000 \\
        --chdir examples flask_app:app
    curl -X PUT -H 'Content-Type: application/json' -d '{"name": "Ada"}' http://127.0.0.1:8000/kv/users/42
    curl http://127.0.0.1:8000/kv/users/42            # {"name": "Ada"}; 404 once removed
    curl http://127.0.0.1:8000/metrics                # the client's Prometheus metrics (this worker's)

TOPGUN_SEEDS (comma-separated ws:// URLs) selects cluster mode; TOPGUN_URL one server.
Each worker process holds one client, made at import. Under ``gunicorn -k gevent`` the worker is
monkey-patched, so the client runs on the worker's own hub and every request greenlet calls it
like any blocking function; with ``--preload`` the client made in the master is dropped in each
forked worker, which reconnects on first use. Node failures are absorbed by the client's
failover; a request fails (503) only when its own deadline passes.
"""
import os

from flask import Flask, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

import topgun
from topgun.contrib.prometheus import PrometheusMetrics

registry = CollectorRegistry()  # this worker's metrics, served at /metrics


def make_client() -> topgun.TopGunClient:
    # TOPGUN_SEEDS (cluster mode) or TOPGUN_URL; connects in the background, never at import.
    timeout = float(os.environ.get("TOPGUN_REQUEST_TIMEOUT", "10"))
    return topgun.TopGunClient.from_env(request_timeout=timeout, wait_connected=False,
                                        metrics=PrometheusMetrics(registry))


client = make_client()          # one per process; connects in the background
app = Flask(__name__)
_ABSENT = object()


@app.put("/kv/<map_name>/<key>")
def put(map_name: str, key: str):
    value = request.get_json(force=True, silent=True)
    if value is None and request.get_data(as_text=True).strip() != "null":
        return jsonify(error="the body must be JSON"), 400
    client.map(map_name).set(key, value)
    return jsonify(ok=True)


@app.get("/kv/<map_name>/<key>")
def get(map_name: str, key: str):
    value = client.map(map_name).get(key, _ABSENT)
    if value is _ABSENT:
        return jsonify(error="not found"), 404
    return jsonify(value)


@app.delete("/kv/<map_name>/<key>")
def delete(map_name: str, key: str):
    client.map(map_name).remove(key)
    return "", 204


@app.get("/healthz")
def healthz():
    return jsonify(connected=client.connected, pid=os.getpid(), thread_mode=client.thread_mode)


@app.get("/metrics")
def metrics():
    return generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST}


@app.errorhandler(topgun.TopGunError)
def unavailable(exc: topgun.TopGunError):
    status = 400 if isinstance(exc, topgun.ConfigurationError) else 503
    return jsonify(error=type(exc).__name__, message=str(exc)), status
