"""Fast peer stubs for the end-to-end benchmarks: the provider's REST API and 1177's AddMessage.

Role
    bench/limit.py ``--end-to-end`` and bench/worker.py measure the gateway's worker, not
    its peers; the sandbox's servers (Flask under werkzeug's development server, a new
    connection per request, the 1177 simulator validating every call against its XSD) use
    ~2-3 ms CPU per request each, which on a 2-core machine would by themselves cap the
    end-to-end rate the issue asks for (≈400 cases/s). These stubs answer on the wire
    exactly what those peers answer, at a fraction of the CPU: HTTP/1.1 with keep-alive,
    one thread per connection, answers prepared once.

    ``providers``: the sandbox's demo_rest (``sandbox.demo_rest``): ``POST /api/cases`` and
    ``POST /api/cases/<id>/messages`` with ``Content-Type: application/json``, an
    ``Idempotency-Key`` and a JSON object as body answer ``201 {"id": "REST-…"}`` (a replay
    of a key: ``200`` with ``Idempotent-Replayed: true`` and the first id), as Flask's
    ``jsonify`` writes it; no JSON object: 400, no key: 400, other content types: 415. It
    prints ``demo_rest`` and ``demo_soap`` (the same server; a SOAP call gets 404: the
    end-to-end config delivers by REST only).

    ``national``: the 1177 simulator (``sandbox.national``), profile patientportal-2.0:
    ``POST /rivta`` with ``Content-Type: text/xml``, a well-formed SOAP 1.1 envelope (parsed
    with lxml, DTDs and entities off) with a ``LogicalAddress`` header and ``AddMessage``
    of its responder namespace as the Body's first child (and a matching ``SOAPAction``
    when one is sent) answers the simulator's own ``AddMessageResponse`` (built once with
    ``sandbox.national.response_element``, resultCode OK, a fresh logId per answer);
    anything else is the simulator's SOAP fault (HTTP 500). ``GET /rivta`` answers 200
    (the simulator's index page stands for "it listens").

    Not checked, unlike the sandbox: the XSD (the gateway's zeep builds the request from
    the same WSDL, and the conformance tests check it against the simulator), state (the
    inbox, the provider's cases), injected failures.

    python bench/peers.py providers|national [--port 0]   # prints "<name> <base URL>" lines

May import: ``sandbox.national`` (the answers and faults it sends), lxml, the standard library.
Product code never imports this.

Invariants: listens on 127.0.0.1 only; every request is answered (or the connection
closed on a malformed one); the answers are byte for byte those of the sandbox's peers
but for the ids.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import socketserver
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from lxml import etree  # noqa: E402

REASONS = {200: "OK", 201: "CREATED", 400: "BAD REQUEST", 404: "NOT FOUND", 405: "METHOD NOT ALLOWED",
           415: "UNSUPPORTED MEDIA TYPE", 500: "INTERNAL SERVER ERROR"}
SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
REGISTRY_NS = "urn:riv:itintegration:registry:1"


def response(status: int, body: bytes, content_type: str, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    head = [f"HTTP/1.1 {status} {REASONS.get(status, 'STATUS')}", f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in extra)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class Handler(socketserver.StreamRequestHandler):
    """One keep-alive connection: requests one after another until the client closes."""

    answer: Any  # (method, path, headers, body) -> bytes

    def handle(self) -> None:
        rfile, wfile = self.rfile, self.wfile
        while True:
            line = rfile.readline(65537)
            if not line:
                return
            try:
                method, path, version = line.decode("latin-1").split()
            except ValueError:
                return
            headers: dict[str, str] = {}
            while True:
                header = rfile.readline(65537)
                if header in (b"\r\n", b"\n", b""):
                    break
                name, _, value = header.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            body = rfile.read(length) if length else b""
            wfile.write(self.answer(method, path, headers, body))
            if headers.get("connection", "").lower() == "close" or version == "HTTP/1.0":
                return


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def json_answer(status: int, data: dict[str, Any], extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """As Flask's ``jsonify`` writes it (compact, a newline at the end)."""
    return response(status, (json.dumps(data, separators=(",", ":")) + "\n").encode(), "application/json", extra)


class Providers:
    """demo_rest's deliveries: cases and messages by idempotency key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.keys: dict[str, str] = {}
        self.counter = itertools.count(1)

    def __call__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        parts = path.split("?", 1)[0].strip("/").split("/")
        if parts[:2] != ["api", "cases"] or len(parts) not in (2, 4) or (len(parts) == 4 and parts[3] != "messages"):
            return json_answer(404, {"error": "not_found", "message": "no such path"})
        if method != "POST":
            return json_answer(405, {"error": "method_not_allowed", "message": "POST only"})
        key = headers.get("idempotency-key", "").strip()
        if not key:
            return json_answer(400, {"error": "missing_idempotency_key", "message": "send an Idempotency-Key header"})
        if headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return json_answer(415, {"error": "unsupported_media_type", "message": "send Content-Type: application/json"})
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return json_answer(400, {"error": "invalid_json", "message": "the body must be a JSON object"})
        with self.lock:
            known = self.keys.get(key)
            if known is None:
                known = self.keys[key] = f"{'REST' if len(parts) == 2 else 'MSG'}-{next(self.counter):06d}"
                return json_answer(201, {"id": known})
        return json_answer(200, {"id": known}, (("Idempotent-Replayed", "true"),))


class National:
    """1177's AddMessage (patientportal-2.0), answered OK with the simulator's own response."""

    def __init__(self) -> None:
        from sandbox import national

        self.op = national.ADD_MESSAGE
        self.logical_address = national.DEFAULT_LOGICAL_ADDRESS
        element = national.response_element(self.op, national.Answer("OK"))
        log_id = element.find(f".//{{{self.op.core_ns}}}logId")
        marker = "1177-" + "0" * 16
        log_id.text = marker
        head, tail = national._envelope(element).split(marker.encode())
        self.parts = (head, tail)
        self.fault = national.fault_response
        self.parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)

    def soap_fault(self, code: str, text: str, kind: str = "Client") -> bytes:
        answer = self.fault(kind, code, text)
        return response(500, answer.get_data(), "text/xml; charset=UTF-8")

    def __call__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        if path.split("?", 1)[0] != "/rivta":
            return response(404, b"not found\n", "text/plain; charset=utf-8")
        if method == "GET":
            return response(200, b"1177 simulator (bench/peers.py stub): AddMessage\n", "text/plain; charset=utf-8")
        if headers.get("content-type", "").split(";")[0].strip() != "text/xml":
            return self.soap_fault("WRONG_CONTENT_TYPE", "send Content-Type: text/xml; charset=UTF-8 (SOAP 1.1).")
        try:
            root = etree.fromstring(body, self.parser)
        except etree.XMLSyntaxError as exc:
            return self.soap_fault("NOT_XML", f"the body is not well-formed XML ({exc}).")
        soap_body = root.find(f"{{{SOAP11_NS}}}Body")
        address = root.findtext(f"{{{SOAP11_NS}}}Header/{{{REGISTRY_NS}}}LogicalAddress")
        if root.tag != f"{{{SOAP11_NS}}}Envelope" or soap_body is None or len(soap_body) == 0:
            return self.soap_fault("NOT_SOAP", "the body is not a SOAP 1.1 envelope with a Body.")
        if not address:
            return self.soap_fault("VP003", "No receiverId (logical address) found in message header.")
        element = soap_body[0]
        if element.tag != f"{{{self.op.responder_ns}}}{self.op.name}" or address != self.logical_address:
            qname = etree.QName(element)
            return self.soap_fault("VP004", f"No Logical Adress found for serviceNamespace:{qname.namespace}, "
                                            f"receiverId:{address}")
        action = headers.get("soapaction", "").strip().strip('"')
        if action and action != self.op.soap_action:
            return self.soap_fault("SOAPACTION", f"SOAPAction {action} does not match {self.op.soap_action}.")
        body = self.parts[0] + f"1177-{uuid.uuid4().hex[:16]}".encode() + self.parts[1]
        return response(200, body, "text/xml; charset=UTF-8")


def main() -> int:
    parser = argparse.ArgumentParser(description="fast peer stubs for the end-to-end benchmarks")
    parser.add_argument("kind", choices=("providers", "national"))
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    handler = type("Bound", (Handler,), {"answer": staticmethod(Providers() if args.kind == "providers" else National())})
    server = Server(("127.0.0.1", args.port), handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    names = ("demo_rest", "demo_soap") if args.kind == "providers" else ("national",)
    for name in names:
        print(name, base, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
