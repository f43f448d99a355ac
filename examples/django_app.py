"""Django + topgun: the same JSON key-value API as flask_app.py, as one-file Django project.

    TOPGUN_SEEDS=ws://127.0.0.1:8080/ws gunicorn -k gevent -w 2 -b 127.0.0.1:8000 \\
        --chdir examples django_app:application
    curl -X PUT -d '{"name": "Ada"}' http://127.0.0.1:8000/kv/users/42
    curl http://127.0.0.1:8000/kv/users/42

TOPGUN_SEEDS (comma-separated ws:// URLs) selects cluster mode; TOPGUN_URL one server. The
client is made once per process (a module global, like a connection pool) and shared by every
request; in a real project put ``make_client()`` in an app module and import it from views.
``python examples/django_app.py runserver`` (threaded, unpatched) works too: there the client
runs on its own loop thread and request threads call it.
"""
import json
import os
import sys

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

import topgun

settings.configure(
    DEBUG=False,
    SECRET_KEY="example-only-not-secret",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    DATABASES={},
)
django.setup()


def make_client() -> topgun.TopGunClient:
    # TOPGUN_SEEDS (cluster mode) or TOPGUN_URL; connects in the background, never at import.
    timeout = float(os.environ.get("TOPGUN_REQUEST_TIMEOUT", "10"))
    return topgun.TopGunClient.from_env(request_timeout=timeout, wait_connected=False)


client = make_client()
_ABSENT = object()


def kv(request: HttpRequest, map_name: str, key: str) -> HttpResponse:
    try:
        if request.method == "PUT":
            try:
                value = json.loads(request.body)
            except ValueError:
                return JsonResponse({"error": "the body must be JSON"}, status=400)
            client.map(map_name).set(key, value)
            return JsonResponse({"ok": True})
        if request.method == "GET":
            value = client.map(map_name).get(key, _ABSENT)
            if value is _ABSENT:
                return JsonResponse({"error": "not found"}, status=404)
            return JsonResponse(value, safe=False)
        if request.method == "DELETE":
            client.map(map_name).remove(key)
            return HttpResponse(status=204)
        return HttpResponse(status=405)
    except topgun.TopGunError as exc:
        status = 400 if isinstance(exc, topgun.ConfigurationError) else 503
        return JsonResponse({"error": type(exc).__name__, "message": str(exc)}, status=status)


def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"connected": client.connected, "pid": os.getpid(), "thread_mode": client.thread_mode})


# Django's CSRF middleware is not installed (MIDDLEWARE=[]): this is a JSON API for machines.
urlpatterns = [
    path("kv/<str:map_name>/<str:key>", kv),
    path("healthz", healthz),
]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()

if __name__ == "__main__":
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)
