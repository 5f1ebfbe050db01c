"""The ops view of the messages the wrong-patient guard holds (rule 14; issue 17, item 2): the
list, the preview of a message and its files, and a reader's release (sent to the 1177
simulator once) or cancel; the roles, CSRF and the audit log. (The same in a real browser:
test_ops_browser.)"""

from __future__ import annotations

import copy
import hashlib

import pytest
from conftest import PNR_2, built_app
from test_ops import API_TOKEN, build_app, csrf, ops_config, sign_in
from test_way_back import inbox, intake, national_url, peers, reply, rest_url  # noqa: F401 - fixtures
from test_wrong_patient_guard import no_id_in_clear, pdf_file, text_pdf

#: about Swedish dates (the case is dated today): `make test` also runs these at set instants
pytestmark = pytest.mark.dates

CASE = "1177-C-0001"
LETTER = text_pdf("Beslut om ditt arende", f"Patient: Ann Annsson {PNR_2[:8]}-{PNR_2[8:]}")


@pytest.fixture
def happ(config_data, peers):
    data = ops_config(config_data)
    data["national"]["endpoint"] = f"{peers['national']}/rivta"
    data["targets"]["demo_rest"]["base_url"] = f"{peers['rest']}/api"
    with built_app(copy.deepcopy(data), build_app) as app:
        yield app


@pytest.fixture
def held(happ, make_case):
    """A final answer whose PDF names another citizen: held by the guard. Its gateway id."""
    intake(happ, make_case)
    happ.extensions["gateway.worker"].run_until_idle()
    answer = happ.test_client().post(f"/api/v1/cases/{CASE}/messages", headers={"Authorization": f"Bearer {API_TOKEN}"},
                                     json=reply(messageId="FEL-1", attachments=[pdf_file(LETTER)]))
    assert answer.status_code == 202 and answer.json["status"] == "held", answer.json
    (row,) = happ.extensions["gateway.store"].outbox_list(status="held")
    return row["ref_id"]


def preview_path(message_id: str) -> str:
    return f"/ops/cases/{CASE}/messages/{message_id}"


def sent(peers) -> list[dict]:
    return inbox(peers, CASE)["messages"]


def test_a_reader_previews_a_held_message_and_its_file_then_releases_it_and_it_is_sent_once(happ, held, peers):
    store, worker = happ.extensions["gateway.store"], happ.extensions["gateway.worker"]
    rita = sign_in(happ, "rita")
    dashboard = rita.get("/ops/").get_data(as_text=True)
    assert 'id="held-count">1<' in dashboard
    listing = rita.get("/ops/held").get_data(as_text=True)
    assert "beslut.pdf page 2" in listing and preview_path(held) in listing
    page = rita.get(preview_path(held))
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Tack, vi har gått igenom ditt ärende." in text and "Held by the wrong-patient guard (GW047)" in text
    assert "beslut.pdf page 2" in text and hashlib.sha256(LETTER).hexdigest() in text
    no_id_in_clear(text)  # the guard names the place, never the other citizen's number
    file = rita.get(f"{preview_path(held)}/files/0")
    assert file.status_code == 200 and file.data == LETTER and "attachment" in file.headers["Content-Disposition"]

    # not confirmed: nothing happens
    token = csrf(rita, preview_path(held))
    refused = rita.post(f"{preview_path(held)}/release", data={"csrf_token": token}, follow_redirects=True)
    assert "Nothing was done" in refused.get_data(as_text=True)
    worker.run_until_idle()
    assert sent(peers) == [] and store.outbox_list(status="held")
    # confirmed: released, sent once
    done = rita.post(f"{preview_path(held)}/release", data={"csrf_token": token, "confirmed": "yes"},
                     follow_redirects=True)
    assert "Released: the message is sent" in done.get_data(as_text=True)
    worker.run_until_idle()
    again = rita.post(f"{preview_path(held)}/release", data={"csrf_token": token, "confirmed": "yes"})
    assert again.status_code == 302  # a second confirmation changes nothing
    worker.run_until_idle()
    (message,) = sent(peers)
    assert [a["sha256"] for a in message["attachments"]] == [hashlib.sha256(LETTER).hexdigest()]
    assert 'id="message-status">sent<' in rita.get(preview_path(held)).get_data(as_text=True)
    audit = [(e["who"], e["action"]) for e in store.audit_entries()]
    assert ("rita", "read_message") in audit and ("rita", "download") in audit
    assert [who for who, action in audit if action == "release_message"] == ["rita (ops)"]
    assert [e["role"] for e in store.audit_entries() if e["action"] == "release_message"] == ["reader"]
    (released,) = [e for e in store.timeline(CASE)["events"] if e["event"] == "message_released"]
    assert "released by rita (ops)" in released["detail"]


def test_a_monitor_sees_that_a_message_is_held_but_not_what_it_says_and_cannot_release_it(happ, held, peers):
    store = happ.extensions["gateway.store"]
    mona = sign_in(happ, "mona")
    listing = mona.get("/ops/held").get_data(as_text=True)
    assert held in listing and "readers only" in listing
    assert "beslut.pdf" not in listing and preview_path(held) not in listing
    assert mona.get(preview_path(held)).status_code == 403
    assert mona.get(f"{preview_path(held)}/files/0").status_code == 403
    token = csrf(mona, "/ops/held")
    assert mona.post(f"{preview_path(held)}/release", data={"csrf_token": token, "confirmed": "yes"}).status_code == 403
    happ.extensions["gateway.worker"].run_until_idle()
    assert sent(peers) == [] and len(store.outbox_list(status="held")) == 1


def test_a_release_without_the_forms_csrf_token_is_refused(happ, held, peers):
    rita = sign_in(happ, "rita")
    answer = rita.post(f"{preview_path(held)}/release", data={"confirmed": "yes"})
    assert answer.status_code == 400 and "Form refused" in answer.get_data(as_text=True)
    happ.extensions["gateway.worker"].run_until_idle()
    assert sent(peers) == [] and len(happ.extensions["gateway.store"].outbox_list(status="held")) == 1


def test_a_reader_cancels_a_held_message_and_it_is_never_sent(happ, held, peers):
    store = happ.extensions["gateway.store"]
    rita = sign_in(happ, "rita")
    token = csrf(rita, preview_path(held))
    done = rita.post(f"{preview_path(held)}/cancel", data={"csrf_token": token, "confirmed": "yes"},
                     follow_redirects=True)
    assert "Cancelled: the message will never be sent" in done.get_data(as_text=True)
    happ.extensions["gateway.worker"].run_until_idle()
    assert sent(peers) == [] and store.outbox_list(status="held") == []
    page = rita.get(preview_path(held)).get_data(as_text=True)
    assert 'id="message-status">cancelled<' in page and 'id="release"' not in page and 'id="cancel"' not in page
    late = rita.post(f"{preview_path(held)}/release", data={"csrf_token": token, "confirmed": "yes"},
                     follow_redirects=True)
    assert "Nothing was done: GW048" in late.get_data(as_text=True)
    assert [e["who"] for e in store.audit_entries() if e["action"] == "cancel_message"] == ["rita"]


def test_an_unknown_message_or_file_is_404(happ, held):
    rita = sign_in(happ, "rita")
    assert rita.get(preview_path("NO-SUCH")).status_code == 404
    assert rita.get(f"{preview_path(held)}/files/1").status_code == 404
    assert rita.get(f"{preview_path(held)}/files/x").status_code == 404
    assert rita.get(f"/ops/cases/OTHER-CASE/messages/{held}").status_code == 404  # a message names its own case
