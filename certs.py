"""The fleet's certificate authority for BuildKit's remote builders (mutual TLS), kept on the controller.

``buildkit_remote_address`` turns a build host into a remote builder: buildkitd listens on TCP
and demands a client certificate signed by this CA. The CA lives in ``buildkit_ca_dir`` on the
controller (``ca.pem``, and ``ca-key.pem`` at 0600, which never leaves it); each host gets a
server certificate and key signed by it, and each client one from
``python -m pyinfra_nerdctl.certs client NAME --ca-dir DIR --out DIR``.

A deploy plans with ``planned_ca``, which writes nothing (a new CA stays in memory), and the
CA is written by ``save_ca`` when the run executes: a ``--dry`` run leaves the folder as it was.

Keys are ECDSA P-256 (what Go's TLS, and so buildkitd and buildx, handle everywhere). The
decision whether a host's certificate still serves (``renewal_reason``) is pure.
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
CA_DAYS = 3650
ISSUED_DAYS = 365
# A host's certificate this close to its end is renewed by the next run.
RENEW_MARGIN = timedelta(days=30)
DNS_NAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


class CertError(Exception):
    """The CA cannot be read or made; the message names the folder or file."""


def default_ca_dir() -> str:
    """``$XDG_CONFIG_HOME/pyinfra-nerdctl/ca``, else ``~/.config/pyinfra-nerdctl/ca``."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "pyinfra-nerdctl", "ca")


def name_kind(name: str) -> str | None:
    """``ip`` or ``dns`` for a name a certificate can carry, else None (``@local``, ``a b``).

    >>> [name_kind(name) for name in ("10.0.0.5", "::1", "build-1.example.internal", "@local")]
    ['ip', 'ip', 'dns', None]
    """
    try:
        ipaddress.ip_address(name)
        return "ip"
    except ValueError:
        return "dns" if DNS_NAME.match(name) else None


def canonical_names(names: Iterable[str]) -> tuple[str, ...]:
    """The names a certificate can carry, lower-case, each once, sorted; the rest left out."""
    found = {
        str(ipaddress.ip_address(name)) if name_kind(name) == "ip" else name.lower()
        for name in names
        if name_kind(name)
    }
    return tuple(sorted(found))


@dataclass(frozen=True)
class Authority:
    """The CA: its certificate (PEM) and its key (on the controller only).

    ``saved`` False: made in memory by ``planned_ca``, not yet in its folder (``save_ca`` writes it).
    """

    cert_pem: str
    key: ec.EllipticCurvePrivateKey
    saved: bool = True

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem.encode())


# The CAs this controller process made in memory and has not written yet, by real path of their folder:
# every host of a run, and every deploy of one file, plans with the same one (``planned_ca``).
_unsaved: dict[str, Authority] = {}


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    """``data`` in a new file readable by its owner only (0600 from the start, whatever the umask)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)


def _replace_atomically(path: Path, data: bytes, mode: int) -> None:
    """``data`` at ``path`` by one rename: a reader sees the old file or the whole new one, never a part."""
    descriptor, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def new_authority(now: datetime) -> Authority:
    """A new CA, in memory only (``saved`` False)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyinfra-nerdctl remote builders CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert.public_bytes(serialization.Encoding.PEM).decode(), key, saved=False)


@contextmanager
def _ca_errors(ca_dir: str) -> Iterator[None]:
    """A failure to read or write the CA in ``ca_dir`` as one ``CertError`` naming the folder."""
    try:
        yield
    except OSError as error:
        raise CertError(
            f"buildkit_ca_dir={ca_dir!r}: cannot read or create the CA there ({error.strerror or error})"
        ) from error
    except ValueError as error:
        raise CertError(
            f"buildkit_ca_dir={ca_dir!r}: {CA_CERT} or {CA_KEY} is not a PEM certificate and key"
        ) from error


def _read_ca(folder: Path, ca_dir: str) -> Authority | None:
    """The CA in ``folder``; None while it holds no key.

    No lock needed: ``save_ca`` renames the key into place last and never replaces it, so once
    the key is there, the certificate beside it is its own.
    """
    try:
        key_pem = (folder / CA_KEY).read_bytes()
    except FileNotFoundError:
        return None
    cert_pem = (folder / CA_CERT).read_text()
    x509.load_pem_x509_certificate(cert_pem.encode())
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"buildkit_ca_dir={ca_dir!r}: {CA_KEY} is not an ECDSA key made by pyinfra-nerdctl")
    return Authority(cert_pem, key)


def planned_ca(ca_dir: str, now: datetime | None = None) -> Authority:
    """The CA a run plans with, writing nothing: the one in ``ca_dir``, else one made in memory (``saved``
    False) that every later call of this process for ``ca_dir`` gets too, until ``save_ca`` has written it.

    A ``--dry`` run plans and never executes, so it leaves ``ca_dir`` as it was.
    """
    key = os.path.realpath(ca_dir)
    if key in _unsaved:
        return _unsaved[key]
    with _ca_errors(ca_dir):
        found = _read_ca(Path(ca_dir), ca_dir)
    return found or _unsaved.setdefault(key, new_authority(now or datetime.now(timezone.utc)))


def save_ca(ca_dir: str, authority: Authority) -> None:
    """Write ``authority`` into ``ca_dir`` (the folder 0700, the key 0600), unless the folder holds it already.

    Under the folder's lock, each file by one rename, the key last: of two writers at once (hosts of
    one run, or two controllers), one writes, and the other finds that CA. A ``CertError`` when the
    folder holds another CA than ``authority``, or cannot be written.
    """
    folder = Path(ca_dir)
    with _ca_errors(ca_dir):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            found = _read_ca(folder, ca_dir)
            if found is None:
                _replace_atomically(folder / CA_CERT, authority.cert_pem.encode(), 0o644)
                _replace_atomically(folder / CA_KEY, _key_pem(authority.key), 0o600)
    if found is not None and found.cert_pem != authority.cert_pem:
        raise CertError(
            f"buildkit_ca_dir={ca_dir!r} holds another CA than the one this run planned with "
            "(made meanwhile by another run): nothing was sent to the host; run again"
        )
    if _unsaved.get(os.path.realpath(ca_dir)) is authority:
        del _unsaved[os.path.realpath(ca_dir)]


def load_or_create_ca(ca_dir: str, now: datetime | None = None) -> Authority:
    """The CA in ``ca_dir``, made and written there on first use; a ``CertError`` if it cannot be."""
    authority = planned_ca(ca_dir, now)
    if not authority.saved:
        save_ca(ca_dir, authority)
    return replace(authority, saved=True)


def issue(
    authority: Authority, common_name: str, names: Sequence[str], server: bool, now: datetime | None = None
) -> tuple[str, str]:
    """A certificate and its new key (PEM) signed by ``authority``: a server's (``names`` as its SANs) or a client's."""
    now = now or datetime.now(timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=ISSUED_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    if names:
        alternatives: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address(name)) if name_kind(name) == "ip" else x509.DNSName(name)
            for name in canonical_names(names)
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
    cert = builder.sign(authority.key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key).decode()


def certificate_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The DNS names and IP addresses a certificate carries, as ``canonical_names`` orders them."""
    try:
        alternatives = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    names = [str(ip) for ip in alternatives.get_values_for_type(x509.IPAddress)]
    return canonical_names(names + alternatives.get_values_for_type(x509.DNSName))


def renewal_reason(cert_pem: str | None, ca_pem: str, names: Sequence[str], now: datetime) -> str | None:
    """Why a host's server certificate ``cert_pem`` must be replaced; None while it serves ``names`` under ``ca_pem``.

    Replaced: missing or unreadable, signed by another CA, within ``RENEW_MARGIN`` of its end (or
    not yet valid), or carrying other names than ``names``.
    """
    if not cert_pem:
        return "no server certificate yet"
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        ca = x509.load_pem_x509_certificate(ca_pem.encode())
    except ValueError:
        return "the server certificate cannot be read"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "the server certificate is signed by another CA"
    if cert.not_valid_after_utc - RENEW_MARGIN <= now or cert.not_valid_before_utc > now:
        return f"the server certificate ends on {cert.not_valid_after_utc:%Y-%m-%d}, within {RENEW_MARGIN.days} days"
    has, wanted = certificate_names(cert), canonical_names(names)
    if has != wanted:
        return f"the server certificate names {', '.join(has) or 'nothing'}, not {', '.join(wanted)}"
    return None


def write_client(ca_dir: str, name: str, out: str) -> list[Path]:
    """A client's ``ca.pem``, ``cert.pem`` and ``key.pem`` (0600) in ``out``, signed by the CA in ``ca_dir``."""
    authority = load_or_create_ca(ca_dir)
    cert_pem, key_pem = issue(authority, name, (), server=False)
    folder = Path(out)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    (folder / "ca.pem").write_text(authority.cert_pem)
    (folder / "cert.pem").write_text(cert_pem)
    _write_private(folder / "key.pem", key_pem.encode())
    return [folder / "ca.pem", folder / "cert.pem", folder / "key.pem"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyinfra_nerdctl.certs",
        description="Client certificates for the build hosts' remote BuildKit (buildkit_remote_address).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    client = commands.add_parser("client", help="write ca.pem, cert.pem and key.pem for one client")
    client.add_argument("name", help="the client's name (its certificate's common name)")
    client.add_argument("--ca-dir", default=default_ca_dir(), help="buildkit_ca_dir (default: %(default)s)")
    client.add_argument("--out", required=True, help="the folder to write the three files to")
    args = parser.parse_args(argv)
    try:
        written = write_client(os.path.expanduser(args.ca_dir), args.name, os.path.expanduser(args.out))
    except (CertError, OSError) as error:
        print(f"certs: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
