"""Who is calling: the caller's HSA-id from a client certificate, as the national platform does.

Role: read the verified client certificate of a request (from the TLS socket that
gunicorn or werkzeug hands the WSGI app, or from a trusted TLS-terminating proxy's
header) and return the HSA-id in the subject's ``SERIALNUMBER`` attribute (OID 2.5.4.5).
Used by the RIV-TA endpoint (allow-list of consumers), the provider REST API and the ops
view (certificates as an alternative to tokens and passwords).

May import: ``errors``. Uses ``cryptography`` for certificates from a proxy header.

Invariants: a certificate from the proxy header counts only when the request comes from
a configured proxy address and the certificate was issued by the configured CA; from
anywhere else the header is ignored (and the caller logs that); nothing here trusts a
certificate that was not verified.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509.oid import NameOID

log = logging.getLogger("gateway.identity")


@functools.lru_cache(maxsize=256)
def is_loopback_host(host: str | None) -> bool:
    """Whether a host name or address (as in a Host header or ``server.bind``, without the
    port) is this machine's loopback: ``localhost``, 127.0.0.0/8 or ::1."""
    name = (host or "").strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_of(authority: str | None) -> str | None:
    """The host of ``HOST[:PORT]`` (a Host header, ``server.bind``), IPv6 brackets removed."""
    value = (authority or "").strip()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else None
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else (value or None)


@dataclass(frozen=True)
class Caller:
    """A caller identified by a verified certificate."""

    hsa_id: str | None  # the SERIALNUMBER attribute, upper case
    subject: str  # the whole subject, for logs
    via: str  # "tls" | "proxy"


def from_peercert(peercert: dict[str, Any] | None) -> Caller | None:
    """The caller from ``ssl.SSLSocket.getpeercert()`` (already verified by the TLS handshake)."""
    if not peercert or not peercert.get("subject"):
        return None
    serial = None
    parts = []
    for rdn in peercert["subject"]:
        for key, value in rdn:
            parts.append(f"{key}={value}")
            if key == "serialNumber":
                serial = value.strip().upper()
    return Caller(serial, ", ".join(parts), "tls")


def from_certificate(cert: x509.Certificate, via: str) -> Caller:
    serials = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    serial = str(serials[0].value).strip().upper() if serials else None
    return Caller(serial, cert.subject.rfc4514_string(), via)


class CertificateAuthority:
    """The CA bundle client certificates must come from (for certificates from a proxy header)."""

    def __init__(self, bundle: Path | None, instant: Callable[[], dt.datetime]):
        self.cas: list[x509.Certificate] = x509.load_pem_x509_certificates(bundle.read_bytes()) if bundle else []
        self.instant = instant  # the gateway's clock (``clock.SYSTEM.instant``): certificates are valid in UTC

    def issued(self, cert: x509.Certificate) -> bool:
        now = self.instant()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return False
        for ca in self.cas:
            try:
                cert.verify_directly_issued_by(ca)
                return True
            except (ValueError, TypeError, Exception):  # cryptography raises InvalidSignature and others
                continue
        return False


def caller_of(environ: dict[str, Any], *, remote_addr: str | None, proxy_header: str | None,
              proxy_addresses: list[str], ca: CertificateAuthority | None) -> Caller | None:
    """The verified caller of a WSGI request, or None.

    First the TLS connection's own client certificate; else, from a trusted proxy only, the
    certificate in ``proxy_header`` (URL-encoded PEM, as nginx's ``$ssl_client_escaped_cert``).
    """
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is not None:
        try:
            caller = from_peercert(getpeercert())
        except ValueError:  # the handshake is not done
            caller = None
        if caller is not None:
            return caller
    if not proxy_header:
        return None
    key = "HTTP_" + proxy_header.upper().replace("-", "_")
    raw = environ.get(key)
    if not raw:
        return None
    if remote_addr not in proxy_addresses:
        log.warning("client certificate header ignored: not from a trusted proxy",
                    extra={"remote_addr": remote_addr, "header": proxy_header})
        return None
    try:
        cert = x509.load_pem_x509_certificate(unquote(raw).encode("ascii", "replace"))
    except ValueError:
        log.warning("client certificate header is not a PEM certificate", extra={"remote_addr": remote_addr})
        return None
    if ca is None or not ca.issued(cert):
        log.warning("client certificate from the proxy is not issued by the configured CA (or expired)",
                    extra={"subject": cert.subject.rfc4514_string()})
        return None
    return from_certificate(cert, "proxy")
