"""Liveness under a hanging provider (issue 18, item 3): how long `/health/live` takes while
eight GetMedicationList calls wait for a provider that never answers.

Starts `gateway serve` (8 threads, no worker) of the checkout at ROOT on loopback, with
demo_rest's medication lookup pointed at a server that holds every request, fires eight
calls at once, times one `/health/live` a second later, and prints the figure and what the
eight calls were answered with.

    .venv/bin/python bench/medication_attack.py . /tmp/attack      # this checkout
    .venv/bin/python bench/medication_attack.py /tmp/old /tmp/old-attack   # another one, e.g. git worktree add /tmp/old 686feca
"""

import sys, time, threading, subprocess, os, signal, copy, concurrent.futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
ROOT = sys.argv[1]
sys.path.insert(0, ROOT); sys.path.insert(0, ROOT + "/tests")
import requests, yaml, zeep
from lxml import etree
from conftest import example_data, write_config, free_port, KLIN1, PNR
import rivta
from pathlib import Path
release = threading.Event()
class Hang(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        release.wait(60); self.send_response(200); self.end_headers()
srv = ThreadingHTTPServer(("127.0.0.1", 0), Hang); threading.Thread(target=srv.serve_forever, daemon=True).start()
folder = Path(sys.argv[2]); folder.mkdir(parents=True, exist_ok=True)
data = example_data(folder)
data["targets"]["demo_rest"]["base_url"] = f"http://127.0.0.1:{srv.server_address[1]}/api"
write_config(folder, data)
port = free_port()
p = subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {ROOT!r}); import cli; cli.main()",
                      "serve", "--config", str(folder / "config.yaml"), "--bind", f"127.0.0.1:{port}", "--no-worker"],
                     cwd=ROOT, stdout=open(folder / "log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
base = f"http://127.0.0.1:{port}"
for _ in range(300):
    try:
        requests.get(base + "/health/live", timeout=1); break
    except Exception: time.sleep(0.1)
client = zeep.Client(str(rivta.GET_MEDICATION_LIST.wsdl_path))
env = etree.tostring(client.create_message(client.service, "GetMedicationList", _soapheaders={"LogicalAddress": KLIN1},
      receiver={"hsaId": KLIN1}, subjectOfCare={"personId": {"id": PNR, "type": "1.2.752.129.2.1.3.1"}}))
def ask(_):
    try:
        r = requests.post(base + "/rivta", data=env, headers={"Content-Type": "text/xml"}, timeout=30)
        return r.text.split("faultstring>")[1][:5] if "faultstring" in r.text else r.status_code
    except Exception as e: return type(e).__name__
pool = concurrent.futures.ThreadPoolExecutor(8); futs = [pool.submit(ask, i) for i in range(8)]
time.sleep(1.0)
t = time.monotonic()
try:
    live = requests.get(base + "/health/live", timeout=20).status_code
except Exception as e:
    live = type(e).__name__
took = time.monotonic() - t
print(f"/health/live during 8 medication calls to a hanging provider: {live} in {took:.3f} s; calls: {[f.result() for f in futs]}")
release.set(); os.killpg(p.pid, signal.SIGTERM); p.wait(10)
