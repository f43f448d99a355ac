"""topgun.testing.nginx without running nginx: the config it writes and when a missing nginx skips or fails."""
from __future__ import annotations

from pathlib import Path

import pytest

from topgun.errors import ConfigurationError
from topgun.testing.nginx import NGINX_MISSING, NginxProxy, nginx_conf
from topgun.testing.plugin import require_nginx


def test_the_config_listens_on_loopback_only_and_proxies_websocket_upgrades(tmp_path: Path) -> None:
    conf = nginx_conf(tmp_path, [(4431, "127.0.0.1:8080", True), (8081, "127.0.0.1:8080", False)],
                      certfile=tmp_path / "c.pem", keyfile=tmp_path / "k.pem")
    listens = [line.strip() for line in conf.splitlines() if line.strip().startswith("listen")]
    assert listens == ["listen 127.0.0.1:4431 ssl;", "listen 127.0.0.1:8081;"]
    for needed in ("daemon off;", "proxy_pass http://127.0.0.1:8080;", "proxy_set_header Upgrade $http_upgrade;",
                   "proxy_set_header Connection $connection_upgrade;", "proxy_read_timeout 3600s;",
                   f"pid {tmp_path / 'nginx.pid'};", f"error_log {tmp_path / 'error.log'} info;"):
        assert needed in conf
    # Every temp path is inside the proxy's own directory.
    temp_lines = [line for line in conf.splitlines() if "_temp_path" in line]
    assert len(temp_lines) == 5 and all(str(tmp_path) in line for line in temp_lines)


@pytest.mark.parametrize("upstream", ["wss://127.0.0.1:8080/ws", "127.0.0.1:8080", "ws://127.0.0.1/ws"])
def test_upstreams_must_be_plain_ws_urls_with_a_port(tmp_path: Path, upstream: str) -> None:
    with pytest.raises(ConfigurationError, match="upstream"):
        NginxProxy(tmp_path, [upstream], certfile="c", keyfile="k", binary="/bin/true")


def test_a_missing_nginx_skips_with_the_install_hint() -> None:
    with pytest.raises(pytest.skip.Exception, match="nginx not installed; .ci/run installs it"):
        require_nginx(environ={}, find=lambda: None)


def test_a_missing_nginx_fails_when_ci_is_set() -> None:
    with pytest.raises(pytest.fail.Exception, match=NGINX_MISSING):
        require_nginx(environ={"CI": "true"}, find=lambda: None)


def test_a_present_nginx_is_returned() -> None:
    assert require_nginx(environ={"CI": "true"}, find=lambda: Path("/usr/sbin/nginx")) == Path("/usr/sbin/nginx")
