"""A private CA for ``wss://``: an ``ssl.SSLContext`` that trusts one PEM bundle.

For ``TopGunClient.from_env(ca_file=...)``, the CLI's ``--ca-file`` and ``topgun bench``:
``ssl.create_default_context(cafile=path)``, so the chain is verified, the hostname checked
and SNI sent as with the default context, but against the bundle's certificates only (the
system trust store is not loaded next to it). ``TOPGUN_CA_FILE`` names the bundle when no
argument does. A bundle that is missing, unreadable or holds no certificate is a
:class:`~topgun.errors.ConfigurationError` naming the file and where its name came from, raised
before anything connects.

Not in here: client certificates, pinning or any other context setting (build an
``ssl.SSLContext`` and pass ``ssl_context=``), reloading a bundle that changes on disk, and
the TLS handshake itself (``transport/websocket.py``).
"""
from __future__ import annotations

import os
import ssl
from typing import Mapping, Optional

from ..errors import ConfigurationError

__all__ = ["CA_FILE_ENV", "ca_file_context", "ca_file_context_from_env"]

CA_FILE_ENV = "TOPGUN_CA_FILE"


def ca_file_context(path: str, *, source: str) -> ssl.SSLContext:
    """A verifying client context that trusts the certificates in the PEM file ``path``.

    Args:
        path: a PEM bundle of one or more CA certificates.
        source: where ``path`` came from, for the error message (``"--ca-file"``, ``"TOPGUN_CA_FILE"``).

    Returns:
        ``ssl.create_default_context(cafile=path)``: hostname checking on, certificates required.

    Raises:
        ConfigurationError: the file does not exist, cannot be read or holds no PEM certificate.
    """
    what = f"the CA file {path!r} (from {source})"
    try:
        with open(path, "rb"):
            pass
        return ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        raise ConfigurationError(f"{what} does not exist") from None
    except OSError as exc:
        # ssl.SSLError is an OSError too: OpenSSL read the file and found no certificate in it.
        if isinstance(exc, ssl.SSLError):
            raise ConfigurationError(f"{what} holds no PEM certificate ({exc.reason or exc})") from None
        raise ConfigurationError(f"{what} cannot be read: {exc.strerror or exc}") from None


def ca_file_context_from_env(ca_file: Optional[str] = None, *, source: str = "the ca_file argument",
                             environ: Optional[Mapping[str, str]] = None) -> Optional[ssl.SSLContext]:
    """:func:`ca_file_context` for ``ca_file``, else for ``$TOPGUN_CA_FILE``; None when neither names a file.

    An empty ``ca_file`` or variable counts as not set, as for the other ``TOPGUN_*`` variables.

    Raises:
        ConfigurationError: the file named is missing, unreadable or holds no certificate.
    """
    if ca_file:
        return ca_file_context(ca_file, source=source)
    path = (os.environ if environ is None else environ).get(CA_FILE_ENV)
    return ca_file_context(path, source=CA_FILE_ENV) if path else None
