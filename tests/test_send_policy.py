"""Who may attach, and where (issue 17, items 3 and 4): each clinic decides in which case
types citizens attach files (rule 12), and a reply's sender role limits what it may carry
(rule 13)."""

from __future__ import annotations

import copy
import shutil

import pytest
import yaml
from conftest import JPEG, KLIN1, PNG, ROOT
from test_nothing_stranded import soap
from test_way_back import app, attachment, auth, external, intake, make_app, national_url, peers, reply, rest_url  # noqa: F401

QUESTION = {"caseType": "QUESTION", "complaint": None}
PNG_FILE = [{"fileName": "bild.png", "mimeType": "image/png", "data": PNG}]


@pytest.fixture
def strict_app(config_data, peers, tmp_path):
    folder = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", folder)
    units = yaml.safe_load((folder / "units.yaml").read_text())
    for unit in units["units"]:
        if unit["hsa_id"] == KLIN1:
            unit["citizen_attachments"] = ["COMPLAINT"]
    (folder / "units.yaml").write_text(yaml.safe_dump(units, allow_unicode=True))
    data = copy.deepcopy(config_data)
    data["mappings"]["dir"] = str(folder)
    app = make_app(data, peers)
    yield app
    app.extensions["gateway.store"].close()


def test_a_clinic_that_takes_files_only_in_complaints_refuses_a_question_with_a_png(strict_app, make_case, make_message):
    store = strict_app.extensions["gateway.store"]
    refused = soap(strict_app, make_case(caseId="Q-FILES", attachment=PNG_FILE, **QUESTION))
    assert refused["resultCode"] == "ERROR" and refused["subCode"] == "GW045"
    assert KLIN1 in refused["message"] and "QUESTION" in refused["message"]
    assert store.case_row("Q-FILES") is None
    assert soap(strict_app, make_case(caseId="Q-PLAIN", attachment=None, **QUESTION))["resultCode"] == "OK"
    assert soap(strict_app, make_case(caseId="C-FILES", attachment=PNG_FILE))["resultCode"] == "OK"  # a complaint
    # a follow-up with a file in the question: refused; in the complaint: taken
    late = soap(strict_app, make_message(caseId="Q-PLAIN", messageId="M-Q"))
    assert late["resultCode"] == "ERROR" and late["subCode"] == "GW045"
    assert soap(strict_app, make_message(caseId="C-FILES", messageId="M-C"))["resultCode"] == "OK"


@pytest.mark.parametrize("role, kind, status", [
    ("RECEIVER", "FINAL_REPLY", 422), ("RECEIVER", "PARTIAL_REPLY", 202),
    ("HANDLER", "FINAL_REPLY", 202), ("HANDLER", "QUESTION", 202), ("HANDLER", "INFO", 422),
])
def test_the_senders_role_decides_what_it_may_attach(app, make_case, role, kind, status):
    intake(app, make_case, **QUESTION)
    body = reply(kind, sentBy={"role": role, "name": "Anna Andersson"}, attachments=[attachment()])
    answer = app.test_client().post("/api/v1/cases/1177-C-0001/messages", json=body, headers=auth())
    assert answer.status_code == status, answer.json
    if status == 422:
        assert answer.json["code"] == "GW046" and answer.json["field"] == "attachments"
    else:
        stored = app.extensions["gateway.store"].db.execute(
            "SELECT content FROM messages WHERE direction = 'out'").fetchone()[0]
        assert '"sent_by_role":"%s"' % role in stored and "Anna Andersson" in stored  # kept with the message


def test_a_counter_question_only_in_a_case_a_citizen_started(app):
    client = app.test_client()
    case_id = client.post("/api/v1/cases", json=external(), headers=auth()).json["caseId"]
    asked = client.post(f"/api/v1/cases/{case_id}/messages", json=reply("QUESTION", sentBy={"role": "HANDLER"}),
                        headers=auth())
    assert asked.status_code == 422 and asked.json["code"] == "GW046" and asked.json["field"] == "kind"
    told = client.post(f"/api/v1/cases/{case_id}/messages", json=reply("INFO", sentBy={"role": "HANDLER"}),
                       headers=auth())
    assert told.status_code == 202
    bad = client.post(f"/api/v1/cases/{case_id}/messages", json=reply("INFO", sentBy={"role": "BOSS"}), headers=auth())
    assert bad.status_code == 422 and bad.json["field"] == "sentBy.role"
