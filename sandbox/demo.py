"""`gateway sandbox`: the gateway, its worker and the simulators together on loopback, and a
few demo cases sent the whole way round.

Role: start the 1177 simulator (``sandbox.national``), the two demo provider systems
(``sandbox.providers``, answering like a clinic) and ``gateway serve`` as child processes on
127.0.0.1, with a config written for them; send demo cases as 1177 would (ProcessCase
built by zeep from the WSDL the gateway serves, with LogicalAddress and a correlation id);
answer a counter-question as the citizen would (ProcessCaseMessage); and print each case's
path as it happens: received, delivered to the provider, receipt in the inbox, answer in
the inbox, closed. ``--once`` exits 0 when every case has completed its loop, non-zero
(saying which case stopped where) otherwise; without it the sandbox keeps running until
Ctrl-C, so the inbox page and the gateway can be looked at.

``--national-profile`` runs the gateway (``national.profile``) and the 1177 simulator
(``--profile``) on another version of 1177's contracts, and the loops are the ones that
profile can carry (read from the gateway's profile registry): with ``mvk-inbox-2.0`` (no
receipts, statuses, kinds or files) the clinics answer with one INFO notice, and the first
case shows that what the profile cannot carry (a final answer with a file, a status) is
refused by the gateway's API with its code.

    python -m sandbox.demo [--once] [--tls] [--port-base 8080 | --free-ports] [--timeout 90] [--data DIR]
                           [--national-profile patientportal-2.0 | mvk-inbox-2.0]

May import: anything (it is never imported by the product; ``gateway sandbox`` runs it as
``python -m sandbox.demo``).

Invariants: every child process runs in its own process group and is stopped (TERM, then
KILL) on exit, Ctrl-C or SIGTERM, so no process is left behind and no port stays bound;
everything listens on 127.0.0.1 only. The sandbox keeps to itself: its config uses its own
mappings (``sandbox/mappings/``) and only the demo targets, never the user's ``mappings/``
or the targets the user added to ``config.example.yaml``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

import clock

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PNR = "191212121212"  # Tolvan Tolvansson, Skatteverket's test personnummer
PNR_2 = "198112189876"
BOARD = "SE2321000016-PN01"
KLIN1 = "SE5566778899-KLIN1"
KLIN2 = "SE5566778899-KLIN2"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415478"
    "9c63f8cfc0000003010100c9fe92ef0000000049454e44ae426082"
)


@dataclass
class DemoCase:
    """One demo case and what has happened to it."""

    title: str
    case_id: str
    unit: str
    case_type: str
    person: str
    text: str
    target: str
    board: bool = False
    location: str | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    sent_at: float = 0.0
    seen: dict[str, float] = field(default_factory=dict)
    answered_question: bool = False
    #: the events that complete the case's loop (what the national profile carries)
    needs: tuple[str, ...] = ("final answer in the inbox", "closed in 1177")
    #: show what the national profile cannot carry being refused, once delivered
    try_refused: bool = False

    @property
    def done(self) -> bool:
        return all(event in self.seen for event in self.needs)

    @property
    def where(self) -> str:
        return max(self.seen, key=self.seen.get) if self.seen else "not sent"


def new_token() -> str:
    """A random bearer token that can never be read as a command-line option (no leading '-')."""
    return "sbx_" + secrets.token_urlsafe(24)


#: What each thing the demo tries that a profile may not carry is called, and how it is sent:
#: (label, API path under the case, body).
REFUSABLE = (
    ("a final answer with a file", "messages",
     {"kind": "FINAL_REPLY", "subject": "Beslut", "body": "Beslutet finns i den bifogade filen.",
      "attachments": [{"fileName": "beslut.pdf", "mimeType": "application/pdf"}]}),
    ("status IN_PROGRESS", "status", {"status": "IN_PROGRESS"}),
)


def profile_loops(profile: str) -> dict[str, Any]:
    """What the demo does on national profile ``profile``, from what the gateway's profile
    carries: receipts only if it carries CONFIRMATION, the full clinic only if it carries
    statuses and final answers (else one INFO notice per case), and which refusals to show."""
    from adapters.national import PROFILES

    carries = PROFILES[profile].carries()
    full = {"update_status", "add_message"} <= carries.actions and {"QUESTION", "FINAL_REPLY"} <= carries.kinds
    return {"receipts": "CONFIRMATION" in carries.kinds, "notices_only": not full, "carries": carries}


def demo_cases(profile: str = "patientportal-2.0") -> list[DemoCase]:
    cases = _demo_cases()
    if not profile_loops(profile)["notices_only"]:
        return cases
    for case in cases:
        case.needs = ("notice in the inbox",)
    first = cases[0]  # to demo_rest, whose answers are pushed to the API
    first.try_refused = True
    first.needs += tuple(f"{label} refused by the gateway" for label, _, _ in REFUSABLE)
    return cases


def _demo_cases() -> list[DemoCase]:
    stamp = clock.SYSTEM.local_time().strftime("%H%M%S")
    return [
        DemoCase("complaint to a clinic", f"DEMO-{stamp}-1", KLIN1, "COMPLAINT", PNR,
                 "Jag fick vänta tre timmar på akuten utan att någon sa något.", "demo_rest"),
        DemoCase("complaint to the patient board (a free-text place only)", f"DEMO-{stamp}-2", BOARD, "COMPLAINT", PNR_2,
                 "Min mamma fick fel information om sin medicin.", "demo_rest", board=True,
                 location="Vårdcentralen i Ekdalen, mottagningen"),
        DemoCase("question with an attachment", f"DEMO-{stamp}-3", KLIN2, "QUESTION", PNR,
                 "Är det här utslaget något jag behöver visa för en läkare? Bild bifogad.", "demo_soap",
                 attachments=[{"fileName": "utslag.png", "mimeType": "image/png", "data": PNG}]),
    ]


# -- HTTP, with or without mutual TLS ------------------------------------------------------------------

#: The session the sandbox itself (1177's side) calls with; ``--tls`` gives it the platform's
#: client certificate and the development CA.
HTTP = requests.Session()


def use_tls(certs: dict[str, Any]) -> None:
    HTTP.verify = str(certs["ca"].cert)
    HTTP.cert = (str(certs["platform"].cert), str(certs["platform"].key))
    HTTP.trust_env = False  # the development CA, whatever REQUESTS_CA_BUNDLE says


# -- processes ----------------------------------------------------------------------------------------


class Processes:
    """The child processes, each in its own process group, stopped together."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")
        process = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **(env or {})})
        self.children.append((name, process))
        return process

    def check(self) -> None:
        for name, process in self.children:
            if process.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace").strip().splitlines()[-8:]
                raise RuntimeError(f"{name} stopped (exit {process.returncode}):\n  " + "\n  ".join(tail))

    def stop(self) -> None:
        for _, process in reversed(self.children):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for _, process in self.children:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
        self.children.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Nothing listens on ``port`` (connections of a previous run in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def wait_for(url: str, processes: Processes, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processes.check()
        try:
            HTTP.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


#: The sandbox's own mappings: the demo units, codes and field maps (a copy of what ships
#: in mappings/, which the user edits for going live).
MAPPINGS = ROOT / "sandbox" / "mappings"
#: The targets the demo provider systems play; any other target of the template is left out.
DEMO_TARGETS = ("demo_rest", "demo_soap")


def write_config(folder: Path, ports: dict[str, int], certs: dict[str, Any] | None = None,
                 template: Path = ROOT / "config.example.yaml", profile: str = "patientportal-2.0") -> Path:
    """Write the sandbox's config to ``folder``: ``template``'s settings with the sandbox's
    database, ports, mappings (``sandbox/mappings``), only the demo targets, and national
    profile ``profile`` (with the receipts on only if it carries them)."""
    data = yaml.safe_load(template.read_text(encoding="utf-8"))
    data["gateway"]["name"] = "1177 integration gateway (sandbox)"
    data["database"]["path"] = str(folder / "gateway.db")
    data["mappings"] = {**(data.get("mappings") or {}), "dir": str(MAPPINGS)}
    targets = data.get("targets") or {}
    missing = [name for name in DEMO_TARGETS if name not in targets]
    if missing:
        raise SystemExit(f"sandbox: {template.name} has no target {', '.join(missing)}; the sandbox needs "
                         f"the demo targets as shipped (targets.demo_rest, targets.demo_soap).")
    data["targets"] = {name: targets[name] for name in DEMO_TARGETS}
    data["logging"]["level"] = "INFO"
    data["worker"]["poll_s"] = 0.5
    data["national"]["endpoint"] = f"http://{HOST}:{ports['national']}/rivta"
    data["national"]["profile"] = profile
    data["outbound"]["confirmations"]["enabled"] = profile_loops(profile)["receipts"]
    rest, soap = data["targets"]["demo_rest"], data["targets"]["demo_soap"]
    rest["base_url"] = f"http://{HOST}:{ports['rest']}/api"
    rest["api"] = {"token": {"$env": "SANDBOX_API_TOKEN"}}
    soap["wsdl"] = str(ROOT / soap["wsdl"])
    soap["endpoint"] = f"http://{HOST}:{ports['soap']}/soap"
    soap["poll"] = {"interval_s": 1, "operation": "GetUpdates"}
    for section in (rest, soap, data["national"]):
        section["retry"] = {"max_attempts": 20, "initial_s": 0.5, "multiplier": 2, "max_s": 5, "jitter": 0.2}
    if certs:  # mutual TLS both ways between the gateway and the 1177 side
        data["server"]["tls"] = {"cert": str(certs["server"].cert), "key": str(certs["server"].key),
                                 "client_ca": str(certs["ca"].cert)}
        data["rivta"] = {"require_client_cert": True, "allowed_consumers": [certs["platform_hsa_id"]]}
        data["national"]["endpoint"] = f"https://localhost:{ports['national']}/rivta"
        data["national"]["tls"] = {"ca_bundle": str(certs["ca"].cert), "client_cert": str(certs["gateway"].cert),
                                   "client_key": str(certs["gateway"].key)}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


# -- 1177's side: sending cases and the citizen's answer -----------------------------------------------------


class Citizen1177:
    """Sends ProcessCase / ProcessCaseMessage as 1177 would, from the WSDLs the gateway serves."""

    def __init__(self, gateway: str, national: str):
        import zeep

        self.gateway, self.national = gateway, national
        from zeep.transports import Transport

        self.session = HTTP
        self.clients = {
            name: zeep.Client(f"{gateway}/rivta/{name}?wsdl", transport=Transport(session=HTTP))
            for name in ("ProcessCase", "ProcessCaseMessage")
        }

    def _post(self, operation: str, address: str, correlation: str, **body: Any) -> str:
        from lxml import etree

        client = self.clients[operation]
        envelope = client.create_message(client.service, operation, _soapheaders={"LogicalAddress": address}, **body)
        ns = f"urn:riv-application:supportprocess:logistics:complaintsandfeedback:{operation}Responder:1"
        answer = self.session.post(
            f"{self.gateway}/rivta", data=etree.tostring(envelope),
            headers={"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": f'"{ns}:{operation}"',
                     "x-skltp-correlation-id": correlation,
                     "x-rivta-original-serviceconsumer-hsaid": "SE165565594230-1000"},
            timeout=30,
        )
        root = etree.fromstring(answer.content)
        code = root.findtext(".//{*}resultCode") or root.findtext(".//faultstring") or f"HTTP {answer.status_code}"
        return code if code == "OK" else f"{code}: {root.findtext('.//{*}message') or ''}"

    def send_case(self, case: DemoCase) -> str:
        now = clock.SYSTEM.local_time()
        body = {
            "caseId": case.case_id, "caseType": case.case_type,
            "receiver": {"hsaId": case.unit, "isPatientBoard": case.board},
            "subjectOfCare": {"personId": {"id": case.person, "type": "1.2.752.129.2.1.3.1"},
                              "contact": {"mobile": "+46701234567", "consentToShare": True}},
            "createdTime": now.strftime("%Y%m%d%H%M%S"), "subject": case.title.capitalize(), "text": case.text,
            "replyPreference": {"wantsReply": True, "channel": "INKORG"}, "attachment": case.attachments,
        }
        if case.case_type == "COMPLAINT":
            body["complaint"] = {"eventDate": (now.date() - dt.timedelta(days=3)).strftime("%Y%m%d"),
                                 "isCareProcess": False, "eventLocationText": case.location}
        HTTP.post(f"{self.national}/_cases", json={"caseId": case.case_id, "subjectOfCareId": case.person,
                                                        "caseType": case.case_type}, timeout=5)
        return self._post("ProcessCase", case.unit, f"demo-{case.case_id}", case=body)

    def try_refused(self, case: DemoCase, token: str) -> list[str]:
        """As the clinic's system would, send what the national profile cannot carry through
        the gateway's API: each should be refused (422) with its code, and nothing stored."""
        from sandbox.answers import pdf

        events = []
        for label, path, body in REFUSABLE:
            body = {**body, "senderUnit": case.unit.rsplit("-", 1)[-1]} if path == "messages" else body
            if "attachments" in body:
                data = base64.b64encode(pdf("Beslut " + case.case_id)).decode("ascii")
                body["attachments"] = [{**a, "data": data} for a in body["attachments"]]
            answer = self.session.post(f"{self.gateway}/api/v1/cases/{case.case_id}/{path}", json=body, timeout=10,
                                       headers={"Authorization": f"Bearer {token}"})
            code = answer.json().get("code") if answer.headers.get("Content-Type", "").startswith("application/json") else None
            events.append((f"{label} refused by the gateway", f"{answer.status_code} {code}") if answer.status_code == 422
                          else (f"{label} NOT refused", f"{answer.status_code} {code}"))
        return events

    def answer_question(self, case: DemoCase) -> str:
        return self._post(
            "ProcessCaseMessage", case.unit, f"demo-{case.case_id}-answer", caseId=case.case_id,
            messageId=f"{case.case_id}-M1", createdTime=clock.SYSTEM.local_time().strftime("%Y%m%d%H%M%S"),
            text="Besvären började i måndags kväll.",
        )


# -- following the cases ---------------------------------------------------------------------------------------


def observe(cases: list[DemoCase], national: str, database: Path) -> list[tuple[DemoCase, str]]:
    """What has newly happened to each case: (case, event) pairs."""
    news: list[tuple[DemoCase, str]] = []
    inbox = HTTP.get(f"{national}/sandbox/inbox", timeout=5).json()
    delivered: dict[str, list[tuple[str, str]]] = {}
    if database.exists():
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
            for case_id, detail, event in db.execute(
                "SELECT case_id, detail, event FROM sync_log WHERE event IN ('delivered', 'dead') AND direction = 'in'"
            ):
                delivered.setdefault(case_id, []).append((event, detail or ""))
    for case in cases:
        found: list[str] = []
        for event, detail in delivered.get(case.case_id, []):
            if event == "dead":
                found.append(f"DEAD at the provider: {detail}")
            elif detail.startswith("deliver_case"):
                provider_id = detail.split("provider case ")[-1] if "provider case" in detail else ""
                found.append(f"delivered to {case.target}" + (f" (its case {provider_id})" if provider_id else ""))
            elif detail.startswith("deliver_message"):
                found.append("the citizen's answer delivered to the provider")
        statuses = [s["status"] for s in inbox["statuses"].get(case.case_id, [])]
        if "IN_PROGRESS" in statuses:
            found.append("in progress in 1177")
        kinds = [m["kind"] for m in inbox["messages"] if m["caseId"] == case.case_id]
        labels = {"CONFIRMATION": "receipt in the inbox", "QUESTION": "counter-question in the inbox",
                  "PARTIAL_REPLY": "partial answer in the inbox", "FINAL_REPLY": "final answer in the inbox",
                  "INFO": "information in the inbox", None: "notice in the inbox"}
        found += [labels[k] for k in kinds if k in labels]
        if "CLOSED" in statuses:
            found.append("closed in 1177")
        for event in found:
            if event not in case.seen:
                case.seen[event] = time.monotonic()
                news.append((case, event))
    return news


def run(args: argparse.Namespace) -> int:
    folder = Path(args.data).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("gateway.db*"):
        old.unlink()
    if args.free_ports:
        ports = {name: free_port() for name in ("gateway", "rest", "soap", "national")}
    else:
        base = args.port_base
        ports = {"gateway": base, "rest": base + 1, "soap": base + 2, "national": base + 3}
        taken = [f"{HOST}:{p}" for p in ports.values() if not port_free(p)]
        if taken:
            print(f"sandbox: {', '.join(taken)} already in use. Stop what uses it, or run with --port-base N "
                  f"(or --free-ports).", file=sys.stderr)
            return 2
    # the bearer token demo_rest and the sandbox's gateway share: $SANDBOX_API_TOKEN, else a new one;
    # it reaches both through the environment, never a command line (where '-…' reads as an option)
    token = os.environ.get("SANDBOX_API_TOKEN") or new_token()
    certs = None
    if args.tls:
        import devcerts

        ca = devcerts.DevCA(folder / "certs")
        certs = {"ca": ca.issued, "server": ca.server(), "platform": ca.client(devcerts.PLATFORM_HSA_ID),
                 "gateway": ca.client(devcerts.GATEWAY_HSA_ID), "platform_hsa_id": devcerts.PLATFORM_HSA_ID}
        use_tls(certs)
    profile = args.national_profile
    config = write_config(folder, ports, certs, profile=profile)
    urls = {name: f"http://{HOST}:{port}" for name, port in ports.items()}
    if certs:
        urls["gateway"] = f"https://localhost:{ports['gateway']}"
        urls["national"] = f"https://localhost:{ports['national']}"
    national_tls = ["--tls-cert", str(certs["server"].cert), "--tls-key", str(certs["server"].key),
                    "--tls-client-ca", str(certs["ca"].cert)] if certs else []
    provider_env = {"REQUESTS_CA_BUNDLE": str(certs["ca"].cert)} if certs else {}
    processes = Processes(folder)
    started = time.monotonic()

    def stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        print(f"sandbox: starting on {HOST} (logs and database in {folder}/)", flush=True)
        processes.start("national", [sys.executable, "-m", "sandbox.national", "--port", str(ports["national"]), "--quiet",
                                     "--profile", profile, *national_tls])
        processes.start("providers", [
            sys.executable, "-m", "sandbox.providers", "--rest-port", str(ports["rest"]), "--soap-port", str(ports["soap"]),
            "--answer-delay", str(args.answer_delay), "--question-every", "2", "--gateway-url", urls["gateway"],
            "--quiet", *(["--notices-only"] if profile_loops(profile)["notices_only"] else [])],
            env={**provider_env, "DEMO_REST_API_TOKEN": token})
        processes.start("gateway", [sys.executable, "-m", "cli", "serve", "--config", str(config),
                                    "--bind", f"{HOST}:{ports['gateway']}"], env={"SANDBOX_API_TOKEN": token})
        for url in (f"{urls['national']}/sandbox/inbox", f"{urls['rest']}/_received", f"{urls['soap']}/_received",
                    f"{urls['gateway']}/rivta"):
            wait_for(url, processes)
        print(f"sandbox: all up in {time.monotonic() - started:.1f} s: the 1177 simulator, demo_rest, demo_soap "
              f"and the gateway with its worker" + (", mutual TLS between 1177 and the gateway" if certs else "")
              + f"; national profile {profile}", flush=True)
        citizen = Citizen1177(urls["gateway"], urls["national"])
        cases = demo_cases(profile)
        for case in cases:
            case.sent_at = time.monotonic()
            outcome = citizen.send_case(case)
            label = f"received by the gateway ({outcome})"
            case.seen[label] = time.monotonic()
            print(f"  {case.case_id}  +{0:5.2f} s  {case.title}: {label}", flush=True)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and not all(c.done for c in cases):
            processes.check()
            for case, event in observe(cases, urls["national"], folder / "gateway.db"):
                print(f"  {case.case_id}  +{case.seen[event] - case.sent_at:5.2f} s  {event}", flush=True)
                if event.startswith(f"delivered to {case.target}") and case.try_refused:
                    case.try_refused = False
                    for label, how in citizen.try_refused(case, token):
                        case.seen[label] = time.monotonic()
                        print(f"  {case.case_id}  +{case.seen[label] - case.sent_at:5.2f} s  {label} ({how})", flush=True)
                if event == "counter-question in the inbox" and not case.answered_question:
                    case.answered_question = True
                    outcome = citizen.answer_question(case)
                    label = f"the citizen answered the question ({outcome})"
                    case.seen[label] = time.monotonic()
                    print(f"  {case.case_id}  +{case.seen[label] - case.sent_at:5.2f} s  {label}", flush=True)
            time.sleep(0.2)
        unfinished = [c for c in cases if not c.done]
        print()
        for case in cases:
            state = "completed its loop" if case.done else f"STOPPED at: {case.where}"
            took = max(case.seen.values()) - case.sent_at if case.seen else 0
            print(f"sandbox: {case.case_id} {case.title}: {state} ({took:.1f} s)")
        print(f"sandbox: the citizen's inbox  {urls['national']}/sandbox/inbox.html  (JSON: /sandbox/inbox)")
        print(f"sandbox: the gateway          {urls['gateway']}/rivta  (provider API {urls['gateway']}/api/openapi.json)")
        print(f"sandbox: demo providers       {urls['rest']}/_received  {urls['soap']}/_received")
        if args.once:
            return 1 if unfinished else 0
        print("sandbox: running; Ctrl-C stops everything.", flush=True)
        while True:
            processes.check()
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nsandbox: stopping", flush=True)
        return 0
    except (RuntimeError, requests.RequestException) as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    finally:
        processes.stop()
        print("sandbox: stopped; nothing left running.", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway sandbox", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--once", action="store_true", help="exit when the demo cases are done: 0 if all completed")
    parser.add_argument("--port-base", type=int, default=8080, help="gateway on N, demo_rest N+1, demo_soap N+2, 1177 N+3")
    parser.add_argument("--free-ports", action="store_true", help="use any free ports instead")
    parser.add_argument("--timeout", type=float, default=90, help="seconds the demo cases may take")
    parser.add_argument("--answer-delay", type=float, default=1.0, help="seconds the demo clinics take per answer")
    parser.add_argument("--data", default=str(ROOT / "data" / "sandbox"), help="folder for the config, database and logs")
    parser.add_argument("--tls", action="store_true",
                        help="mutual TLS between the 1177 side and the gateway, both ways (development certificates)")
    from adapters.national import DEFAULT_PROFILE, PROFILES

    parser.add_argument("--national-profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE,
                        help="the version of 1177's contracts (the gateway's national.profile; default %(default)s)")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
