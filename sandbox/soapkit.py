"""Hardened SOAP 1.1 reading shared by the sandbox's simulators (the 1177 side and the demo
SOAP provider).

Role: parse a request body the way a careful peer would (UTF-8 only, no DOCTYPE, no
entities, no network) and refuse it with a ``SoapFault`` otherwise. Deliberately separate
from the gateway's own ``rivta`` module, so that the simulators check the gateway from
outside.

May import: lxml and the standard library; nothing of the product.

Invariants: a DOCTYPE or a declaration never reaches the parser; the parser never
resolves entities or loads anything.
"""

from __future__ import annotations

import re

from lxml import etree

_PARSER = etree.XMLParser(
    resolve_entities=False,
    load_dtd=False,
    dtd_validation=False,
    no_network=True,
    remove_comments=True,
    remove_pis=True,
    collect_ids=False,
    huge_tree=True,  # base64 of a 20 MB file passes libxml2's 10 MB text limit; DTDs are refused
)
_PROLOG_SKIP = re.compile(rb"\s*(?:<\?.*?\?>|<!--.*?-->)", re.S)
_ENCODING = re.compile(rb"^<\?xml\s[^>]*?encoding\s*=\s*['\"]([A-Za-z0-9._-]+)['\"]")


class SoapFault(Exception):
    """A request refused with a SOAP fault; ``code`` starts the faultstring."""

    def __init__(self, code: str, text: str, *, kind: str = "Client") -> None:
        super().__init__(f"{code} {text}")
        self.code, self.text, self.kind = code, text, kind


def parse_envelope(body: bytes) -> etree._Element:
    """The root of a UTF-8 XML document without a DOCTYPE, or a ``SoapFault``."""
    if not body.strip():
        raise SoapFault("INVALID_XML", "the request body is empty.")
    if body.startswith((b"\xff\xfe", b"\xfe\xff")) or body[:4].count(0):
        raise SoapFault("INVALID_XML", "the request is not UTF-8.")
    head = body.removeprefix(b"\xef\xbb\xbf")
    declared = _ENCODING.match(head)
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        raise SoapFault("INVALID_XML", "the request is not UTF-8.")
    position = 0
    while (match := _PROLOG_SKIP.match(head, position)) and match.end() > position:
        position = match.end()
    if head[position:].lstrip().startswith(b"<!"):
        raise SoapFault("INVALID_XML", "a DOCTYPE or declaration is never accepted.")
    try:
        root = etree.fromstring(body, parser=_PARSER)
    except etree.XMLSyntaxError:
        raise SoapFault("INVALID_XML", "the request is not well-formed XML.") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise SoapFault("INVALID_XML", "a DOCTYPE is never accepted.")
    return root


SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
REGISTRY_NS = "urn:riv:itintegration:registry:1"


def read_envelope(root: etree._Element) -> tuple[str | None, etree._Element]:
    """(LogicalAddress or None, the Body's first child) of a SOAP 1.1 envelope, or a ``SoapFault``."""
    if root.tag == f"{{{SOAP12_NS}}}Envelope":
        raise SoapFault("NOT_SOAP11", "SOAP 1.2 is not served; RIV-TA BP 2.1 uses SOAP 1.1.", kind="VersionMismatch")
    if root.tag != f"{{{SOAP11_NS}}}Envelope":
        raise SoapFault("NOT_SOAP11", "the request is not a SOAP 1.1 Envelope.")
    body = root.find(f"{{{SOAP11_NS}}}Body")
    children = [] if body is None else [c for c in body if isinstance(c.tag, str)]
    if not children:
        raise SoapFault("NOT_SOAP11", "the SOAP Body is missing or empty.")
    header = root.find(f"{{{SOAP11_NS}}}Header")
    address = None
    if header is not None:
        element = header.find(f"{{{REGISTRY_NS}}}LogicalAddress")
        if element is not None:
            address = (element.text or "").strip()
    return address, children[0]
