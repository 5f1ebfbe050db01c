"""Shared fixtures: a config on a temporary database, the app, its client, a CLI runner,
and builders for the SOAP requests 1177 sends (made by zeep from the project's WSDLs).

The store, delivery and crash tests (``BOTH_BACKENDS``) run on SQLite and on PostgreSQL:
``GATEWAY_TEST_POSTGRES_URL`` (e.g. postgresql://postgres@127.0.0.1:5432/test) names a
database in which each test gets a schema of its own, dropped afterwards; without it the
PostgreSQL variants are skipped and say why."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import os
import socket
import uuid
import struct
import sys
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import config as config_mod  # noqa: E402
import gateway  # noqa: E402
import rivta  # noqa: E402
import sample_files  # noqa: E402

REFERENCE = ROOT.parent / "shared" / "reference" / "rivta"
PNR = "191212121212"  # Tolvan Tolvansson, the Skatteverket test personnummer
PNR_2 = "198112189876"
SAMORDNING = "197010632391"  # samordningsnummer (day 03 + 60)
KLIN1 = "SE5566778899-KLIN1"
KLIN2 = "SE5566778899-KLIN2"
BOARD = "SE2321000016-PN01"


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"\x00\xff\x00\x00"
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)) + chunk(
        b"IDAT", zlib.compress(raw)
    ) + chunk(b"IEND", b"")


#: Files that are what they claim, all the way through (the gateway parses a PDF with pypdf
#: and decodes a picture with Pillow): a PDF with one blank page (no text, as a scan has
#: none), a 1 × 1 PNG (the picture of mappings/samples/question.xml), a 1 × 1 GIF, and a
#: JPEG that Pillow writes when the tests run (sample_files has the builders).
PDF = sample_files.pdf()
PNG = _png()
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
JPEG = sample_files.picture("JPEG", 16, 16)
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"


# -- the clock: date-sensitive tests also run at the hours where time zones disagree ----------------


def pytest_addoption(parser):
    parser.addoption(
        "--clock", action="append", default=[], metavar="INSTANT",
        help="run the tests marked 'dates' with the clock set to INSTANT (ISO 8601, e.g. 2026-12-15T23:30:00Z), "
             "ticking from there; the other tests are deselected. May be given more than once: each marked test "
             "then runs at each instant.",
    )
    parser.addoption(
        "--clock-everything", action="store_true",
        help="with --clock, run every test that runs in this process (not only those marked 'dates') at the "
             "instant; the tests marked 'slow' start servers as processes of their own, which keep the real time, "
             "so they are deselected.",
    )


def _instant(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


#: The database the PostgreSQL variants use (a schema per test in it); unset: they are skipped.
POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "")

#: The test modules whose tests (those on the ``config_data`` fixture) run on both backends.
BOTH_BACKENDS = {"test_delivery", "test_nothing_stranded", "test_way_back", "test_jobs_once", "test_intake", "test_ops",
                 "test_crash"}

NO_POSTGRES = ("GATEWAY_TEST_POSTGRES_URL is not set: the PostgreSQL variant needs a reachable PostgreSQL, "
               "e.g. GATEWAY_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test (.ci/run sets it)")

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(not POSTGRES_URL, reason=NO_POSTGRES))]


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames and metafunc.module.__name__.rpartition(".")[2] in BOTH_BACKENDS:
        metafunc.parametrize("backend", BACKENDS, indirect=True)
    instants = metafunc.config.getoption("clock")
    everything = metafunc.config.getoption("clock_everything")
    if instants and (everything or metafunc.definition.get_closest_marker("dates")):
        metafunc.fixturenames.append("clock_at")
        metafunc.parametrize("clock_at", [_instant(t) for t in instants], ids=[f"at {t}" for t in instants])


def pytest_collection_modifyitems(config, items):
    if not config.getoption("clock"):
        return
    marker = "slow" if config.getoption("clock_everything") else "dates"
    keep = (lambda item: not item.get_closest_marker("slow")) if marker == "slow" else (
        lambda item: item.get_closest_marker("dates") is not None)
    config.hook.pytest_deselected(items=[item for item in items if not keep(item)])
    items[:] = [item for item in items if keep(item)]


@pytest.fixture(autouse=True)
def _travel(request):
    """With ``--clock``, a test marked ``dates`` runs with the clock set to that instant (and
    ticking from there): the whole gateway reads it through ``clock``, and so do the sandbox's
    demo providers in their threads."""
    at = request.node.callspec.params.get("clock_at") if hasattr(request.node, "callspec") else None
    if at is None:
        yield
        return
    import time_machine

    with time_machine.travel(at, tick=True):
        yield


@pytest.fixture(autouse=True)
def _api_answers_as_documented():
    """Every answer a test gets from the provider API (``/api``, through a Flask test client)
    is checked against the OpenAPI document the same app serves (``tests/contract.py``): a
    status, content type or JSON body the document does not describe fails the test."""
    from contract import answers_checked

    with answers_checked() as problems:
        yield
    assert not problems, "answers the OpenAPI document does not describe:\n" + "\n".join(dict.fromkeys(problems))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def example_data(folder: Path) -> dict:
    """The shipped example config with its database in ``folder`` and its other relative
    paths made absolute, so that it can be written anywhere; with one server and one worker
    process (the example has two of each, for a 2-core machine): a test about several
    processes sets them itself."""
    import yaml

    data = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    data["server"]["workers"] = 1
    data["worker"]["processes"] = 1
    data["database"]["path"] = str(folder / "gateway.db")
    data["mappings"]["dir"] = str(ROOT / "mappings")
    data["targets"]["demo_soap"]["wsdl"] = str(ROOT / data["targets"]["demo_soap"]["wsdl"])
    return data


def write_config(folder: Path, data: dict, name: str = "config.yaml") -> Path:
    import yaml

    path = folder / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


@pytest.fixture
def backend(request) -> str:
    """The store's backend of this test: "sqlite", or "postgresql" for the modules of ``BOTH_BACKENDS``."""
    return getattr(request, "param", "sqlite")


@contextlib.contextmanager
def postgres_schema(prefix: str = "gw_test"):
    """A fresh schema in the database of ``GATEWAY_TEST_POSTGRES_URL``, dropped afterwards;
    yields the URL whose connections use it (``options=-csearch_path=…``)."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{name}"')
    joiner = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{joiner}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def postgres_url(backend):
    """The URL of this test's own PostgreSQL schema (None on SQLite)."""
    if backend != "postgresql":
        yield None
        return
    with postgres_schema() as url:
        yield url


@pytest.fixture
def config_data(tmp_path: Path, postgres_url: str | None) -> dict:
    """The example config, with its database in a temporary folder (or, for the PostgreSQL
    variant, in a schema of its own)."""
    data = example_data(tmp_path)
    if postgres_url:
        data["database"]["url"] = postgres_url
    data["logging"]["format"] = "json"
    # no automatic receipts unless a test asks for them: they would add rows towards 1177
    data["outbound"]["confirmations"]["enabled"] = False
    return data


@pytest.fixture
def cfg(config_data: dict, tmp_path: Path) -> config_mod.Config:
    return config_mod.from_dict(copy.deepcopy(config_data), base_dir=ROOT, environ={})


@contextlib.contextmanager
def built_app(data: dict, build=None):
    """The gateway's app on the config ``data`` for one test (``build``: another way to make it
    from the data), in test mode; afterwards its worker is stopped and its store closed."""
    app = build(data) if build else gateway.create_app(config_mod.from_dict(copy.deepcopy(data), base_dir=ROOT, environ={}))
    app.config["TESTING"] = True
    try:
        yield app
    finally:
        app.extensions["gateway.worker"].stop()
        app.extensions["gateway.store"].close()


@pytest.fixture
def app(cfg):
    app = gateway.create_app(cfg)
    app.config["TESTING"] = True
    yield app
    app.extensions["gateway.worker"].stop()
    app.extensions["gateway.store"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def store(app):
    return app.extensions["gateway.store"]


@pytest.fixture
def runner():
    return CliRunner()


# -- SOAP requests as 1177 builds them ----------------------------------------------------------


@pytest.fixture(scope="session")
def zeep_clients():
    import zeep

    return {
        name: zeep.Client(str(contract.wsdl_path))
        for name, contract in (("ProcessCase", rivta.PROCESS_CASE), ("ProcessCaseMessage", rivta.PROCESS_CASE_MESSAGE))
    }


def sweden_now() -> dt.datetime:
    import clock

    return clock.SYSTEM.local_time()


def case_dict(**overrides) -> dict:
    """A valid complaint to KLIN1 with two attachments; ``overrides`` replace top-level keys."""
    today = sweden_now().date()
    case = {
        "caseId": "1177-C-0001",
        "caseType": "COMPLAINT",
        "receiver": {"hsaId": KLIN1, "isPatientBoard": False},
        "subjectOfCare": {
            "personId": {"id": PNR, "type": "1.2.752.129.2.1.3.1"},
            "name": "Tolvan Tolvansson",
            "contact": {"mobile": "+46701234567", "email": "tolvan@example.org", "consentToShare": True},
        },
        "createdTime": sweden_now().strftime("%Y%m%d%H%M%S"),
        "subject": "Bemötande vid besök",
        "text": "Jag vill lämna synpunkter på mitt besök den 3 mars.",
        "replyPreference": {"wantsReply": True, "channel": "INKORG"},
        "complaint": {
            "eventDate": (today - dt.timedelta(days=10)).strftime("%Y%m%d"),
            "isCareProcess": False,
            "eventLocationText": "Mottagningen, plan 2",
        },
        "attachment": [
            {"fileName": "intyg.pdf", "mimeType": "application/pdf", "data": PDF},
            {"fileName": "bild.png", "mimeType": "image/png", "data": PNG},
        ],
    }
    case.update(overrides)
    return {k: v for k, v in case.items() if v is not None}


def soap_bytes(zeep_clients, operation: str, address: str | None = KLIN1, **kwargs) -> bytes:
    client = zeep_clients[operation]
    headers = {"LogicalAddress": address} if address is not None else None
    envelope = client.create_message(client.service, operation, _soapheaders=headers, **kwargs)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


@pytest.fixture
def make_case(zeep_clients):
    def build(address: str | None = KLIN1, **overrides) -> bytes:
        return soap_bytes(zeep_clients, "ProcessCase", address, case=case_dict(**overrides))

    return build


@pytest.fixture
def make_message(zeep_clients):
    # one createdTime per test: the same message sent twice is the same message, even when
    # the two sendings fall on either side of a second
    created = sweden_now().strftime("%Y%m%d%H%M%S")

    def build(address: str | None = KLIN1, **overrides) -> bytes:
        fields = {
            "caseId": "1177-C-0001",
            "messageId": "1177-M-0001",
            "createdTime": created,
            "text": "Här kommer svaret på er fråga.",
            "attachment": [{"fileName": "svar.jpg", "mimeType": "image/jpeg", "data": JPEG}],
        }
        fields.update(overrides)
        return soap_bytes(zeep_clients, "ProcessCaseMessage", address, **{k: v for k, v in fields.items() if v is not None})

    return build


@pytest.fixture
def post(client):
    """POST a SOAP body to /rivta; returns (status, parsed XML root, raw text)."""

    def send(body: bytes, content_type: str = "text/xml; charset=UTF-8", headers: dict | None = None):
        response = client.post("/rivta", data=body, headers={"Content-Type": content_type, **(headers or {})})
        root = etree.fromstring(response.data)
        return response.status_code, root, response.get_data(as_text=True)

    return send


def result_of(root) -> dict:
    """The ``result`` of a response as a dict, or the fault as {'fault': ..., 'faultstring': ...}."""
    fault = root.find(f".//{{{rivta.SOAP11_NS}}}Fault")
    if fault is not None:
        return {"fault": fault.findtext("faultcode"), "faultstring": fault.findtext("faultstring")}
    result = root.find(f".//{{{rivta.CORE_NS}}}resultCode/..")
    return {etree.QName(child).localname: child.text for child in result}
