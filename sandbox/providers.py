"""The two demo provider systems, and how to run them (threads for tests, a process for the demo).

Role: the entry point to the demo provider systems the demo config targets:
``demo_rest`` (``sandbox.demo_rest``, JSON over HTTP) and ``demo_soap``
(``sandbox.demo_soap``, the SOAP service of ``wsdl/DemoCaseService_1.0.wsdl``).

    from sandbox.providers import create_rest_provider, create_soap_provider, serve_in_thread
    base_url, stop = serve_in_thread(create_rest_provider())   # "http://127.0.0.1:<port>"
    ...
    stop()

    python -m sandbox.providers --rest-port 8081 --soap-port 8082 [--delay 0.05] [--token T] [--quiet]

May import: werkzeug, ``sandbox.demo_rest``, ``sandbox.demo_soap``. Never imported by the
product.

Invariants: servers listen on 127.0.0.1 only; ``stop()`` and SIGINT/SIGTERM shut them
down and free their ports.
"""

from __future__ import annotations

import argparse
import signal
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


def _start(app: Flask, port: int, *, quiet: bool = False) -> tuple[BaseWSGIServer, threading.Thread]:
    handler = _QuietHandler if quiet else None
    server = make_server(HOST, port, app, threaded=True, request_handler=handler)
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

    return stop


def serve_in_thread(app: Flask, *, quiet: bool = True) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` on a free port of 127.0.0.1 in a daemon thread.

    Returns ``(base_url, stop)``: ``base_url`` is ``http://127.0.0.1:<port>`` (no trailing
    slash); ``stop()`` shuts the server down and closes its socket (calling it twice is fine).
    ``quiet=False`` keeps werkzeug's access log line per request.
    """
    server, thread = _start(app, 0, quiet=quiet)
    return f"http://{HOST}:{server.server_port}", _stopper(server, thread)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve both demo providers until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.providers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rest-port", type=int, default=8081, help="port of demo_rest (0: any free port)")
    parser.add_argument("--soap-port", type=int, default=8082, help="port of demo_soap (0: any free port)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each delivery call waits (e.g. 0.05)")
    parser.add_argument("--token", default=None, help="bearer token demo_rest requires (default: none)")
    parser.add_argument("--quiet", action="store_true", help="no access-log line per request")
    args = parser.parse_args(argv)

    try:
        rest = _start(create_rest_provider(delay_s=args.delay, token=args.token), args.rest_port, quiet=args.quiet)
        soap = _start(create_soap_provider(delay_s=args.delay), args.soap_port, quiet=args.quiet)
    except (OSError, SystemExit) as exc:  # werkzeug exits when a port is taken
        print(f"sandbox.providers: cannot listen on the ports asked for ({exc})", file=sys.stderr)
        return 1
    stoppers = [_stopper(*rest), _stopper(*soap)]
    # One line per system, "<target> <base URL>", for people and for a parent process.
    print(f"demo_rest http://{HOST}:{rest[0].server_port}  (POST /api/cases)", flush=True)
    print(f"demo_soap http://{HOST}:{soap[0].server_port}  (POST /soap, GET /soap?wsdl)", flush=True)

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
