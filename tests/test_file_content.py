"""Files are what they claim, all the way through (rule 1; issue 17, item 5): a PDF must parse
and carry no JavaScript, launch action or embedded file; a GIF, JPEG or PNG must decode whole.
Checked in both directions, as the senders see it: a citizen's file from 1177 (ProcessCase,
ProcessCaseMessage: resultCode ERROR, GW022 and the reason, nothing stored), a file the
provider sends through the API (422 GW022 naming the attachment and the reason, nothing queued)
and one in a polled reply (refused in the sync log with GW022, never taken again)."""

from __future__ import annotations

import base64
import copy
import hashlib
import io

import pypdf
import pytest
import responses
import sample_files
from conftest import GIF, JPEG, PDF, PNG, PNR, result_of
from lxml import etree
from test_way_back import (  # noqa: F401 - fixtures
    app,
    auth,
    client,
    inbox,
    intake,
    make_app,
    national_url,
    peers,
    reply,
    rest_url,
    run,
    store,
)

import rules
from errors import AttachmentTooLarge, AttachmentTypeRefused
from model import Attachment

#: about Swedish dates (the cases are dated today): `make test` also runs these at set instants
pytestmark = pytest.mark.dates

CASE = "1177-C-0001"
MESSAGES = f"/api/v1/cases/{CASE}/messages"


def _cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


#: (what, file name, MIME type, the bytes, the reason the refusal gives)
HOSTILE = [
    ("an HTML page that starts like a PDF", "beslut.pdf", "application/pdf", sample_files.POLYGLOT_HTML,
     "the file does not parse as a PDF"),
    ("a PDF with JavaScript in its names tree", "beslut.pdf", "application/pdf",
     sample_files.pdf_with_javascript("names"), "the PDF carries JavaScript"),
    ("a PDF whose open action is JavaScript", "beslut.pdf", "application/pdf",
     sample_files.pdf_with_javascript("open"), "the PDF carries JavaScript"),
    ("a PDF page with an additional action in JavaScript", "beslut.pdf", "application/pdf",
     sample_files.pdf_with_javascript("page_aa"), "the PDF carries JavaScript"),
    ("a PDF with a launch action", "beslut.pdf", "application/pdf", sample_files.pdf_with_launch(),
     "the PDF carries a launch action"),
    ("a PDF with a launch action whose type is an indirect object", "beslut.pdf", "application/pdf",
     sample_files.pdf_with_launch(indirect=True), "the PDF carries a launch action"),
    ("a PDF with an embedded file", "beslut.pdf", "application/pdf", sample_files.pdf_with_embedded_file("names"),
     "the PDF carries an embedded file"),
    ("a PDF with a file-attachment annotation", "beslut.pdf", "application/pdf",
     sample_files.pdf_with_embedded_file("annotation"), "the PDF carries an attached file"),
    ("a truncated PNG", "bild.png", "image/png", _cut(sample_files.picture("PNG")),
     "the file does not decode as a PNG picture"),
    ("a truncated JPEG", "bild.jpg", "image/jpeg", _cut(sample_files.picture("JPEG")),
     "the file does not decode as a JPEG picture"),
    ("a truncated GIF", "bild.gif", "image/gif", _cut(sample_files.picture("GIF")),
     "the file does not decode as a GIF picture"),
    ("a PNG decompression bomb", "bild.png", "image/png", sample_files.png_claiming(30_000, 30_000),
     "the PNG picture has more than 64 000 000 pixels"),
]
IDS = [h[0] for h in HOSTILE]

#: real files of each kind, as their programs write them
GOOD = [
    ("a PDF with text", "beslut.pdf", "application/pdf", sample_files.pdf("Beslut", "Sida 2")),
    ("a blank PDF (a scan)", "skannad.pdf", "application/pdf", PDF),
    ("a PNG", "bild.png", "image/png", sample_files.picture("PNG")),
    ("a JPEG", "bild.jpg", "image/jpeg", sample_files.picture("JPEG")),
    ("a GIF", "bild.gif", "image/gif", sample_files.picture("GIF")),
    ("conftest's PNG", "a.png", "image/png", PNG),
    ("conftest's GIF", "a.gif", "image/gif", GIF),
    ("conftest's JPEG", "a.jpg", "image/jpeg", JPEG),
]


def file_dict(name: str, mime: str, data: bytes, *, b64: bool = False) -> dict:
    return {"fileName": name, "mimeType": mime, "data": base64.b64encode(data).decode() if b64 else data}


# -- the rule itself --------------------------------------------------------------------------------------


class TestTheRule:
    @pytest.mark.parametrize("what, name, mime, data", GOOD, ids=[g[0] for g in GOOD])
    def test_real_files_of_each_kind_pass(self, what, name, mime, data):
        rules.check_attachments([Attachment(name, mime, data)], max_count=5)

    @pytest.mark.parametrize("what, name, mime, data, reason", HOSTILE, ids=IDS)
    def test_each_hostile_file_is_refused_with_its_reason_and_what_to_do(self, what, name, mime, data, reason):
        ok = Attachment("ok.pdf", "application/pdf", PDF)
        with pytest.raises(AttachmentTypeRefused) as refused:
            rules.check_attachments([ok, Attachment(name, mime, data)], max_count=5)
        error = refused.value
        assert error.code == "GW022" and error.field == "attachment[2]"
        assert error.message.startswith(f"attachment[2] '{name}': {reason}")
        assert error.hint and error.hint != AttachmentTypeRefused.hint  # says what to send instead

    def test_the_first_bytes_alone_no_longer_pass(self):
        assert rules.sniff_mime_type(sample_files.POLYGLOT_HTML) == "application/pdf"  # what the old check saw
        assert rules.content_problem(sample_files.POLYGLOT_HTML, "application/pdf") is not None

    def test_a_bomb_is_refused_from_its_header_without_decoding(self, monkeypatch):
        from PIL import ImageFile

        decoded = []
        load = ImageFile.ImageFile.load
        monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or load(self))
        reason, hint = rules.content_problem(sample_files.png_claiming(9000, 9000), "image/png")
        assert "more than 64 000 000 pixels" in reason and "8000 × 8000" in hint and decoded == []
        # on the boundary, with a small limit: as many pixels as allowed are decoded, one row more is not
        monkeypatch.setattr(rules, "MAX_IMAGE_PIXELS", 200 * 100)
        assert rules.content_problem(sample_files.png_claiming(200, 100), "image/png") is None
        assert decoded == [(200, 100)]
        reason, _ = rules.content_problem(sample_files.png_claiming(200, 101), "image/png")
        assert "more than 20 000 pixels" in reason and decoded == [(200, 100)]

    def test_a_pdf_locked_with_a_password_is_refused_one_with_only_an_owner_password_is_read(self):
        def encrypted(user: str) -> bytes:
            writer = pypdf.PdfWriter(clone_from=io.BytesIO(sample_files.pdf(f"Patient {PNR}")))
            writer.encrypt(user_password=user, owner_password="agaren", algorithm="AES-128")
            out = io.BytesIO()
            writer.write(out)
            return out.getvalue()

        reason, hint = rules.content_problem(encrypted("hemligt"), "application/pdf")
        assert "protected by a password" in reason and "without a password" in hint
        owner_only = encrypted("")
        assert rules.content_problem(owner_only, "application/pdf") is None
        assert PNR in rules.pdf_page_texts(owner_only)[0]  # and the wrong-patient guard reads its text

    def test_the_20_mb_limit_holds_for_real_files(self):
        limit = rules.MAX_ATTACHMENT_BYTES
        rules.check_attachments([Attachment("a.pdf", "application/pdf", sample_files.pdf("Journal", size=limit))],
                                max_count=5)
        with pytest.raises(AttachmentTooLarge):
            rules.check_attachments([Attachment("a.pdf", "application/pdf", sample_files.pdf("Journal", size=limit + 1))],
                                    max_count=5)

    def test_a_file_name_with_a_personnummer_is_masked_in_the_refusal(self):
        with pytest.raises(AttachmentTypeRefused) as refused:
            rules.check_attachments([Attachment(f"{PNR}.pdf", "application/pdf", sample_files.pdf_with_launch())],
                                    max_count=5)
        assert PNR not in str(refused.value) and "launch action" in refused.value.message


# -- from 1177: the citizen's files -----------------------------------------------------------------------


def _soap(app, body: bytes) -> dict:
    response = app.test_client().post("/rivta", data=body, headers={"Content-Type": "text/xml"})
    assert response.status_code == 200, response.data
    return result_of(etree.fromstring(response.data))


@pytest.mark.parametrize("what, name, mime, data, reason", HOSTILE, ids=IDS)
def test_a_case_from_1177_with_a_hostile_file_is_refused_and_nothing_is_stored(app, store, make_case, what, name,
                                                                              mime, data, reason):
    result = _soap(app, make_case(attachment=[file_dict("intyg.pdf", "application/pdf", PDF),
                                              file_dict(name, mime, data)]))
    assert result["resultCode"] == "ERROR" and result["subCode"] == "GW022" and result["errorCode"] == "INVALID_REQUEST"
    assert f"case/attachment[2] '{name}': {reason}" in result["message"]
    assert store.find_case(CASE) is None and store.counts()["attachment_blobs"] == 0 and store.counts()["outbox"] == 0


@pytest.mark.parametrize("what, name, mime, data, reason", HOSTILE, ids=IDS)
def test_a_follow_up_from_1177_with_a_hostile_file_is_refused_and_nothing_is_stored(app, store, make_case,
                                                                                   make_message, what, name, mime,
                                                                                   data, reason):
    assert _soap(app, make_case())["resultCode"] == "OK"
    before = store.counts()
    result = _soap(app, make_message(attachment=[file_dict(name, mime, data)]))
    assert result["resultCode"] == "ERROR" and result["subCode"] == "GW022"
    assert f"attachment[1] '{name}': {reason}" in result["message"]
    assert store.counts() == before


@pytest.mark.parametrize("what, name, mime, data", GOOD[:5], ids=[g[0] for g in GOOD[:5]])
def test_real_files_from_1177_are_stored_as_sent(app, store, make_case, make_message, what, name, mime, data):
    assert _soap(app, make_case(attachment=[file_dict(name, mime, data)]))["resultCode"] == "OK"
    assert _soap(app, make_message(attachment=[file_dict(name, mime, data)]))["resultCode"] == "OK"
    assert [a.data for a in store.attachments_of(CASE)] == [data]
    assert [a.data for a in store.attachments_of(CASE, "1177-M-0001")] == [data]


# -- from the provider: the API and polling ---------------------------------------------------------------


@pytest.mark.parametrize("what, name, mime, data, reason", HOSTILE, ids=IDS)
def test_the_api_refuses_a_hostile_file_with_422_gw022_and_queues_nothing(app, client, store, peers, run, make_case,
                                                                          what, name, mime, data, reason):
    intake(app, make_case)
    run()
    before = store.counts()
    answer = client.post(MESSAGES, headers=auth(), json=reply(attachments=[
        file_dict("svar.pdf", "application/pdf", PDF, b64=True), file_dict(name, mime, data, b64=True)]))
    assert answer.status_code == 422, answer.json
    assert answer.json["code"] == "GW022" and answer.json["field"] == "attachments[2]"
    assert answer.json["message"].startswith(f"attachments[2] '{name}': {reason}")
    run()
    assert store.counts()["outbox"] == before["outbox"] and store.counts()["messages"] == before["messages"]
    assert inbox(peers, CASE)["messages"] == []


@pytest.mark.parametrize("what, name, mime, data", GOOD[:5], ids=[g[0] for g in GOOD[:5]])
def test_the_api_sends_real_files_to_the_inbox_byte_for_byte(app, client, peers, run, make_case, what, name, mime, data):
    intake(app, make_case)
    answer = client.post(MESSAGES, headers=auth(), json=reply(attachments=[file_dict(name, mime, data, b64=True)]))
    assert answer.status_code == 202, answer.json
    run()
    (sent,) = inbox(peers, CASE)["messages"]
    assert [(a["fileName"], a["sha256"]) for a in sent["attachments"]] == [(name, hashlib.sha256(data).hexdigest())]


def test_a_polled_reply_with_a_hostile_file_is_refused_for_good_and_the_rest_go_on(config_data, peers, make_case):
    data = copy.deepcopy(config_data)
    data["targets"]["demo_rest"]["poll"] = {"interval_s": 60, "path": "/updates"}
    app = make_app(data, peers)
    try:
        store, worker = app.extensions["gateway.store"], app.extensions["gateway.worker"]
        intake(app, make_case)
        base = f"{peers['rest']}/api"
        script = sample_files.pdf_with_javascript("open")
        with responses.RequestsMock() as mock:
            mock.add_passthru(peers["national"])
            mock.add_passthru(peers["rest"])
            mock.get(f"{base}/updates", json={"cursor": "c1", "updates": [
                {"type": "message", "caseId": CASE, "kind": "FINAL_REPLY", "body": "Beslutet bifogas.",
                 "senderUnit": "KLIN1", "messageId": "POLL-JS",
                 "attachments": [file_dict("beslut.pdf", "application/pdf", script, b64=True)]},
                {"type": "message", "caseId": CASE, "kind": "INFO", "body": "Vi återkommer.", "senderUnit": "KLIN1",
                 "attachments": [file_dict("info.pdf", "application/pdf", sample_files.pdf("Information"), b64=True)]},
            ]})
            mock.get(f"{base}/updates", json={"cursor": "c2", "updates": []})
            assert worker.poll("demo_rest") == 1  # the hostile one is refused, the other taken
            assert worker.poll("demo_rest") == 0  # the cursor moved on: the refused one is not taken again
            assert mock.calls[1].request.params == {"since": "c1"}
        worker.run_until_idle()
        assert [m["kind"] for m in inbox(peers, CASE)["messages"]] == ["INFO"]
        (refused,) = store.db.query("select error_code, status, detail from sync_log where event = 'poll_update_refused'")
        assert refused["error_code"] == "GW022" and refused["status"] == "refused"
        assert "update 1 of 2 from demo_rest: attachments[1] 'beslut.pdf': the PDF carries JavaScript" in refused["detail"]
        assert not [r for r in store.outbox_rows(CASE) if r["status"] in ("pending", "in_flight", "dead", "held")]
    finally:
        app.extensions["gateway.worker"].stop()
        app.extensions["gateway.store"].close()
