"""Trust on the wire, over real TLS on loopback: `gateway serve` requiring client certificates
on /rivta (SERIALNUMBER = HSA-id on an allow-list), the proxy header trusted only from the
proxy, outbound mutual TLS to a TLS stub of the platform, and no silent `verify: false`."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import requests
import zeep
from conftest import KLIN1, ROOT, case_dict, example_data, free_port, result_of, write_config
from lxml import etree

import clock
import config as config_mod
import devcerts
import cli
import gateway
import rivta
from errors import ConfigError
from test_server import gateway_command

pytestmark = pytest.mark.slow  # real gunicorn servers with TLS, as processes of their own

PLATFORM = devcerts.PLATFORM_HSA_ID
STRANGER = "SE5566778899-XYZ9"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("pki")
    ca = devcerts.DevCA(folder)
    other = devcerts.DevCA(folder / "other", common="Some other CA")
    return {
        "folder": folder, "ca": ca.issued.cert, "server": ca.server(),
        "platform": ca.client(PLATFORM), "stranger": ca.client(STRANGER), "gateway": ca.client(devcerts.GATEWAY_HSA_ID),
        "foreign": other.client(PLATFORM, name="foreign-platform"),
    }


def envelope() -> bytes:
    client = zeep.Client(str(rivta.PROCESS_CASE.wsdl_path))
    message = client.create_message(client.service, "ProcessCase", case=case_dict(caseId=f"TLS-{time.time_ns()}"),
                                    _soapheaders={"LogicalAddress": KLIN1})
    return etree.tostring(message)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, pki):
    folder = tmp_path_factory.mktemp("tls-server")
    data = example_data(folder)
    data["server"]["tls"] = {"cert": str(pki["server"].cert), "key": str(pki["server"].key), "client_ca": str(pki["ca"])}
    data["rivta"] = {"require_client_cert": True, "allowed_consumers": [PLATFORM]}
    data["logging"]["format"] = "json"
    config = write_config(folder, data)
    port = free_port()
    log = open(folder / "server.log", "wb")
    process = subprocess.Popen([*gateway_command(), "serve", "--config", str(config), "--bind", f"127.0.0.1:{port}", "--no-worker"],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"https://localhost:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"{base}/health/live", verify=str(pki["ca"]), timeout=1)
            break
        except requests.exceptions.SSLError:
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    yield {"base": base, "log": folder / "server.log"}
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(15)
    log.close()


def call(server, pki, cert=None):
    return requests.post(f"{server['base']}/rivta", data=envelope(), verify=str(pki["ca"]), timeout=10,
                         cert=(str(cert.cert), str(cert.key)) if cert else None,
                         headers={"Content-Type": "text/xml; charset=UTF-8"})


def test_the_right_certificate_is_accepted(tls_server, pki):
    answer = call(tls_server, pki, pki["platform"])
    assert answer.status_code == 200 and result_of(etree.fromstring(answer.content))["resultCode"] == "OK"


def test_no_certificate_is_refused_with_a_fault(tls_server, pki):
    answer = call(tls_server, pki)
    fault = result_of(etree.fromstring(answer.content))
    assert answer.status_code == 500 and fault["faultstring"].startswith("GW018") and "no verified client certificate" in fault["faultstring"]


def test_an_hsa_id_not_on_the_list_is_refused_and_logged_with_the_presented_identity(tls_server, pki):
    answer = call(tls_server, pki, pki["stranger"])
    fault = result_of(etree.fromstring(answer.content))
    assert answer.status_code == 500 and fault["faultstring"].startswith("GW018") and STRANGER in fault["faultstring"]
    time.sleep(0.2)
    assert STRANGER in tls_server["log"].read_text() and "not on the allow-list" in tls_server["log"].read_text()


def test_a_certificate_from_another_ca_is_refused_in_the_handshake(tls_server, pki):
    with pytest.raises(requests.exceptions.SSLError):
        call(tls_server, pki, pki["foreign"])
    assert call(tls_server, pki, pki["platform"]).status_code == 200  # and the server keeps answering


def test_browser_pages_work_without_a_client_certificate(tls_server, pki):
    assert requests.get(f"{tls_server['base']}/health/live", verify=str(pki["ca"]), timeout=5).status_code == 200


# -- behind a TLS-terminating proxy --------------------------------------------------------------------------------


@pytest.fixture
def proxied_app(config_data, pki):
    data = copy.deepcopy(config_data)
    data["server"]["tls"] = {"cert": str(pki["server"].cert), "key": str(pki["server"].key), "client_ca": str(pki["ca"])}
    data["rivta"] = {"require_client_cert": True, "allowed_consumers": [PLATFORM], "proxy_cert_header": "X-SSL-Client-Cert",
                     "proxy_addresses": ["10.1.2.3"]}
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))
    yield app
    app.extensions["gateway.store"].close()


def _header(issued) -> str:
    return urllib.parse.quote(Path(issued.cert).read_text())


@pytest.mark.parametrize(
    "remote, cert, ok",
    [("10.1.2.3", "platform", True), ("127.0.0.1", "platform", False), ("10.1.2.3", "stranger", False),
     ("10.1.2.3", "foreign", False)],
    ids=["from the proxy", "header from elsewhere", "not on the list", "another CA"],
)
def test_the_proxy_header_is_honoured_only_from_the_proxy(proxied_app, pki, capsys, remote, cert, ok):
    response = proxied_app.test_client().post(
        "/rivta", data=envelope(), environ_base={"REMOTE_ADDR": remote},
        headers={"Content-Type": "text/xml", "X-SSL-Client-Cert": _header(pki[cert])})
    result = result_of(etree.fromstring(response.data))
    if ok:
        assert result["resultCode"] == "OK"
    else:
        assert result["faultstring"].startswith("GW018")
    if remote == "127.0.0.1":
        assert "header ignored: not from a trusted proxy" in capsys.readouterr().err


# -- outbound mutual TLS -------------------------------------------------------------------------------------------


def test_outbound_mutual_tls_to_the_platform(config_data, pki, make_case):
    from sandbox.national import create_national_stub
    from sandbox.providers import serve_in_thread, tls_context

    url, stop = serve_in_thread(create_national_stub(), ssl_context=tls_context(
        str(pki["server"].cert), str(pki["server"].key), str(pki["ca"])))
    url = url.replace("127.0.0.1", "localhost")
    try:
        def app_with(tls):
            data = copy.deepcopy(config_data)
            data["database"]["path"] = data["database"]["path"] + ("-with-cert" if "client_cert" in tls else "-without")
            data["national"]["endpoint"] = f"{url}/rivta"
            data["national"]["tls"] = tls
            data["national"]["retry"] = {"max_attempts": 1, "initial_s": 0.01, "max_s": 0.01, "jitter": 0}
            data["targets"]["demo_rest"]["api"] = {"token": "t-0123456789"}
            return gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))

        for tls, expected in (({"ca_bundle": str(pki["ca"]), "client_cert": str(pki["gateway"].cert),
                                "client_key": str(pki["gateway"].key)}, "done"),
                              ({"ca_bundle": str(pki["ca"])}, "dead")):  # no client certificate: the stub refuses
            app = app_with(tls)
            try:
                app.test_client().post("/rivta", data=make_case(), headers={"Content-Type": "text/xml"})
                store = app.extensions["gateway.store"]
                # the provider side is not what this test is about: take the case as delivered
                store.db.execute("UPDATE outbox SET status = 'done' WHERE action = 'deliver_case'")
                reply = {"kind": "INFO", "body": "Hej", "senderUnit": "KLIN1"}
                app.test_client().post("/api/v1/cases/1177-C-0001/messages", json=reply,
                                       headers={"Authorization": "Bearer t-0123456789"})
                job = [j for j in store.claim("w", limit=5, lease_s=30) if j.action == "add_message"][0]
                app.extensions["gateway.worker"].deliver(job)
                row = [o for o in store.outbox_rows("1177-C-0001") if o["action"] == "add_message"][0]
                assert row["status"] == expected, row
                if expected == "dead":
                    assert row["last_error_code"] == "GW064" and "TLS" in row["last_error"]
            finally:
                app.extensions["gateway.store"].close()
        inbox = requests.get(f"{url}/sandbox/inbox", verify=str(pki["ca"]),
                             cert=(str(pki["gateway"].cert), str(pki["gateway"].key)), timeout=5).json()
        assert len(inbox["messages"]) == 1
    finally:
        stop()


# -- configuration -----------------------------------------------------------------------------------------------------


def test_verification_is_never_switched_off_silently(config_data, runner, tmp_path):
    data = copy.deepcopy(config_data)
    data["national"]["tls"] = {"verify": False}
    with pytest.raises(ConfigError, match="national.tls.*insecure: true"):
        config_mod.from_dict(copy.deepcopy(data), base_dir=ROOT, environ={})
    data["national"]["tls"] = {"verify": False, "insecure": True}
    result = runner.invoke(cli.cli, ["check", "--config", str(write_config(tmp_path, data))])
    assert result.exit_code == 0 and "WARN national.tls: certificate verification is OFF" in result.output


def test_client_certificates_need_a_client_ca(config_data):
    data = copy.deepcopy(config_data)
    data["rivta"] = {"require_client_cert": True, "allowed_consumers": [PLATFORM]}
    with pytest.raises(ConfigError, match="server.tls.client_ca"):
        config_mod.from_dict(data, base_dir=ROOT, environ={})


def test_certs_dev_makes_a_ca_server_and_client_certificates(runner, tmp_path):
    result = runner.invoke(cli.cli, ["certs", "dev", str(tmp_path), "--consumer", PLATFORM])
    assert result.exit_code == 0
    from cryptography import x509

    import identity

    client = x509.load_pem_x509_certificate((tmp_path / f"client-{PLATFORM}.pem").read_bytes())
    assert identity.from_certificate(client, "file").hsa_id == PLATFORM
    assert identity.CertificateAuthority(tmp_path / "ca.pem", clock.utcnow).issued(client)
    assert oct((tmp_path / "server-key.pem").stat().st_mode)[-3:] == "600"


class _PeerSocket:
    """What gunicorn/werkzeug hand the app: a TLS socket whose peer certificate was verified."""

    def __init__(self, serial: str):
        self.serial = serial

    def getpeercert(self):
        return {"subject": ((("countryName", "SE"),), (("commonName", "Journal"),), (("serialNumber", self.serial),))}


def test_the_provider_api_takes_a_client_certificate_instead_of_a_token(config_data, pki, make_case):
    data = copy.deepcopy(config_data)
    data["server"]["tls"] = {"cert": str(pki["server"].cert), "key": str(pki["server"].key), "client_ca": str(pki["ca"])}
    data["targets"]["demo_rest"]["api"] = {"client_cert_hsa_id": "SE5566778899-JRNL"}
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))
    try:
        client = app.test_client()
        client.post("/rivta", data=make_case(), headers={"Content-Type": "text/xml"})
        as_journal = client.get("/api/v1/cases/1177-C-0001", environ_base={"werkzeug.socket": _PeerSocket("SE5566778899-JRNL")})
        assert as_journal.status_code == 200 and as_journal.json["caseId"] == "1177-C-0001"
        stranger = client.get("/api/v1/cases/1177-C-0001", environ_base={"werkzeug.socket": _PeerSocket(STRANGER)})
        assert stranger.status_code == 401 and stranger.json["code"] == "GW030"
        assert client.get("/api/v1/cases/1177-C-0001").status_code == 401
    finally:
        app.extensions["gateway.store"].close()


def test_secrets_never_appear_in_check_output_errors_or_logs(config_data, runner, tmp_path, make_case, capsys):
    secrets = {"API_TOKEN": "tok-SECRET-4711", "SMTP_PW": "smtp-SECRET-4711", "OAUTH": "oauth-SECRET-4711"}
    data = copy.deepcopy(config_data)
    data["targets"]["demo_rest"]["api"] = {"token": {"$env": "API_TOKEN"}}
    data["targets"]["demo_rest"]["auth"] = {"type": "oauth2", "token_url": "http://127.0.0.1:9/token", "client_id": "gw",
                                            "client_secret": {"$env": "OAUTH"}}
    data["alerts"] = {"smtp_host": "127.0.0.1", "smtp_port": 9, "smtp_username": "gw", "smtp_password": {"$env": "SMTP_PW"},
                      "mail_to": ["ops@example.se"]}
    path = write_config(tmp_path, data)
    checked = runner.invoke(cli.cli, ["check", "--config", str(path)], env=secrets)
    assert checked.exit_code == 0 and not any(v in checked.output for v in secrets.values())
    cfg = config_mod.from_dict(copy.deepcopy(data), base_dir=ROOT, environ=secrets)
    assert not any(v in repr(cfg) or v in str(cfg.redacted()) for v in secrets.values())
    app = gateway.create_app(cfg)
    try:
        app.test_client().post("/rivta", data=make_case(), headers={"Content-Type": "text/xml"})
        app.extensions["gateway.worker"].run_until_idle(timeout=0.5)  # the token request fails: logged, retried
        row = app.extensions["gateway.store"].outbox_rows("1177-C-0001")[0]
        app.extensions["gateway.worker"].check_alerts()  # the SMTP login fails
        logged = capsys.readouterr()
        everything = logged.out + logged.err + str(row) + str(app.extensions["gateway.store"].search_log(limit=100))
        assert row["last_error_code"] in ("GW060", "GW064") and not any(v in everything for v in secrets.values())
    finally:
        app.extensions["gateway.store"].close()


def test_the_ops_view_takes_a_client_certificate_instead_of_a_password(config_data, pki):
    data = copy.deepcopy(config_data)
    data["server"]["tls"] = {"cert": str(pki["server"].cert), "key": str(pki["server"].key), "client_ca": str(pki["ca"])}
    data["ops"] = {"users": [{"name": "anna", "role": "admin", "client_cert_hsa_id": "SE5566778899-ANNA"}]}
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))
    try:
        client = app.test_client()
        page = client.get("/ops/", environ_base={"werkzeug.socket": _PeerSocket("SE5566778899-ANNA")})
        assert page.status_code == 200 and "anna" in page.get_data(as_text=True)
        assert client.get("/ops/", environ_base={"werkzeug.socket": _PeerSocket(STRANGER)}).status_code == 302
    finally:
        app.extensions["gateway.store"].close()
