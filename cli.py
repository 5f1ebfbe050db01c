"""The ``gateway`` command: a thin click layer over the library calls of ``gateway.py``.

Role: parse options, call one library function per command, print what it returns (text,
or JSON with ``--json``) and exit with its status: 0 done, 1 a problem found, 2 a usage or
config error. No command orchestrates work of its own (as sqlite-utils' CLI is built over
its library).

May import: gateway (and what it builds: the objects it returns), errors.

Invariants: every error printed is a ``GatewayError``'s text (a ``GW0xx`` code and what to
do), never a traceback; nothing here reads or writes the database but through the store
``gateway.open_store`` returns.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

import gateway
from errors import GatewayError, MappingError

if TYPE_CHECKING:
    from config import Config
    from store import Store


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=gateway.CONFIG_ENV,
    required=True,
    help=f"The YAML config file (default: ${gateway.CONFIG_ENV}).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _fail(exc: GatewayError | str, status: int = 2) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
    sys.exit(status)


def _load_or_exit(config_path: Path) -> Config:
    try:
        return gateway.load_config(config_path)
    except GatewayError as exc:
        _fail(exc)


def _open_store(config_path: Path) -> tuple[Config, Store]:
    cfg = _load_or_exit(config_path)
    try:
        store = gateway.open_store(cfg)
    except GatewayError as exc:
        _fail(exc)
    click.get_current_context().call_on_close(store.close)  # PostgreSQL: the pool's connections end with the command
    return cfg, store


def _who() -> str:
    return f"cli:{os.environ.get('USER') or os.environ.get('LOGNAME') or 'unknown'}"


def _emit(as_json: bool, data: Any, text: str) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str) if as_json else text)


@click.group()
@click.version_option(gateway.version(), prog_name="gateway")
def cli() -> None:
    """1177 integration gateway: receives 1177 cases over RIV-TA and forwards them to your own system."""


@cli.command()
@config_option
@click.option("--bind", default=None, help="HOST:PORT to listen on (default: server.bind from the config).")
@click.option("--worker/--no-worker", "run_worker", default=True,
              help="Run the delivery worker as a process of its own beside the server processes.")
def serve(config_path: Path, bind: str | None, run_worker: bool) -> None:
    """Serve the gateway with gunicorn (the RIV-TA endpoint and, by default, the worker).

    The worker runs as a process of its own, which the server's master restarts if it
    dies. SIGHUP (systemctl reload) loads the mapping files again: checked first, and put
    in force only if nothing is wrong; otherwise the gateway goes on with the ones it had."""
    cfg = _load_or_exit(config_path)
    gateway.configure_logging(cfg)
    try:
        mappings = gateway.prepare_serve(cfg)
    except GatewayError as exc:
        _fail(exc)
    gateway.serve(cfg, bind, run_worker, mappings)


@cli.command()
@config_option
def worker(config_path: Path) -> None:
    """Run only the delivery worker (no HTTP), until SIGTERM or SIGINT.

    For a worker on its own (beside 'gateway serve --no-worker', or on another machine
    on the same PostgreSQL database). SIGHUP loads the mapping files again, as serve does."""
    cfg = _load_or_exit(config_path)
    gateway.configure_logging(cfg)
    try:
        mappings = gateway.prepare_worker(cfg)
        gateway.run_worker(cfg, mappings)
    except GatewayError as exc:
        _fail(exc)


@cli.command()
@config_option
@click.option("--from-sqlite", "from_sqlite", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Copy this SQLite store (e.g. data/gateway.db) with its history into the empty PostgreSQL "
                   "database of database.url.")
def migrate(config_path: Path, from_sqlite: Path | None) -> None:
    """Create or upgrade the database schema (or, with --from-sqlite, move a SQLite store to PostgreSQL)."""
    cfg = _load_or_exit(config_path)
    if from_sqlite is not None:
        try:
            copied = gateway.migrate_from_sqlite(cfg, from_sqlite)
        except GatewayError as exc:
            _fail(exc)
        click.echo(f"copied {from_sqlite} into {cfg.database.url}: "
                   + ", ".join(f"{table} {count}" for table, count in copied.items() if count))
        return
    try:
        applied = gateway.migrate(cfg)
    except GatewayError as exc:
        _fail(exc)
    click.echo(f"database {cfg.database.url or cfg.database.path}: "
               + (f"applied {', '.join(applied)}" if applied else "up to date"))


@cli.command()
@config_option
def check(config_path: Path) -> None:
    """Validate the config, the mappings, the contracts and the database; exit 1 on any problem."""
    failures = 0
    for finding in gateway.check(config_path):
        failures += finding.status == "FAIL"
        click.echo(f"{finding.status:<4} {finding.text}")
    if failures:
        click.echo(f"{failures} problem(s) found.", err=True)
        sys.exit(1)
    click.echo("all checks passed.")


@cli.group()
def target() -> None:
    """Pause or resume delivery to a target (a provider system under 'targets:')."""


def _target_store(config_path: Path, name: str) -> Store:
    cfg, store = _open_store(config_path)
    if name not in cfg.targets:
        store.close()
        _fail(f"there is no target '{name}' (known: {', '.join(sorted(cfg.targets))}).")
    return store


@target.command("pause")
@config_option
@click.argument("name")
@json_option
def target_pause(config_path: Path, name: str, as_json: bool) -> None:
    """Stop delivering to target NAME (its rows wait; nothing is lost)."""
    store = _target_store(config_path, name)
    store.set_paused(name, True, by=_who())
    store.audit(_who(), "cli", "pause", f"target {name}")
    _emit(as_json, {"target": name, "paused": True},
          f"target {name} paused: its deliveries wait until 'gateway target resume {name}'.")


@target.command("resume")
@config_option
@click.argument("name")
@json_option
def target_resume(config_path: Path, name: str, as_json: bool) -> None:
    """Deliver to target NAME again."""
    store = _target_store(config_path, name)
    store.set_paused(name, False, by=_who())
    store.audit(_who(), "cli", "resume", f"target {name}")
    _emit(as_json, {"target": name, "paused": False}, f"target {name} resumed.")


@cli.command("log")
@config_option
@click.option("--case-id")
@click.option("--hsa-id")
@click.option("--target", "target_name")
@click.option("--direction", type=click.Choice(["in", "out"]))
@click.option("--status")
@click.option("--error-code")
@click.option("--event")
@click.option("--since", help="ISO time, e.g. 2026-11-26T08:00 (UTC)")
@click.option("--until", help="ISO time (UTC), exclusive")
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
def log_command(config_path: Path, case_id: str | None, hsa_id: str | None, target_name: str | None,
                direction: str | None, status: str | None, error_code: str | None, event: str | None,
                since: str | None, until: str | None, limit: int, as_json: bool) -> None:
    """Search the sync log, newest first (metadata only, like the ops view)."""
    _, store = _open_store(config_path)
    rows = store.search_log(case_id=case_id, hsa_id=hsa_id, target=target_name, direction=direction, status=status,
                            error_code=error_code, event=event, since=_iso(since), until=_iso(until), limit=limit)
    lines = [f"{r['at']}  {r['direction']:<3} {r['event']:<20} {r['status']:<8} {r['target'] or '-':<10} "
             f"{r['case_id'] or '-':<24} {r['error_code'] or '':<6} {r['detail'] or ''}" for r in rows]
    _emit(as_json, rows, "\n".join(lines) or "no rows match.")


def _iso(value: str | None) -> str | None:
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        _fail(f"'{value}' is not an ISO date and time (e.g. 2026-11-26T08:00).")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return gateway.timestamp(moment)


@cli.group("case")
def case_group() -> None:
    """Look at one case."""


@case_group.command("show")
@config_option
@click.argument("case_id")
@click.option("--content", is_flag=True, help="Also the citizen's and the care side's texts (you must have that right).")
@json_option
def case_show(config_path: Path, case_id: str, content: bool, as_json: bool) -> None:
    """The whole timeline of CASE_ID in both directions, with every attempt."""
    _, store = _open_store(config_path)
    try:
        found = store.find_case(case_id)  # the gateway's id or 1177's
        detail = store.case_detail(found["case_id"] if found else case_id, with_content=content)
    except GatewayError as exc:
        _fail(exc, 1)
    if content:
        store.audit(_who(), "cli", "read content", f"case {case_id}")
    _emit(as_json, detail, "\n".join(_case_lines(detail, content)))


def _case_lines(detail: dict[str, Any], content: bool) -> list[str]:
    case = detail["case"]
    lines = [f"case {case['case_id']} ({case['origin']}, {case['case_type']}) to {case['receiver_hsa_id']} "
             f"→ target {case['target']} unit {case['provider_unit_code']}; provider case {case['provider_case_id'] or '-'}; "
             f"1177 case {case['national_case_id'] or '-'}; status {case['status']}, in 1177 {case['citizen_status'] or '-'}"]
    for row in detail["outbox"]:
        lines.append(f"  outbox {row['id']} {row['action']} → {row['target']}: {row['status']}"
                     + (f" ({row['last_error_code']} {row['last_error']})" if row["last_error_code"] else "")
                     + (f", BLOCKED behind dead row {row['blocked_by']}" if row.get("blocked_by") else ""))
        for a in row["attempts"]:
            lines.append(f"    attempt {a['attempt']} {a['started_at']} {a['duration_ms']} ms {a['outcome']}"
                         f" {a['status_code'] or ''} {a['error_code'] or ''} {a['detail'] or ''}".rstrip())
            came_back = a.get("response")
            if came_back:  # what the target answered (person ids masked); its body is content
                lines.append(f"      came back: HTTP {came_back.get('status') or '?'}"
                             + "".join(f"; {k}: {v}" for k, v in (came_back.get("headers") or {}).items()))
                body = (came_back.get("body") or "").strip()
                if body and not content:
                    came_back["body"] = None
                    lines.append(f"      | ({len(body)} characters of body: --content shows them)")
                elif body:
                    lines.extend("      | " + line for line in body.splitlines()[:60])
                    if came_back.get("truncated"):
                        lines.append("      | … (only the first 4 KB are kept)")
    for e in detail["events"]:
        lines.append(f"  {e['at']} {e['direction']} {e['event']} {e['status']} {e['detail'] or ''}".rstrip())
    if content and detail.get("content"):
        lines.append(f"  text: {detail['content'].get('text')}")
    return lines


@cli.group("outbox")
def outbox_group() -> None:
    """List, replay or cancel deliveries (dead letters above all)."""


@outbox_group.command("list")
@config_option
@click.option("--status", default="dead", show_default=True,
              type=click.Choice(["pending", "in_flight", "done", "dead", "cancelled", "blocked", "all"]),
              help="'blocked': rows waiting behind a dead row of their case.")
@click.option("--target", "target_name")
@click.option("--limit", type=int, default=100, show_default=True)
@json_option
def outbox_list(config_path: Path, status: str, target_name: str | None, limit: int, as_json: bool) -> None:
    """Outbox rows, newest first (default: the dead ones)."""
    _, store = _open_store(config_path)
    rows = store.outbox_list(status=None if status == "all" else status, target=target_name, limit=limit)
    lines = [f"{r['id']:>6}  {r['status']:<9} {r['action']:<16} {r['target']:<10} {r['case_id']:<24} "
             f"attempts {r['attempts']}  {r['last_error_code'] or ''} {r['last_error'] or ''}"
             + (f"  BLOCKED behind dead row {r['blocked_by']}" if r.get("blocked_by") else "") for r in rows]
    _emit(as_json, rows, "\n".join(lines) or f"no {status} rows.")


def _outbox_action(config_path: Path, ids: tuple[int, ...], action: str, as_json: bool) -> None:
    _, store = _open_store(config_path)
    results = {}
    for outbox_id in ids:
        done = store.replay(outbox_id, by=_who()) if action == "replay" else store.cancel(outbox_id, by=_who())
        results[outbox_id] = done
        if done:
            store.audit(_who(), "cli", action, f"outbox {outbox_id}")
    past = {"replay": "replayed", "cancel": "cancelled"}[action]
    text = "\n".join(f"outbox {i}: {past if ok else 'not ' + past + ' (no such row in a state that allows it)'}"
                     for i, ok in results.items())
    _emit(as_json, [{"id": i, past: ok} for i, ok in results.items()], text)
    if not all(results.values()):
        sys.exit(1)


@outbox_group.command("replay")
@config_option
@click.argument("ids", nargs=-1, type=int, required=True)
@json_option
def outbox_replay(config_path: Path, ids: tuple[int, ...], as_json: bool) -> None:
    """Put dead rows back in the queue (their attempts are kept; the replay is logged)."""
    _outbox_action(config_path, ids, "replay", as_json)


@outbox_group.command("cancel")
@config_option
@click.argument("ids", nargs=-1, type=int, required=True)
@json_option
def outbox_cancel(config_path: Path, ids: tuple[int, ...], as_json: bool) -> None:
    """Give up pending or dead rows for good."""
    _outbox_action(config_path, ids, "cancel", as_json)


@cli.group("certs")
def certs_group() -> None:
    """Certificates for development and tests."""


@certs_group.command("dev")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--consumer", "consumers", multiple=True,
              help="An HSA-id to make a client certificate for (repeatable). "
                   "Default: the platform's SE165565594230-1000 and the gateway's SE5566778899-GW01.")
def certs_dev(folder: Path, consumers: tuple[str, ...]) -> None:
    """Make a local test CA, a server certificate for localhost and client certificates whose
    SERIALNUMBER is an HSA-id, in FOLDER. For development and tests only."""
    import devcerts

    made = devcerts.create(folder, list(consumers) or [devcerts.PLATFORM_HSA_ID, devcerts.GATEWAY_HSA_ID])
    for name, issued in made.items():
        click.echo(f"{name:<22} {issued.cert}  (key {issued.key})")
    click.echo("For development only: the CA's key is next to it.")


@cli.group("ops")
def ops_group() -> None:
    """The ops view's users."""


@ops_group.command("hash-password")
@click.password_option()
def ops_hash_password(password: str) -> None:
    """Print the hash to put in ops.users[].password_hash (the password itself is never stored)."""
    click.echo(gateway.hash_password(password))


@ops_group.command("unlock")
@config_option
@click.argument("user")
@click.option("--address", help="Lift the lock on this address instead (an address that failed too often).")
def ops_unlock(config_path: Path, user: str, address: str | None) -> None:
    """Lift the sign-in lock of USER (after too many failed sign-ins); audited."""
    _, store = _open_store(config_path)
    key, lifted = gateway.unlock_sign_in(store, user, address, by=_who())
    click.echo(f"{key}: {'lock lifted, failures forgotten' if lifted else 'was not locked (no failed sign-ins)'}.")


@cli.command("retention")
@config_option
@json_option
def retention_command(config_path: Path, as_json: bool) -> None:
    """Purge old case content, files and sync-log detail now (as the daily job does)."""
    cfg, store = _open_store(config_path)
    removed = gateway.run_retention(cfg, store)
    _emit(as_json, removed, ", ".join(f"{k} {v}" for k, v in removed.items()))


@cli.group()
def message() -> None:
    """Messages to citizens: cancel one during its review window."""


@message.command("cancel")
@config_option
@click.argument("message_id")
def message_cancel(config_path: Path, message_id: str) -> None:
    """Cancel MESSAGE_ID before it is sent (a message in the citizen's inbox cannot be recalled)."""
    _, store = _open_store(config_path)
    try:
        store.cancel_message(message_id, by=_who())
    except GatewayError as exc:
        _fail(exc, 1)
    click.echo(f"message {message_id} cancelled; it will not be sent.")


@cli.group()
def mappings() -> None:
    """Check the mapping files and try them on a case, without sending anything."""


@mappings.command("check")
@config_option
def mappings_check(config_path: Path) -> None:
    """Validate every mapping file against the config; exit 1 on any problem."""
    cfg = _load_or_exit(config_path)
    try:
        maps, problems = gateway.load_mappings(cfg)
    except GatewayError as exc:
        click.echo(f"FAIL {exc}")
        sys.exit(1)
    for problem in problems:
        click.echo(f"FAIL {MappingError.code} {problem}")
    if problems:
        click.echo(f"{len(problems)} problem(s) in {cfg.mappings.dir}.", err=True)
        sys.exit(1)
    click.echo(
        f"ok   {cfg.mappings.dir}: {len(maps.units)} unit(s), code tables for "
        f"{len(set(maps.codes.case_types) | set(maps.codes.statuses))} target(s), field maps for {', '.join(sorted(maps.fieldmaps))}"
    )


@mappings.command("fields")
@json_option
def mappings_fields(as_json: bool) -> None:
    """The fields a field map can use: path, type, an example, and when it is present.

    Derived from the gateway's own model of a case (never a list kept by hand). The items
    of a list are written ``case.attachments[].file_name``: inside ``each: case.attachments``
    a field map reads them as ``item.file_name``."""
    rows = gateway.field_vocabulary()
    shown = [(r["path"], r["type"], "" if r["example"] is None else
              (r["example"] if isinstance(r["example"], str) else json.dumps(r["example"])),
              (r["when"] or "always") + (f" (one of {', '.join(r['values'])})" if r.get("values") else "")) for r in rows]
    shown = [(p, t, e if len(e) <= 40 else e[:39] + "…", w) for p, t, e, w in shown]
    widths = [max(len(row[i]) for row in [("path", "type", "example", ""), *shown]) for i in range(3)]
    lines = [f"{'path':<{widths[0]}}  {'type':<{widths[1]}}  {'example':<{widths[2]}}  when present"]
    lines += [f"{p:<{widths[0]}}  {t:<{widths[1]}}  {e:<{widths[2]}}  {w}" for p, t, e, w in shown]
    lines.append("Inside 'each: case.attachments' (any list), a field map reads the items' fields as item.file_name, …")
    _emit(as_json, rows, "\n".join(lines))


@mappings.command("try")
@config_option
@click.argument("case_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target", "target_name", required=True, help="The target (under 'targets:') to build the call for.")
@click.option("--sample", type=click.Choice(list(gateway.SAMPLES)), default=None,
              help="A built-in sample case: " + "; ".join(f"{k}: {v}" for k, v in gateway.SAMPLES.items())
              + " (default: complaint). It is sent to a unit of the target.")
@click.option("--file", "file_option", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your own case: a ProcessCase request (a whole SOAP envelope or just the element).")
@click.option("--full", is_flag=True, help="Print long values (attachments) in full.")
def mappings_try(config_path: Path, case_file: Path | None, target_name: str, sample: str | None,
                 file_option: Path | None, full: bool) -> None:
    """Print exactly what delivering a case to a target would send, without sending it.

    The case is a built-in sample (--sample, default complaint) or your own file (--file
    CASE.xml, or CASE_FILE)."""
    cfg = _load_or_exit(config_path)
    if len([x for x in (case_file, file_option, sample) if x is not None]) > 1:
        _fail("give one case: --sample NAME, --file CASE.xml or CASE_FILE.")
    try:
        preview = gateway.preview_delivery(cfg, target_name, case_file=case_file or file_option, sample=sample, full=full)
    except GatewayError as exc:
        _fail(exc, 1)
    for note in preview.notes:
        click.echo(note, err=True)
    click.echo(preview.text)


@cli.command()
@click.option("--once", is_flag=True, help="Exit when the demo cases are done: 0 if every one completed its loop.")
@click.option("--port-base", type=int, default=8080, show_default=True,
              help="The gateway on N, demo_rest on N+1, demo_soap on N+2, the 1177 simulator on N+3.")
@click.option("--free-ports", is_flag=True, help="Use any free ports instead.")
@click.option("--timeout", type=float, default=90, show_default=True, help="Seconds the demo cases may take.")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the sandbox's config, database and logs (default: data/sandbox).")
@click.option("--tls", is_flag=True, help="Mutual TLS between the 1177 side and the gateway, both ways.")
@click.option("--national-profile", default=None, help="The version of 1177's contracts (national.profile), e.g. mvk-inbox-2.0.")
def sandbox(once: bool, port_base: int, free_ports: bool, timeout: float, data: Path | None, tls: bool,
            national_profile: str | None) -> None:
    """Run the gateway with a 1177 simulator and demo provider systems on loopback, and
    show demo cases going the whole way round (Ctrl-C stops everything)."""
    try:
        root, argv = gateway.sandbox_argv(once=once, port_base=port_base, free_ports=free_ports,
                                          timeout=timeout, data=data, tls=tls, national_profile=national_profile)
    except GatewayError as exc:
        _fail(exc)
    os.chdir(root)
    os.execv(sys.executable, argv)  # the sandbox is a program of its own, never imported here


@cli.command("send-test-case")
@config_option
@click.option("--target", "target_name", required=True, help="The target (under 'targets:') to send the test case to.")
@click.option("--file", "case_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A ProcessCase request to send (default: a built-in test complaint for a unit of the target).")
def send_test_case(config_path: Path, target_name: str, case_file: Path | None) -> None:
    """Send one test case to a target through the real delivery path, and report each step.

    Nothing is written to the gateway's database: the case goes through a worker on a
    throw-away store, so an integration engineer can check a configuration before going live.
    """
    cfg = _load_or_exit(config_path)
    ok = False
    for number, step in enumerate(gateway.send_test_case(cfg, target_name, case_file), start=1):
        click.echo(f"{number}. {'ok  ' if step.ok else 'FAIL'} {step.text}")
        ok = step.ok
    if not ok:
        sys.exit(1)
    click.echo("the target took the test case.")


def main() -> None:
    cli(auto_envvar_prefix=None)


if __name__ == "__main__":
    main()
