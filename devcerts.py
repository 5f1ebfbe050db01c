"""Development certificates: a local CA, a server certificate for localhost, and client
certificates whose subject ``SERIALNUMBER`` is an HSA-id, like SITHS function certificates.

Role: ``gateway certs dev DIR`` and the tests and the sandbox's ``--tls`` use these to run
the whole loop over mutual TLS on loopback. Never for production: real certificates come
from SITHS / the platform's CA.

May import: nothing of ours (``cryptography`` only).

Invariants: keys are written with mode 0600; the CA can only sign (basicConstraints CA,
keyCertSign); leaf certificates are not CAs and carry the right extended key usage.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import clock

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PLATFORM_HSA_ID = "SE165565594230-1000"  # the national platform, calling the gateway
GATEWAY_HSA_ID = "SE5566778899-GW01"  # the gateway, calling the platform


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(folder: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return Issued(cert_path, key_path)


def _name(common: str, serial: str | None = None, org: str = "1177 gateway development") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
             x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if serial:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    return x509.Name(attrs)


class DevCA:
    """A throw-away certificate authority."""

    def __init__(self, folder: Path, name: str = "ca", common: str = "Gateway development CA"):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.key = _key()
        now = clock.instant()
        self.name = _name(common)
        self.cert = (
            x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=825))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.issued = _write(folder, name, self.cert, self.key)

    def _leaf(self, name: str, subject: x509.Name, *, server: bool, hosts: Sequence[str] = ()) -> Issued:
        key = _key()
        now = clock.instant()
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(self.name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=397))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH,
                                                  *( [ExtendedKeyUsageOID.CLIENT_AUTH] if server else [])]), critical=False)
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return _write(self.folder, name, builder.sign(self.key, hashes.SHA256()), key)

    def server(self, name: str = "server", hosts: list[str] | None = None) -> Issued:
        return self._leaf(name, _name("localhost"), server=True, hosts=hosts or ["localhost", "127.0.0.1", "::1"])

    def client(self, hsa_id: str, name: str | None = None) -> Issued:
        """A function certificate whose SERIALNUMBER is ``hsa_id``."""
        return self._leaf(name or f"client-{hsa_id}", _name(f"Funktionscertifikat {hsa_id}", hsa_id), server=False)


def create(folder: Path, consumers: list[str]) -> dict[str, Issued]:
    """A CA, a server certificate for localhost and a client certificate per HSA-id."""
    ca = DevCA(folder)
    made = {"ca": ca.issued, "server": ca.server()}
    for hsa in consumers:
        made[hsa] = ca.client(hsa)
    return made
