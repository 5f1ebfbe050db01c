"""The two demo provider systems, and how to run them (threads for tests, a process for the demo).

Role: the entry point to the demo provider systems the demo config targets:
``demo_rest`` (``sandbox.demo_rest``, JSON over HTTP) and ``demo_soap``
(``sandbox.demo_soap``, the SOAP service of ``wsdl/DemoCaseService_1.0.wsdl``).

    from sandbox.providers import create_rest_provider, create_soap_provider, serve_in_thread
    base_url, stop = serve_in_thread(create_rest_provider())   # "http://127.0.0.1:<port>"
    ...
    stop()

    python -m sandbox.providers --rest-port 8081 --soap-port 8082 [--delay 0.05] [--token T] [--quiet]
        [--answer-delay 1.0] [--question-every 3] [--gateway-url http://127.0.0.1:8080]
        [--api-token T (default: $DEMO_REST_API_TOKEN)]

Both systems have a clinic (``sandbox.clinic``) that answers each case: on the command
line after ``--answer-delay`` seconds (default 1; 0 turns it off), from the factories only
when ``answer_delay_s`` is given (default 0: off, for the tests). demo_soap's answers wait
for ``GetUpdates``; demo_rest's for ``GET /api/updates``, and with ``--gateway-url`` they
are also pushed to the gateway's provider API with the bearer ``--api-token``.

Both also list the demo patients' medications (``sandbox.patients``, for 1177's
GetMedicationList): demo_rest on ``GET /api/patients/<person_id>/medications``, demo_soap
with the ``GetMedications`` operation.

May import: werkzeug, ``sandbox.demo_rest``, ``sandbox.demo_soap``. Never imported by the
product.

Invariants: servers listen on 127.0.0.1 only; ``stop()`` and SIGINT/SIGTERM shut them
down, free their ports and stop their clinics.
"""

from __future__ import annotations

import argparse
import os
import signal
import ssl
import sys
import threading
from collections.abc import Callable, Sequence

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .demo_rest import create_rest_provider
from .demo_soap import BINDING, NS, WSDL_PATH, XSD_PATH, create_soap_provider
from .state import ProviderState

__all__ = [
    "BINDING",
    "NS",
    "WSDL_PATH",
    "XSD_PATH",
    "ProviderState",
    "create_rest_provider",
    "create_soap_provider",
    "serve_in_thread",
    "main",
]

HOST = "127.0.0.1"


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per request (tests make thousands)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def tls_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """A server TLS context; with ``client_ca`` a client certificate from that CA is required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


def _start(app: Flask, port: int, *, quiet: bool = False,
           ssl_context: ssl.SSLContext | None = None) -> tuple[BaseWSGIServer, threading.Thread]:
    handler = _QuietHandler if quiet else None
    server = make_server(HOST, port, app, threaded=True, request_handler=handler, ssl_context=ssl_context)
    thread = threading.Thread(target=server.serve_forever, name=f"sandbox-{app.name}", daemon=True)
    thread.start()
    return server, thread


def _stopper(server: BaseWSGIServer, thread: threading.Thread) -> Callable[[], None]:
    done = threading.Lock()

    def stop() -> None:
        if not done.acquire(blocking=False):
            return  # already stopped
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        state = getattr(server.app, "config", {}).get("PROVIDER_STATE")
        if isinstance(state, ProviderState) and state.clinic is not None:
            state.clinic.stop()

    return stop


def serve_in_thread(app: Flask, *, quiet: bool = True,
                    ssl_context: ssl.SSLContext | None = None) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` on a free port of 127.0.0.1 in a daemon thread.

    Returns ``(base_url, stop)``: ``base_url`` is ``http://127.0.0.1:<port>`` (no trailing
    slash); ``stop()`` shuts the server down and closes its socket (calling it twice is fine).
    ``quiet=False`` keeps werkzeug's access log line per request; with ``ssl_context``
    (``tls_context(...)``) it serves HTTPS and the URL starts with ``https://``.
    """
    server, thread = _start(app, 0, quiet=quiet, ssl_context=ssl_context)
    scheme = "https" if ssl_context else "http"
    return f"{scheme}://{HOST}:{server.server_port}", _stopper(server, thread)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve both demo providers until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.providers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rest-port", type=int, default=8081, help="port of demo_rest (0: any free port)")
    parser.add_argument("--soap-port", type=int, default=8082, help="port of demo_soap (0: any free port)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each delivery call waits (e.g. 0.05)")
    parser.add_argument("--token", default=None, help="bearer token demo_rest requires (default: none)")
    parser.add_argument("--quiet", action="store_true", help="no access-log line per request")
    parser.add_argument("--answer-delay", type=float, default=1.0, metavar="S",
                        help="seconds before the clinics answer a case (default 1.0; 0: they never answer)")
    parser.add_argument("--question-every", type=int, default=3, metavar="N",
                        help="the clinics ask a counter-question on every Nth case (default 3; 0: never)")
    parser.add_argument("--notices-only", action="store_true",
                        help="the clinics answer every case with one INFO notice and nothing else (no status, no "
                             "question, no files): what a gateway on national profile mvk-inbox-2.0 carries")
    parser.add_argument("--gateway-url", default=None, metavar="URL",
                        help="demo_rest pushes its answers to this gateway (e.g. http://127.0.0.1:8080); "
                             "default: it only serves them on GET /api/updates")
    parser.add_argument("--api-token", default=None, metavar="TOKEN",
                        help="bearer token for the gateway's provider API (default: $DEMO_REST_API_TOKEN)")
    args = parser.parse_args(argv)
    if args.answer_delay < 0 or args.question_every < 0:
        parser.error("--answer-delay and --question-every must be >= 0")
    api_token = args.api_token or os.environ.get("DEMO_REST_API_TOKEN") or None

    try:
        rest_app = create_rest_provider(delay_s=args.delay, token=args.token, answer_delay_s=args.answer_delay,
                                        question_every=args.question_every, gateway_url=args.gateway_url,
                                        api_token=api_token, notices_only=args.notices_only)
        soap_app = create_soap_provider(delay_s=args.delay, answer_delay_s=args.answer_delay,
                                        question_every=args.question_every, notices_only=args.notices_only)
        rest = _start(rest_app, args.rest_port, quiet=args.quiet)
        soap = _start(soap_app, args.soap_port, quiet=args.quiet)
    except (OSError, SystemExit) as exc:  # werkzeug exits when a port is taken
        print(f"sandbox.providers: cannot listen on the ports asked for ({exc})", file=sys.stderr)
        return 1
    stoppers = [_stopper(*rest), _stopper(*soap)]
    # One line per system, "<target> <base URL>", for people and for a parent process.
    clinic = f"clinic answers after {args.answer_delay:g} s" if args.answer_delay > 0 else "clinic off"
    clinic += ", INFO notices only" if args.notices_only and args.answer_delay > 0 else ""
    push = f", pushes to {args.gateway_url}" if args.gateway_url and args.answer_delay > 0 else ""
    print(f"demo_rest http://{HOST}:{rest[0].server_port}  (POST /api/cases, GET /api/updates, "
          f"GET /api/patients/<id>/medications; {clinic}{push})",
          flush=True)
    print(f"demo_soap http://{HOST}:{soap[0].server_port}  (POST /soap, GET /soap?wsdl, GetUpdates, GetMedications; "
          f"{clinic})",
          flush=True)

    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopping.wait(0.5):
        pass
    for stop in stoppers:
        stop()
    print("sandbox.providers: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
