"""The README's nginx snippet, as printed there, proxies a wss:// client to a node."""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable

import gevent
import pytest
from gevent import socket as gsocket
from gevent import subprocess

from topgun.testing.children import die_with_parent
from topgun.testing.nginx import _free_port
from topgun.testing.plugin import TLSFiles, require_nginx

pytestmark = [pytest.mark.nginx, pytest.mark.integration]

README = Path(__file__).resolve().parents[3] / "README.md"


def readme_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```nginx\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "the README has exactly one nginx block"
    return blocks[0]


def test_the_readme_nginx_snippet_works(topgun_cluster: Any, topgun_tls_files: TLSFiles, tmp_path: Path,
                                        topgun_url_client_factory: Callable[..., Any]) -> None:
    binary = require_nginx()
    port, upstream = _free_port(), topgun_cluster.urls[0].split("//", 1)[1].split("/", 1)[0]
    # Only the deployment-specific values change: address, certificate files, the node's address.
    http = (readme_snippet()
            .replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
            .replace("/etc/nginx/tls/topgun.pem", str(topgun_tls_files.certfile))
            .replace("/etc/nginx/tls/topgun.key", str(topgun_tls_files.keyfile))
            .replace("http://127.0.0.1:8080", f"http://{upstream}"))
    assert f"127.0.0.1:{port} ssl" in http and str(topgun_tls_files.certfile) in http and upstream in http
    (tmp_path / "tmp").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"daemon off;\nmaster_process off;\npid {tmp_path / 'nginx.pid'};\n"
                    f"error_log {tmp_path / 'error.log'} info;\nevents {{}}\n"
                    + http.replace("http {", f"http {{\n    client_body_temp_path {tmp_path / 'tmp'};"
                                              f"\n    proxy_temp_path {tmp_path / 'tmp'};", 1))
    proc = subprocess.Popen([str(binary), "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=die_with_parent())
    try:
        deadline = time.monotonic() + 10.0
        while True:
            assert proc.poll() is None, (tmp_path / "error.log").read_text()
            try:
                gsocket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen within 10 s"
                gevent.sleep(0.02)
        client = topgun_url_client_factory(f"wss://localhost:{port}/ws", ssl_context=topgun_tls_files.client_context)
        client.map("readme").set("k", "through the README's nginx")
        assert client.map("readme").get("k") == "through the README's nginx"
        client.close()
    finally:
        proc.kill()
        proc.wait(timeout=5.0)
