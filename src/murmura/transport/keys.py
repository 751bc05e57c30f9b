"""Project CA and node certificates (X.509 via ``cryptography``).

A node's id is its certificate's common name; its role is the organizational unit:
``worker`` (trains; also a P2P peer), ``edge`` (a worker to its parent, a coordinator to its
children) or ``coordinator``. Only a ``coordinator`` or an ``edge`` may act as a worker's
parent, and only a ``worker`` or an ``edge`` may join a coordinator
(``murmura.transport.dial_check``). Files in a key directory: ``ca.pem``/``ca.key`` and
``<name>.pem``/``<name>.key`` for every issued node. Keys are ECDSA P-256, written with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from murmura.errors import ConfigError

ROLES = ("worker", "edge", "coordinator", "admin")
PARENT_ROLES = ("coordinator", "edge")
"""Roles that may give a worker (or an edge) its instructions."""
CHILD_ROLES = ("worker", "edge")
"""Roles that may join a coordinator (or an edge) and sign updates."""
ADMIN_ROLE = "admin"
"""The role that may submit, abort and download a standing federation's jobs."""
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CA_CERT, CA_KEY = "ca.pem", "ca.key"


@dataclass(frozen=True, slots=True)
class NodeFiles:
    """Paths of one node's certificate, key and the CA certificate that signed it."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True, slots=True)
class Credentials:
    """PEM bytes a TLS endpoint needs: own chain and key, and the CA to trust."""

    cert: bytes
    key: bytes
    ca: bytes

    @classmethod
    def load(cls, cert: Path | str, key: Path | str, ca: Path | str) -> Credentials:
        """Read the three PEM files; a missing or wrong file is a ``ConfigError`` naming it."""
        cert_pem = _read_pem(cert, "node certificate", x509.load_pem_x509_certificate)
        key_pem = _read_pem(key, "node private key", _load_private_key)
        ca_pem = _read_pem(ca, "CA certificate", x509.load_pem_x509_certificate)
        own = x509.load_pem_x509_certificate(cert_pem).public_key()
        if _public_der(own) != _public_der(_load_private_key(key_pem).public_key()):
            raise ConfigError(f"private key {key} does not belong to the certificate {cert}")
        return cls(cert_pem, key_pem, ca_pem)

    @property
    def name(self) -> str:
        """The common name of our own certificate."""
        return identity_of(self.cert)[0]


def _load_private_key(pem: bytes) -> PrivateKeyTypes:
    return serialization.load_pem_private_key(pem, password=None)


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _read_pem(path: Path | str, what: str, parse: Callable[[bytes], object]) -> bytes:
    """The bytes of a PEM file that ``parse`` accepts; else a one-line error naming the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"cannot read the {what} {path}: {reason}") from None
    try:
        parse(data)
    except TypeError:  # a password-protected key
        raise ConfigError(f"{path}: encrypted {what}s are not supported") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{path} is not a PEM {what}") from None
    return data


def _check_name(name: str) -> None:
    if not NAME_RE.match(name) or name in ("ca",):
        raise ConfigError(
            f"invalid node name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (not 'ca')"
        )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(path, flags, 0o600 if private else 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or type(exc).__name__}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def init_ca(directory: Path | str, name: str = "murmura-ca", days: int = 3650) -> Path:
    """Create a project CA in ``directory``; refuses to overwrite an existing one."""
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {d}: {exc.strerror or type(exc).__name__}") from None
    if (d / CA_CERT).exists() or (d / CA_KEY).exists():
        raise ConfigError(f"{d} already holds a CA; refusing to overwrite it")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(d / CA_KEY, _key_pem(key), private=True)
    _write(d / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
    return d / CA_CERT


def _san(name: str, hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in (name, "localhost", "127.0.0.1", "::1", *hosts):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(list(dict.fromkeys(entries)))


def _load_ca(d: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        ca_key = serialization.load_pem_private_key((d / CA_KEY).read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate((d / CA_CERT).read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"no CA in {d}; run `murmura keys init {d}` first") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the CA in {d}: {exc.strerror or exc}") from None
    except (ValueError, TypeError):
        raise ConfigError(f"{d / CA_CERT} or {d / CA_KEY} is not an unencrypted PEM") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{d / CA_KEY} is not an EC key made by `murmura keys init`")
    return ca_key, ca_cert


def _issued_names(d: Path) -> dict[str, set[str]]:
    """Common name -> DNS names and IPs in the SAN of every node certificate in ``d``."""
    out: dict[str, set[str]] = {}
    for pem in sorted(d.glob("*.pem")):
        if pem.name == CA_CERT:
            continue
        try:
            cert = x509.load_pem_x509_certificate(pem.read_bytes())
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (ValueError, x509.ExtensionNotFound):
            continue
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        hosts = {str(h) for h in san.get_values_for_type(x509.DNSName)}
        hosts |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
        out[str(cn[0].value) if cn else pem.stem] = hosts
    return out


def _check_collisions(d: Path, name: str, hosts: Iterable[str]) -> None:
    """Refuse a name another certificate answers to, or a host that is another node's name.

    A peer's and a worker's channel is pinned to the name of the node it dials (TLS checks
    that name against the certificate's SAN), so only that node's certificate may carry it.
    """
    issued = _issued_names(d)
    for other, other_hosts in issued.items():
        if name in other_hosts:
            raise ConfigError(
                f"node name {name!r} is already a host of {other!r}'s certificate; pick another"
            )
    for host in hosts:
        if host in issued and host != name:
            raise ConfigError(
                f"--host {host!r} is the name of node {host!r}; a certificate may not answer "
                "to another node's name"
            )


def issue(
    directory: Path | str, name: str, role: str, hosts: Iterable[str] = (), days: int = 365
) -> NodeFiles:
    """Issue a key and certificate for node ``name`` with ``role``, signed by the CA."""
    _check_name(name)
    if role not in ROLES:
        raise ConfigError(f"invalid role {role!r}; valid: {', '.join(ROLES)}")
    d = Path(directory)
    if (d / f"{name}.pem").exists():
        raise ConfigError(f"{d / name}.pem already exists; refusing to overwrite it")
    ca_key, ca_cert = _load_ca(d)
    _check_collisions(d, name, hosts)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]
    )
    usage = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(_san(name, hosts), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(d / f"{name}.key", _key_pem(key), private=True)
    _write(d / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
    return NodeFiles(d / f"{name}.pem", d / f"{name}.key", d / CA_CERT)


def node_files(directory: Path | str, name: str) -> NodeFiles:
    """Paths of an issued node's files in a key directory."""
    d = Path(directory)
    return NodeFiles(d / f"{name}.pem", d / f"{name}.key", d / CA_CERT)


def identity_of(pem: bytes) -> tuple[str, str]:
    """Return ``(node id, role)`` from a PEM certificate: its common name and OU."""
    cert = x509.load_pem_x509_certificate(pem)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    name = str(cn[0].value) if cn else ""
    role = str(ou[0].value) if ou else ""
    return name, role
