"""TopGunClient.from_env: explicit arguments, then TOPGUN_SEEDS, then TOPGUN_URL, then the default;
ca_file, then TOPGUN_CA_FILE, for a private CA (an explicit ssl_context wins)."""
from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

import topgun

A, B = "ws://127.0.0.1:9001/ws", "ws://127.0.0.1:9002/ws"


@pytest.fixture
def make(monkeypatch):
    for name in ("TOPGUN_SEEDS", "TOPGUN_URL", "TOPGUN_TOKEN", "TOPGUN_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    made = []

    def build(**kw):
        client = topgun.TopGunClient.from_env(wait_connected=False, thread_mode="loop", **kw)
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


def test_seeds_from_the_environment_mean_cluster_mode(make, monkeypatch):
    monkeypatch.setenv("TOPGUN_SEEDS", f"{A}, {B}")
    monkeypatch.setenv("TOPGUN_URL", "ws://ignored:1/ws")
    monkeypatch.setenv("TOPGUN_TOKEN", "jwt")
    config = make().config
    assert config.cluster.seeds == (A, B) and config.url is None and config.token == "jwt"


def test_url_from_the_environment_or_the_default(make, monkeypatch):
    assert make().config.url == "ws://127.0.0.1:8080/ws"
    monkeypatch.setenv("TOPGUN_URL", A)
    assert make().config.url == A


def test_explicit_arguments_win(make, monkeypatch):
    monkeypatch.setenv("TOPGUN_SEEDS", A)
    assert make(url=B).config.url == B                          # an explicit url ignores TOPGUN_SEEDS
    assert make(url=B, cluster=True).config.cluster.seeds == (B,)
    assert make(seeds=[B]).config.cluster.seeds == (B,)
    with pytest.raises(topgun.ConfigurationError):
        make(url="http://not-websocket")


# -- a private CA: ca_file= or TOPGUN_CA_FILE ------------------------------------------------------

WSS = "wss://localhost:9443/ws"


def pem_of(ca: trustme.CA, path: Path) -> Path:
    ca.cert_pem.write_to_path(path)
    return path


def handshake(client_ctx: ssl.SSLContext, server_ca: trustme.CA, hostname: str = "localhost") -> None:
    """A TLS handshake in memory (no sockets) against a certificate for ``hostname`` from ``server_ca``."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ca.issue_cert(hostname).configure_cert(server_ctx)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {client: False, server: False}
    for _ in range(20):  # TLS 1.3 needs two or three round trips; 20 is plenty
        for side in (client, server):
            if not done[side]:
                try:
                    side.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("the in-memory handshake did not finish")


def assert_trusts_only(ctx: ssl.SSLContext, ca: trustme.CA, other: trustme.CA) -> None:
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    handshake(ctx, ca)                                   # a certificate from the CA in the file: accepted
    with pytest.raises(ssl.SSLCertVerificationError):    # one from any other CA: refused
        handshake(ctx, other)
    with pytest.raises(ssl.SSLCertVerificationError):    # the hostname is still checked
        handshake(ctx, ca, hostname="elsewhere.example")
    assert len(ctx.get_ca_certs()) == 1, "the bundle replaces the system trust store"


@pytest.fixture(scope="module")
def cas() -> tuple:
    return trustme.CA(), trustme.CA()


def test_ca_file_argument_gives_a_verifying_context_that_trusts_that_ca(make, cas, tmp_path):
    ca, other = cas
    ctx = make(url=WSS, ca_file=str(pem_of(ca, tmp_path / "ca.pem"))).config.ssl_context
    assert_trusts_only(ctx, ca, other)


def test_topgun_ca_file_in_the_environment_does_the_same(make, cas, tmp_path, monkeypatch):
    ca, other = cas
    monkeypatch.setenv("TOPGUN_CA_FILE", str(pem_of(ca, tmp_path / "ca.pem")))
    assert_trusts_only(make(url=WSS).config.ssl_context, ca, other)
    assert_trusts_only(make(seeds=[WSS]).config.ssl_context, ca, other)   # cluster mode too


def test_no_ca_file_anywhere_means_the_default_context(make, monkeypatch):
    assert make(url=WSS).config.ssl_context is None
    monkeypatch.setenv("TOPGUN_CA_FILE", "")           # empty counts as unset, like the other variables
    assert make(url=WSS).config.ssl_context is None


def test_the_argument_wins_over_the_variable(make, cas, tmp_path, monkeypatch):
    ca, other = cas
    monkeypatch.setenv("TOPGUN_CA_FILE", str(pem_of(other, tmp_path / "other.pem")))
    assert_trusts_only(make(url=WSS, ca_file=str(pem_of(ca, tmp_path / "ca.pem"))).config.ssl_context, ca, other)
    monkeypatch.setenv("TOPGUN_CA_FILE", str(tmp_path / "missing.pem"))  # not even read
    assert_trusts_only(make(url=WSS, ca_file=str(tmp_path / "ca.pem")).config.ssl_context, ca, other)


def test_an_explicit_ssl_context_wins_over_both(make, cas, tmp_path, monkeypatch):
    ca, _ = cas
    mine = ssl.create_default_context()
    monkeypatch.setenv("TOPGUN_CA_FILE", str(pem_of(ca, tmp_path / "ca.pem")))
    assert make(url=WSS, ssl_context=mine).config.ssl_context is mine
    assert make(url=WSS, ssl_context=mine, ca_file=str(tmp_path / "ca.pem")).config.ssl_context is mine
    in_config = topgun.ClientConfig(url=WSS, ssl_context=mine)
    assert make(config=in_config).config.ssl_context is mine
    monkeypatch.setenv("TOPGUN_CA_FILE", str(tmp_path / "missing.pem"))  # a bad file it never reads
    assert make(url=WSS, ssl_context=mine, ca_file=str(tmp_path / "also-missing.pem")).config.ssl_context is mine


def _missing(tmp_path: Path, ca: trustme.CA) -> Path:
    return tmp_path / "nope" / "ca.pem"


def _directory(tmp_path: Path, ca: trustme.CA) -> Path:
    # Unreadable as a file. (Tests run as root here, so a chmod 000 file would still be readable.)
    (tmp_path / "certs").mkdir()
    return tmp_path / "certs"


def _empty(tmp_path: Path, ca: trustme.CA) -> Path:
    (tmp_path / "empty.pem").write_bytes(b"")
    return tmp_path / "empty.pem"


def _key_only(tmp_path: Path, ca: trustme.CA) -> Path:
    ca.private_key_pem.write_to_path(tmp_path / "key.pem")   # a PEM file, but not a certificate
    return tmp_path / "key.pem"


def _der(tmp_path: Path, ca: trustme.CA) -> Path:
    der = ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode())
    (tmp_path / "ca.der").write_bytes(der)                  # a certificate, but not PEM
    return tmp_path / "ca.der"


BAD_FILES = {"missing": (_missing, "does not exist"), "a directory": (_directory, "cannot be read"),
             "empty": (_empty, "holds no PEM certificate"), "a key, no certificate": (_key_only, "holds no PEM"),
             "DER, not PEM": (_der, "holds no PEM certificate")}


@pytest.mark.parametrize("case", list(BAD_FILES))
@pytest.mark.parametrize("via", ["argument", "variable"])
def test_a_bad_ca_file_raises_configuration_error_naming_it_and_its_source(make, cas, tmp_path, monkeypatch,
                                                                          case, via):
    write, says = BAD_FILES[case]
    path = str(write(tmp_path, cas[0]))
    kw = {}
    if via == "argument":
        kw["ca_file"] = path
    else:
        monkeypatch.setenv("TOPGUN_CA_FILE", path)
    with pytest.raises(topgun.ConfigurationError) as bad:
        make(url=WSS, **kw)
    message = str(bad.value)
    assert repr(path) in message and says in message, message
    assert ("ca_file argument" if via == "argument" else "TOPGUN_CA_FILE") in message, message
