"""The wrong-patient guard and the preview (1177's rule 14, issue 17 items 1 and 2), as a
provider's system and the citizen see them: through the REST API, the worker and the loopback
1177 simulator. A message whose PDF or text names another citizen's personnummer or
samordningsnummer is held, not sent, until it is released; the preview shows what will be sent,
byte for byte."""

from __future__ import annotations

import base64
import hashlib
import io

import pytest
import pypdf
from conftest import PDF, PNR, PNR_2, SAMORDNING
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject
from test_way_back import (  # noqa: F401 - fixtures
    app,
    auth,
    client,
    inbox,
    intake,
    make_app,
    national_url,
    ours,
    peers,
    received,
    reply,
    rest_url,
    run,
    store,
)

CASE = "1177-C-0001"
MESSAGES = f"/api/v1/cases/{CASE}/messages"


def text_pdf(*pages: str) -> bytes:
    """A PDF with one page per text (Helvetica), built with pypdf: text a reader can extract."""
    writer = pypdf.PdfWriter()
    for text in pages:
        page = writer.add_blank_page(595, 842)
        font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                                 NameObject("/BaseFont"): NameObject("/Helvetica")})
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})})
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 12 Tf 72 760 Td ({text}) Tj ET".encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def pdf_file(data: bytes, name: str = "beslut.pdf") -> dict:
    return {"fileName": name, "mimeType": "application/pdf", "data": base64.b64encode(data).decode()}


def in_inbox(peers, message_id: str) -> list[dict]:
    return [m for m in inbox(peers, CASE)["messages"] if m["messageId"] == ours(message_id)]


def events(store, event: str) -> list[dict]:
    return [e for e in store.timeline(CASE)["events"] if e["event"] == event]


def no_id_in_clear(*texts: str) -> None:
    for text in texts:
        for number in (PNR_2, PNR_2[2:], f"{PNR_2[2:8]}-{PNR_2[8:]}", f"{PNR_2[:8]}-{PNR_2[8:]}"):
            assert number not in text


def test_a_pdf_naming_another_citizen_is_held_until_released_then_sent_once(app, client, store, peers, run, make_case):
    intake(app, make_case)
    run()
    letter = text_pdf("Beslut om ditt arende", f"Patient: Ann Annsson {PNR_2[:8]}-{PNR_2[8:]}")
    answer = client.post(MESSAGES, json=reply(messageId="FEL-1", attachments=[pdf_file(letter)]), headers=auth())
    assert answer.status_code == 202 and answer.json["status"] == "held" and answer.json["code"] == "GW047"
    assert "beslut.pdf page 2" in answer.json["message"] and answer.json["sendAfter"] is None
    assert answer.json["guard"]["findings"] == [{"where": "beslut.pdf", "page": 2, "attachment": 0, "kind": "foreign_id",
                                                 "count": 1}]
    no_id_in_clear(answer.get_data(as_text=True))
    run()
    assert in_inbox(peers, "FEL-1") == []  # held: not in the citizen's inbox
    held = events(store, "message_held")
    assert len(held) == 1 and held[0]["status"] == "held" and held[0]["error_code"] == "GW047"
    assert "beslut.pdf page 2" in held[0]["detail"]
    no_id_in_clear(*(str(e["detail"]) for e in store.timeline(CASE)["events"]))
    # the provider's own case and message only
    assert client.post(f"{MESSAGES}/NO-SUCH/release", headers=auth()).json["code"] == "GW032"
    released = client.post(f"{MESSAGES}/FEL-1/release", headers=auth())
    assert released.status_code == 200 and released.json["status"] == "queued", released.json
    run()
    again = client.post(f"{MESSAGES}/FEL-1/release", headers=auth())  # a second confirmation changes nothing
    assert again.status_code == 200 and again.json["status"] == "sent"
    run()
    assert len(in_inbox(peers, "FEL-1")) == 1
    assert sum(1 for r in received(peers) if r["operation"] == "AddMessage" and ours("FEL-1") in str(r)) == 1
    audit = [a for a in store.audit_entries() if a["action"] == "release_message"]
    assert len(audit) == 1 and audit[0]["who"] == "api:demo_rest" and audit[0]["at"]
    assert len(events(store, "message_released")) == 1
    # the same message posted again answers with what is stored
    repeat = client.post(MESSAGES, json=reply(messageId="FEL-1", attachments=[pdf_file(letter)]), headers=auth())
    assert repeat.json["status"] == "queued" and "code" not in repeat.json


def test_a_message_not_held_cannot_be_released_and_a_held_one_can_be_cancelled(app, client, store, peers, run, make_case):
    intake(app, make_case)
    run()
    client.post(MESSAGES, json=reply(messageId="OK-1"), headers=auth())
    refused = client.post(f"{MESSAGES}/OK-1/release", headers=auth())
    assert refused.status_code == 409 and refused.json["code"] == "GW048"
    client.post(MESSAGES, json=reply(messageId="FEL-2", body=f"Till {PNR_2}: svar."), headers=auth())
    assert client.post(f"{MESSAGES}/FEL-2/cancel", headers=auth()).json["status"] == "cancelled"
    run()
    assert in_inbox(peers, "FEL-2") == [] and len(in_inbox(peers, "OK-1")) == 1
    assert client.post(f"{MESSAGES}/FEL-2/release", headers=auth()).json["code"] == "GW048"


@pytest.mark.parametrize("written", [PNR, PNR[2:], f"{PNR[:8]}-{PNR[8:]}", f"{PNR[2:8]}-{PNR[8:]}"])
def test_the_citizens_own_number_is_sent_at_once(app, client, peers, run, make_case, written):
    intake(app, make_case)
    run()
    answer = client.post(MESSAGES, json=reply(messageId="EGEN", attachments=[pdf_file(text_pdf(f"Personnummer {written}"))]),
                         headers=auth())
    assert answer.json["status"] == "queued" and answer.json["guard"]["findings"] == []
    run()
    assert len(in_inbox(peers, "EGEN")) == 1


@pytest.mark.parametrize("written, held", [
    (PNR_2, True),                                 # 12 digits
    (f"{PNR_2[:8]}-{PNR_2[8:]}", True),            # 12 digits with -
    (PNR_2[2:], True),                             # 10 digits
    (f"{PNR_2[2:8]}-{PNR_2[8:]}", True),           # 10 digits with -
    (f"{PNR_2[2:8]}+{PNR_2[8:]}", True),           # 10 digits with + (over 100 years old)
    (SAMORDNING, True),                            # a samordningsnummer (day + 60)
    (f"{PNR_2[:8]}-{PNR_2[8:11]}5", False),        # an invalid check digit: not a person id
    ("19811318-9876", False),                      # no such date
])
def test_forms_of_another_citizens_number(app, client, peers, run, make_case, written, held):
    intake(app, make_case)
    run()
    answer = client.post(MESSAGES, json=reply(messageId="F", attachments=[pdf_file(text_pdf(f"Avser {written} i ärendet"))]),
                         headers=auth())
    assert answer.json["status"] == ("held" if held else "queued"), answer.json
    run()
    assert len(in_inbox(peers, "F")) == (0 if held else 1)


def test_a_foreign_id_in_the_body_is_held(app, client, store, peers, run, make_case):
    intake(app, make_case)
    run()
    answer = client.post(MESSAGES, json=reply(messageId="B", body=f"Svar gällande {PNR_2[2:8]}-{PNR_2[8:]}."), headers=auth())
    assert answer.json["status"] == "held" and answer.json["code"] == "GW047" and "body" in answer.json["message"]
    no_id_in_clear(answer.get_data(as_text=True))
    run()
    assert in_inbox(peers, "B") == []


def test_the_preview_shows_the_very_bytes_that_are_sent(app, client, store, peers, run, make_case):
    intake(app, make_case)
    run()
    letter = text_pdf(f"Journalkopia for {PNR_2}")
    client.post(MESSAGES, json=reply(messageId="P", attachments=[pdf_file(letter, "kopia.pdf")]), headers=auth())
    preview = client.get(f"{MESSAGES}/P", headers=auth())
    assert preview.status_code == 200
    view = preview.json
    assert (view["kind"], view["status"], view["heldByGuard"], view["body"]) == (
        "FINAL_REPLY", "held", True, "Tack, vi har gått igenom ditt ärende.")
    assert view["senderHsaId"] == "SE5566778899-KLIN1" and view["guard"]["findings"][0]["where"] == "kopia.pdf"
    [meta] = view["attachments"]
    assert meta == {"n": 0, "fileName": "kopia.pdf", "mimeType": "application/pdf",
                    "sha256": hashlib.sha256(letter).hexdigest(), "size": len(letter),
                    "href": f"/api/v1/cases/{CASE}/messages/P/attachments/0"}
    shown = client.get(meta["href"], headers=auth())
    assert shown.status_code == 200 and shown.data == letter and shown.mimetype == "application/pdf"
    assert client.get(f"{MESSAGES}/P/attachments/1", headers=auth()).json["code"] == "GW032"
    assert client.get(f"{MESSAGES}/NOPE", headers=auth()).json["code"] == "GW032"
    assert client.get(f"{MESSAGES}/P", headers=auth("soap-token-0123456789")).status_code in (403, 404)
    client.post(f"{MESSAGES}/P/release", headers=auth())
    run()
    [sent] = in_inbox(peers, "P")
    assert sent["attachments"][0]["sha256"] == hashlib.sha256(shown.data).hexdigest()
    assert sent["attachments"][0]["size"] == len(shown.data)


def test_a_scanned_pdf_is_sent_marked_not_checked(app, client, store, peers, run, make_case):
    intake(app, make_case)
    run()
    answer = client.post(MESSAGES, json=reply(messageId="S", attachments=[pdf_file(PDF, "skannad.pdf")]), headers=auth())
    assert answer.json["status"] == "queued"
    assert answer.json["guard"]["findings"] == [{"where": "skannad.pdf", "page": None, "attachment": 0,
                                                 "kind": "not_checked", "count": 1}]
    run()
    assert len(in_inbox(peers, "S")) == 1
    [queued] = [e for e in events(store, "message_queued") if e["message_id"].startswith("P-")]
    assert "not checked" in queued["detail"] and "skannad.pdf" in queued["detail"]


def test_a_scanned_pdf_is_held_when_text_is_required(config_data, peers, make_case):
    app = make_app(config_data, peers, guard={"require_text": True})
    try:
        client, store, worker = app.test_client(), app.extensions["gateway.store"], app.extensions["gateway.worker"]
        intake(app, make_case)
        worker.run_until_idle()
        answer = client.post(MESSAGES, json=reply(messageId="S", attachments=[pdf_file(PDF, "skannad.pdf")]), headers=auth())
        assert answer.json["status"] == "held" and answer.json["code"] == "GW047"
        assert "skannad.pdf" in answer.json["message"] and "no readable text" in answer.json["message"]
        worker.run_until_idle()
        assert in_inbox(peers, "S") == []
        client.post(f"{MESSAGES}/S/release", headers=auth())
        worker.run_until_idle()
        assert len(in_inbox(peers, "S")) == 1
    finally:
        app.extensions["gateway.worker"].stop()
        app.extensions["gateway.store"].close()
