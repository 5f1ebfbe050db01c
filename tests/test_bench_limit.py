"""bench/limit.py's instruments: the bodies it sends and the bare app it measures against.

Role: checks that the benchmark measures what it says (each request a new, valid
ProcessCase; the bare app stores every body and answers OK), without timing anything.

May import: bench/limit.py (loaded from its file), the gateway's modules, pytest.

Invariants: no network, no timed assertion.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

import pytest

import inbound
import rivta
import rules

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def limit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_limit", ROOT / "bench" / "limit.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path
    return module


def test_every_body_is_a_new_valid_case_with_its_own_attachment(limit: ModuleType) -> None:
    template = limit.Template(limit.common.Builder(), "000000")
    first, second = limit.uid("G0104", 1, 1), limit.uid("G0104", 2, 1)
    assert first != second
    schemas = rivta.Schemas()
    cases = [inbound.case_from_xml(template.body(u), schemas) for u in (first, second)]  # parsed and XSD-valid
    assert [c.case_id for c in cases] == [template.case_id(first), template.case_id(second)]
    files = [c.attachments[0].data for c in cases]
    for unique, data in zip((first, second), files):
        assert data.startswith(b"%PDF-1.4\n")
        assert base64.b64decode(unique) in data  # the unique bytes, in the picture's raw data
        assert len(data) == limit.common.ATTACHMENT_BYTES
        assert rules.content_problem(data, "application/pdf") is None  # a PDF the gateway takes
    assert hashlib.sha256(files[0]).digest() != hashlib.sha256(files[1]).digest()  # two blobs, not one
    assert len(template.body(first)) == template.size == len(template.body(second))


def test_the_bare_app_commits_each_body_and_answers_ok(limit: ModuleType, tmp_path: Path) -> None:
    app = limit.BareApp(tmp_path / "bare.db")
    template = limit.Template(limit.common.Builder(), "000000")
    bodies = [template.body(limit.uid("B0101", 1, n)) for n in (1, 2)]
    for body in bodies:
        status: list[str] = []
        environ = {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
        answer = b"".join(app(environ, lambda s, h: status.append(s)))
        assert status == ["200 OK"]
        assert limit.common.OK.search(answer)
    db = sqlite3.connect(tmp_path / "bare.db")
    try:
        assert [row[0] for row in db.execute("SELECT body FROM bodies ORDER BY id")] == bodies
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
