"""The target sessions' reading of the environment (adapters.base.TargetSession): proxies,
NO_PROXY, the CA bundle of REQUESTS_CA_BUNDLE and ~/.netrc as plain requests reads them,
read once per host."""

from __future__ import annotations

import base64
import http.server
import threading
from pathlib import Path

import pytest

from adapters.base import TargetSession


@pytest.fixture()
def proxy():
    """A loopback "proxy" that records the request line and headers it gets and answers 200."""
    seen: list[tuple[str, dict[str, str]]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append((self.path, dict(self.headers)))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_environment_proxy_is_used_for_every_call_and_no_proxy_is_honoured(proxy, monkeypatch):
    url, seen = proxy
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.setenv("NO_PROXY", "skipped.invalid")
    session = TargetSession()
    for _ in range(2):
        assert session.get("http://provider.invalid/api/ping", timeout=5).status_code == 200
    assert [path for path, _ in seen] == ["http://provider.invalid/api/ping"] * 2  # through the proxy, both times
    settings = session.merge_environment_settings("http://skipped.invalid/x", {}, None, None, None)
    assert settings["proxies"] == {}


def test_a_configured_ca_bundle_wins_over_the_environment_and_the_environment_fills_in(monkeypatch, tmp_path):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "env.pem"))
    configured = TargetSession()
    configured.verify = str(tmp_path / "configured.pem")
    plain = TargetSession()
    for _ in range(2):  # the second call reads what the first one kept
        assert configured.merge_environment_settings("https://a.invalid/", {}, None, None, None)["verify"] \
            == str(tmp_path / "configured.pem")
        assert plain.merge_environment_settings("https://a.invalid/", {}, None, None, None)["verify"] \
            == str(tmp_path / "env.pem")


def test_netrc_credentials_are_sent_to_the_host_they_name_only(proxy, monkeypatch, tmp_path: Path):
    url, seen = proxy
    netrc = tmp_path / "netrc"
    netrc.write_text("machine provider.invalid login gw password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTP_PROXY", url)
    session = TargetSession()
    for host in ("provider.invalid", "other.invalid", "provider.invalid"):
        assert session.get(f"http://{host}/x", timeout=5).status_code == 200
    auths = [headers.get("Authorization") for _, headers in seen]
    expected = "Basic " + base64.b64encode(b"gw:s3cret").decode()
    assert auths == [expected, None, expected]
