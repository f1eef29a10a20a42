"""A build host as a remote builder (``buildkit_remote_address``): its server certificate's names and TLS files.

Whether a host's certificate still serves is decided from the certificate itself, which the one
``BuildHostState`` fact reads (``tls_cert``), so a converged remote builder costs that one remote
command and the controller keeps no record per host. Only a new or renewed certificate is made
on the controller (its key with it) and uploaded; the CA's key never leaves the controller.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime

from .. import layout
from ..certs import Authority, canonical_names, issue, renewal_reason
from ..facts.types import BuildHostStateDict
from .changes import ManagedFile, _wrong
from .rendering import HEADER
from .settings import Settings

SECRET_MODE = "600"


def listen_ip(settings: Settings) -> str | None:
    """The IP of ``buildkit_remote_address``; None for every address (``:PORT``, ``0.0.0.0``, ``[::]``)."""
    if settings.buildkit_remote_address is None:
        return None
    host = settings.buildkit_remote_address.rpartition(":")[0].strip("[]")
    return host if host and not ipaddress.ip_address(host).is_unspecified else None


def server_names(settings: Settings, inventory_name: str, ssh_hostname: str | None) -> tuple[str, ...]:
    """The names a host's server certificate carries: its inventory name, its SSH address, the IP it listens on,
    and ``buildkit_remote_names``; those no certificate can carry (``@local``) are left out.

    >>> from .settings import resolve_settings
    >>> settings = resolve_settings({}.get, {"buildkit_remote_address": "10.0.0.5:1234",
    ...     "buildkit_ca_dir": "/tmp/ca", "buildkit_remote_names": "builder.example.internal"})
    >>> server_names(settings, "build-1", "build-1.example.internal")
    ('10.0.0.5', 'build-1', 'build-1.example.internal', 'builder.example.internal')
    """
    names = [inventory_name, ssh_hostname or "", listen_ip(settings) or "", *settings.buildkit_remote_names]
    return canonical_names(name for name in names if name)


def replacement_reason(state: BuildHostStateDict, ca_pem: str, names: Sequence[str], now: datetime) -> str | None:
    """Why the host's server certificate and key are (re)issued; None while both serve as they are.

    The certificate (the fact reads its block alone): see ``certs.renewal_reason``. The file that
    holds it with the key: ours, and ``root:root 0600``.
    """
    reason = renewal_reason(state["tls_cert"], ca_pem, names, now)
    if reason:
        return reason
    server = state["paths"].get(layout.TLS_SERVER)
    if server is None or not server["ours"]:
        return "no server key of ours"
    if _wrong(server, "file", SECRET_MODE):
        return f"{layout.TLS_SERVER} is not a root:root {SECRET_MODE} file"
    return None


def tls_files(
    settings: Settings,
    state: BuildHostStateDict,
    authority: Authority,
    names: Sequence[str],
    now: datetime,
) -> tuple[tuple[ManagedFile, ...], str | None]:
    """A remote builder's TLS files to hold, and why its server pair is reissued (None: the host's serves).

    The CA's certificate always (clients' certificates must chain to it); the server's certificate
    with a new key, in one file, only when ``replacement_reason`` says so. None at all for a host
    that is no remote builder.
    """
    if settings.buildkit_remote_address is None:
        return (), None
    ca = ManagedFile(layout.TLS_CA, HEADER + authority.cert_pem)
    reason = replacement_reason(state, authority.cert_pem, names, now)
    if reason is None:
        return (ca,), None
    cert_pem, key_pem = issue(authority, names[0] if names else "buildkitd", names, server=True, now=now)
    # The certificate first: Go's tls.LoadX509KeyPair takes each of the two blocks from the one file.
    return (ca, ManagedFile(layout.TLS_SERVER, HEADER + cert_pem + key_pem, SECRET_MODE)), reason
