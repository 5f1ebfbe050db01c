// node-soap (npm `soap`, pinned in package.json), a SOAP client the project did not write,
// for tests/test_conformance_clients.py. Reads a JSON list of calls on stdin:
//   [{"wsdl": URL, "operation": "PingForConfiguration", "args": {...}, "logicalAddress": "SE..."}]
// builds a client from each WSDL (as a node-soap user does: soap.createClientAsync), sends
// LogicalAddress as a SOAP header with client.addSoapHeader, and prints a JSON list of
//   {"ok": bool, "request": the XML sent, "response": the XML received, "error": text}.
'use strict';
const soap = require('soap');

const REGISTRY_NS = 'urn:riv:itintegration:registry:1';

function escapeXml(text) {
  return String(text).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

async function call(job) {
  const outcome = { ok: false, request: null, response: null, error: null };
  let client = null;
  try {
    client = await soap.createClientAsync(job.wsdl);
    if (job.logicalAddress) {
      client.addSoapHeader(
        `<rgy:LogicalAddress xmlns:rgy="${REGISTRY_NS}">${escapeXml(job.logicalAddress)}</rgy:LogicalAddress>`);
    }
    const [, raw] = await client[`${job.operation}Async`](job.args);
    outcome.ok = true;
    outcome.response = raw;
  } catch (error) {
    outcome.error = String(error && error.message ? error.message : error).slice(0, 2000);
    outcome.response = error && error.body ? String(error.body) : null;
  }
  outcome.request = client ? client.lastRequest || null : null;
  if (client && outcome.response === null) outcome.response = client.lastResponse || null;
  return outcome;
}

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const jobs = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  const results = [];
  for (const job of jobs) results.push(await call(job));  // in order: a message follows its case
  process.stdout.write(JSON.stringify(results));
}

main().catch((error) => { process.stderr.write(String(error && error.stack || error)); process.exit(2); });
