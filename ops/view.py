"""The ops web view: ``/ops``, server-rendered pages for the people who run the gateway.

Role: show what is flowing, what is stuck and why, and let an operator fix it. Pages:
dashboard, sync log (search), case page, dead letters (replay / cancel with a
confirmation), messages the wrong-patient guard holds (the list; a reader previews one with
its files and releases or cancels it), targets (pause / resume), mappings, audit log;
sign-in and sign-out.
Plain HTML and one CSS file; no JavaScript; charts are inline SVG drawn here.

May import: ``store`` (reads and the operator actions it offers), ``model`` (redaction),
``errors``, ``ops.auth``; flask, flask_wtf. Never an adapter: a replay only requeues the
row, the worker delivers it.

Invariants:
- Every page needs a signed-in user; roles are checked by ``auth.requires`` alone:
  ``monitor`` sees metadata only (never a case's text, subject, message bodies, names,
  person ids or files), ``reader`` also the content and files, ``admin`` also acts.
  A monitor sees ids masked as the logs mask them (``ops_id``), and a link to a case
  whose id holds a personnummer names it by an encrypted reference (``case_url``).
- Every POST under ``/ops`` carries a CSRF token (Flask-WTF), checked in this
  blueprint's ``before_request``; the app-wide default check is off, so the RIV-TA
  endpoint and the provider API (not browser forms) are never asked for one.
- Every admin action (replay, cancel, pause, resume), every release or cancel of a held
  message (a reader's decision about content, so readers and admins take it) and every read
  of case content, a message's preview or a file is written to the audit log.
- Pages read only through the store's indexed, LIMITed queries: fast on a store with a
  million sync-log rows.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import logging
import re
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from cryptography.fernet import Fernet, InvalidToken
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from errors import BadOpsRequest, CasePurged, NotCancellable, NotFound, NotHeld, OpsRefused, SignInLocked
from model import redact_person_ids, safe_file_name
from ops import auth
from store import NATIONAL_TARGET, ts

log = logging.getLogger("gateway.ops")

bp = Blueprint("ops", __name__, url_prefix="/ops", template_folder="templates", static_folder="static")
csrf = CSRFProtect()

PAGE_SIZE = 50
DEAD_PAGE_SIZE = 100
MAX_SELECTED = 200
CSP = "default-src 'self'; style-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
SYNC_EVENTS = ("case_received", "message_received", "delivered", "retry_scheduled", "dead", "replayed", "cancelled",
               "lease_expired", "message_queued", "status_queued", "case_registered", "message_cancelled",
               "poll_update_refused", "target_paused", "target_resumed", "purged", "worker_dead", "contact_erased",
               "message_held", "message_released")
SYNC_STATUSES = ("ok", "queued", "retry", "dead", "refused", "error")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def init_app(app: Flask) -> None:
    """Register the blueprint, CSRF protection (for ``/ops`` only) and the security headers."""
    # CSRF is checked by this blueprint for its own POSTs; the app-wide check stays off so
    # /rivta (SOAP from 1177) and /api (the provider systems' REST calls) never need a token.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # the token lives as long as the session
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    csrf.init_app(app)
    app.register_blueprint(bp)
    app.after_request(_security_headers)
    app.jinja_env.filters["ops_when"] = _when
    app.jinja_env.filters["ops_id"] = _shown_id
    app.jinja_env.globals["case_url"] = case_url


def _ops() -> Any:
    return current_app.extensions["gateway.ops"]


def _security_headers(response: Response) -> Response:
    if request.path == "/ops" or request.path.startswith("/ops/"):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        if not request.path.startswith("/ops/static/"):
            response.headers["Cache-Control"] = "no-store"
            response.headers["Pragma"] = "no-cache"
    return response


# -- every request: CSRF on POST, then who is asking ---------------------------------------------


@bp.before_request
def _before() -> Any:
    if request.endpoint == "ops.static":
        return None
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        csrf.protect()  # raises CSRFError (400) before anything is read or changed
    operator = auth.identify(_ops())
    g.ops_operator = operator
    if operator is None and request.endpoint not in ("ops.login", "ops.logout"):
        back = _safe_next(request.full_path) if request.method == "GET" else None
        return redirect(url_for("ops.login", next=back))
    return None


@bp.context_processor
def _context() -> dict[str, Any]:
    return {"operator": auth.current(), "version": _ops().version}


@bp.errorhandler(CSRFError)
def _csrf_error(error: CSRFError) -> tuple[str, int]:
    log.warning("ops: a form without a valid CSRF token was refused",
                extra={"path": request.path, "reason": error.description, "remote_addr": request.remote_addr})
    return render_template("error.html", code=400, title="Form refused",
                           message="The form was not accepted (its security token is missing or stale). "
                                   "Reload the page and try again."), 400


@bp.errorhandler(403)
def _forbidden(error: HTTPException) -> tuple[str, int]:
    return render_template("error.html", code=403, title="Not allowed", message=error.description), 403


@bp.errorhandler(404)
def _not_found(error: HTTPException) -> tuple[str, int]:
    return render_template("error.html", code=404, title="Not found", message=error.description), 404


@bp.errorhandler(410)
def _gone(error: HTTPException) -> tuple[str, int]:
    return render_template("error.html", code=410, title="Purged", message=error.description), 410


@bp.errorhandler(OpsRefused)
def _refused(error: OpsRefused) -> tuple[str, int]:
    log.warning("ops: request refused", extra={"error_code": error.code, "path": request.path,
                                               "remote_addr": request.remote_addr, "detail": error.message})
    return render_template("error.html", code=error.status, title="Request refused",
                           message=f"{error.code} {error.message} {error.hint}".strip()), error.status


#: A row id as the ops view writes it (SQLite's integers have at most 19 digits).
_ROW_ID = re.compile(r"[0-9]{1,18}", re.ASCII)


def _row_id(value: str, what: str) -> int:
    """A row id from a form or query, or ``BadOpsRequest``."""
    text = value.strip()
    if not _ROW_ID.fullmatch(text):
        raise BadOpsRequest(f"{what} {text[:20]!r} is not a row id.")
    return int(text)


def _safe_next(target: str | None) -> str | None:
    """Only a path inside /ops is a place to go back to after sign-in or an action."""
    if not target:
        return None
    target = target.rstrip("?")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        raise BadOpsRequest("the return path holds a control character.")
    if target.startswith("/ops") and not target.startswith("//") and "\\" not in target:
        return target
    return None


def _operator() -> auth.Operator:
    operator = auth.current()
    assert operator is not None  # guaranteed by before_request and auth.requires
    return operator


# -- formatting helpers ----------------------------------------------------------------------------


def _parse_ts(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _when(value: Any) -> str:
    """A store timestamp as ``YYYY-MM-DD HH:MM:SS`` (UTC); anything else as it is."""
    if not value:
        return ""
    parsed = _parse_ts(str(value))
    if parsed is None:
        return str(value)
    return parsed.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _age(value: str | None, now: dt.datetime) -> str:
    parsed = _parse_ts(value)
    if parsed is None:
        return ""
    seconds = max(0, int((now - parsed).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {seconds} s"
    return f"{seconds} s"


def _redact(value: Any) -> str:
    return redact_person_ids(str(value)) if value else ""


def _sees_person_ids() -> bool:
    operator = auth.current()
    return operator is not None and operator.can("reader")


def _shown_id(value: Any) -> str:
    """An id as this operator may see it: a monitor sees personnummer in it masked."""
    if not value:
        return ""
    return str(value) if _sees_person_ids() else redact_person_ids(str(value))


def _fernet() -> Fernet:
    secret = str(current_app.secret_key or "").encode()
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"ops case reference|" + secret).digest()))


#: A case reference in a link: ``~`` and an encrypted case id.
_REF_PREFIX = "~"


def case_url(case_id: str) -> str:
    """The link to a case page; for a monitor, an id that holds a personnummer is sent
    encrypted (with the session's key), so it is not in clear in the page or the address bar."""
    if _sees_person_ids() or redact_person_ids(case_id) == case_id:
        return url_for("ops.case", case_id=case_id)
    token = _fernet().encrypt(case_id.encode("utf-8")).decode("ascii")
    return url_for("ops.case", case_id=_REF_PREFIX + token)


def _case_id_of(value: str) -> str:
    if not value.startswith(_REF_PREFIX):
        return value
    try:
        return _fernet().decrypt(value[len(_REF_PREFIX):].encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError, UnicodeError):
        raise BadOpsRequest("the case reference is not valid (it may be from before a key change); search the sync log.") from None


def hour_chart(hours: dict[str, dict[str, int]], now: dt.datetime, series: tuple[tuple[str, tuple[str, ...], str], ...],
               *, title: str) -> dict[str, Any]:
    """The geometry of an inline-SVG bar chart of the last 24 hours (oldest hour left).

    ``series``: (label, the outcomes it sums, CSS class), stacked bottom-up."""
    width, height, left, bottom, top = 720, 170, 44, 22, 10
    plot_h = height - bottom - top
    slot = (width - left) / 24
    start = now.astimezone(dt.timezone.utc).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=23)
    columns = []
    for n in range(24):
        hour = start + dt.timedelta(hours=n)
        counts = hours.get(hour.strftime("%Y-%m-%dT%H"), {})
        values = [(label, sum(int(counts.get(o, 0)) for o in outcomes), cls) for label, outcomes, cls in series]
        columns.append((hour, values))
    peak = max([sum(v for _, v, _ in values) for _, values in columns] + [0])
    scale_max = _nice(peak)
    bars, labels = [], []
    for n, (hour, values) in enumerate(columns):
        x = left + n * slot + 2
        base: float = height - bottom
        tip = f"{hour:%H}:00–{(hour + dt.timedelta(hours=1)):%H}:00 UTC: " + ", ".join(f"{v} {lab}" for lab, v, _ in values)
        for label, value, cls in values:
            if value <= 0:
                continue
            h = max(1.0, plot_h * value / scale_max)
            base -= h
            bars.append({"x": round(x, 1), "y": round(base, 1), "w": round(slot - 4, 1), "h": round(h, 1),
                         "cls": cls, "title": tip})
        if n % 3 == 0:
            labels.append({"x": round(x + (slot - 4) / 2, 1), "text": f"{hour:%H}"})
    totals = [(label, sum(values[i][1] for _, values in columns), cls) for i, (label, _, cls) in enumerate(series)]
    return {"title": title, "width": width, "height": height, "left": left, "top": top,
            "base": height - bottom, "max": scale_max, "mid": scale_max // 2 if scale_max >= 2 else None,
            "mid_y": round(top + plot_h / 2, 1), "bars": bars, "labels": labels, "totals": totals,
            "legend": [(label, cls) for label, _, cls in series], "empty": peak == 0}


def pivot(rows: list[dict[str, Any]], row_key: str, col_key: str) -> dict[str, Any]:
    """Grouped counts (``n``) as a table: one row per ``row_key``, one column per ``col_key``."""
    row_labels = list(dict.fromkeys(str(r[row_key] or "") for r in rows))
    col_labels = list(dict.fromkeys(str(r[col_key] or "") for r in rows))
    cells: dict[tuple[str, str], int] = {}
    for r in rows:
        key = (str(r[row_key] or ""), str(r[col_key] or ""))
        cells[key] = cells.get(key, 0) + int(r["n"])
    return {
        "rows": [(label, [cells.get((label, c), 0) for c in col_labels], sum(cells.get((label, c), 0) for c in col_labels))
                 for label in row_labels],
        "columns": col_labels,
        "totals": [sum(cells.get((label, c), 0) for label in row_labels) for c in col_labels],
        "total": sum(cells.values()),
    }


def _nice(value: int) -> int:
    """A round upper bound for a chart's scale whose half is a whole number too (or 1)."""
    if value <= 1:
        return 1
    if value <= 10:
        return value + value % 2
    magnitude = 10 ** (len(str(value)) - 1)
    return next(step * magnitude for step in (1, 2, 4, 5, 10) if step * magnitude >= value)


# -- sign-in ---------------------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    ops = _ops()
    next_path = _safe_next(request.values.get("next")) or url_for("ops.dashboard")
    if auth.current() is not None:
        return redirect(next_path)
    error = None
    status = 200
    if request.method == "POST":
        name = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        until = auth.locked_until(ops, name, request.remote_addr) if name else None
        if until is not None:  # not even the right password: the lock is the throttle
            locked = SignInLocked(f"too many failed sign-ins for this user or from this address; "
                                  f"sign-in is locked until {_when(until)} UTC.")
            log.warning("ops: sign-in refused, locked", extra={"user": name[:64], "remote_addr": request.remote_addr,
                                                              "error_code": locked.code})
            return render_template("login.html", error=f"{locked.code} {locked.message} {locked.hint}",
                                   next=_safe_next(request.values.get("next")), proxy=bool(ops.proxy_header)), 429
        user = auth.check_login(ops.users, name, password) if name and password else None
        if user is not None:
            auth.record_success(ops, user.name)
            auth.sign_in(ops, user)
            log.info("ops: signed in", extra={"user": user.name, "role": user.role, "remote_addr": request.remote_addr})
            return redirect(next_path)
        log.warning("ops: sign-in failed", extra={"user": name[:64], "remote_addr": request.remote_addr})
        if name:
            auth.record_failure(ops, name, request.remote_addr)
        error = "Wrong user name or password."
        status = 401
    return render_template("login.html", error=error, next=_safe_next(request.values.get("next")),
                           proxy=bool(ops.proxy_header)), status


@bp.post("/logout")
def logout() -> Any:
    operator = auth.current()
    auth.sign_out(_ops())
    if operator is not None:
        log.info("ops: signed out", extra={"user": operator.name})
    flash("You are signed out.", "info")
    return redirect(url_for("ops.login"))


# -- dashboard -------------------------------------------------------------------------------------


@bp.get("/")
@auth.requires("monitor")
def dashboard() -> Any:
    ops = _ops()
    now = ops.instant()
    data = ops.store.dashboard(now)
    oldest = data.get("oldest_undelivered")
    charts = [
        hour_chart(data["hours"], now, (("delivered", ("delivered",), "bar-ok"),), title="Delivered per hour"),
        hour_chart(data["hours"], now, (("retried", ("retry", "failed_late"), "bar-retry"), ("dead", ("dead",), "bar-dead")),
                   title="Failed attempts per hour"),
    ]
    tables = [
        ("Cases", "per target and status", "target", pivot(data["cases"], "target", "status")),
        ("Messages", "per direction and status", "direction", pivot(data["messages"], "direction", "status")),
        ("Outbox", "per target and status", "target", pivot(data["outbox"], "target", "status")),
    ]
    held = sum(int(r["n"]) for r in data["outbox"] if r["status"] == "held")  # by the wrong-patient guard
    return render_template(
        "dashboard.html", data=data, charts=charts, now=now, tables=tables, held=held,
        oldest=oldest, oldest_age=_age(oldest["created_at"], now) if oldest else None,
    )


@bp.get("/case")
@auth.requires("monitor")
def find_case() -> Any:
    case_id = request.args.get("case_id", "").strip()
    if not case_id:
        return redirect(url_for("ops.log_search"))
    return redirect(case_url(case_id))


# -- sync log --------------------------------------------------------------------------------------


def _form_time(value: str, field: str, problems: list[str]) -> str | None:
    """A ``datetime-local`` value (taken as UTC) in the store's timestamp format."""
    value = value.strip()
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        problems.append(f"{field}: not a date and time (YYYY-MM-DDTHH:MM).")
        return None
    parsed = parsed.replace(tzinfo=dt.timezone.utc) if parsed.tzinfo is None else parsed.astimezone(dt.timezone.utc)
    return ts(parsed)


_CURSOR = re.compile(r"([0-9T:.Z-]{1,40})\|([0-9]{1,18})", re.ASCII)


def _cursor(value: str) -> tuple[str, int]:
    """A sync-log page cursor (``at|id`` of the previous page's last row), or ``BadOpsRequest``."""
    found = _CURSOR.fullmatch(value)
    if found is None:
        raise BadOpsRequest("the page cursor is not valid; open the sync log afresh.")
    return found.group(1), int(found.group(2))


@bp.get("/log")
@auth.requires("monitor")
def log_search() -> Any:
    ops = _ops()
    args = request.args
    fields = ("case_id", "hsa_id", "target", "direction", "status", "error_code", "event", "since", "until")
    form = {f: args.get(f, "").strip()[:200] for f in fields}
    problems: list[str] = []
    since = _form_time(form["since"], "From", problems)
    until = _form_time(form["until"], "To", problems)
    if form["direction"] not in ("", "in", "out"):
        problems.append("Direction: 'in' or 'out'.")
        form["direction"] = ""
    before, status = None, 200
    if args.get("before"):
        try:
            before = _cursor(args.get("before", ""))
        except BadOpsRequest as exc:  # the page still shows the newest rows, with the code
            problems.append(f"{exc.code} {exc.message} Showing the newest rows.")
            status = 400
    rows = ops.store.search_log(
        case_id=form["case_id"] or None, hsa_id=form["hsa_id"] or None, target=form["target"] or None,
        direction=form["direction"] or None, status=form["status"] or None, error_code=form["error_code"] or None,
        event=form["event"] or None, since=since, until=until, before=before, limit=PAGE_SIZE,
    )
    for row in rows:
        row["detail"] = _redact(row.get("detail"))
    query = {k: v for k, v in form.items() if v}
    first_url = url_for("ops.log_search") + ("?" + urlencode(query) if query else "")
    next_url = None
    if len(rows) == PAGE_SIZE:
        last = rows[-1]
        next_url = url_for("ops.log_search") + "?" + urlencode({**query, "before": f"{last['at']}|{last['id']}"})
    targets = list(dict.fromkeys([*ops.targets, NATIONAL_TARGET]))
    return render_template("log.html", rows=rows, form=form, problems=problems, next_url=next_url,
                           first_url=first_url, paged=before is not None, targets=targets, events=SYNC_EVENTS, statuses=SYNC_STATUSES,
                           page_size=PAGE_SIZE), status


# -- case page -------------------------------------------------------------------------------------


def _timeline(detail: dict[str, Any]) -> list[dict[str, Any]]:
    """Sync-log events, messages and status updates of a case in one list, oldest first."""
    items: list[dict[str, Any]] = []
    for e in detail["events"]:
        items.append({"at": e["at"], "kind": "event", "direction": e["direction"], "what": e["event"],
                      "status": e["status"], "target": e.get("target"), "ref": e.get("message_id"),
                      "error_code": e.get("error_code"), "detail": _redact(e.get("detail"))})
    for m in detail["messages"]:
        times = [f"created {_when(m.get('created_time'))}" if m.get("created_time") else "",
                 f"sent {_when(m.get('sent_at'))}" if m.get("sent_at") else ""]
        items.append({"at": m["received_at"], "kind": "message", "direction": m["direction"],
                      "what": f"message {m['kind']}", "status": m["status"], "target": None,
                      "ref": m["message_id"], "error_code": None,
                      "detail": ", ".join(t for t in [*times, f"origin {m['origin']}" if m.get("origin") else ""] if t)})
    for s in detail["statuses"]:
        items.append({"at": s["created_at"], "kind": "status", "direction": "out", "what": f"status {s['status']}",
                      "status": s["state"], "target": NATIONAL_TARGET, "ref": None, "error_code": None,
                      "detail": ", ".join(t for t in [f"sent {_when(s['sent_at'])}" if s.get("sent_at") else "",
                                                      f"origin {s['origin']}" if s.get("origin") else ""] if t)})
    items.sort(key=lambda i: (_parse_ts(i["at"]) or dt.datetime.min.replace(tzinfo=dt.timezone.utc)))
    return items


@bp.get("/cases/<path:case_id>")
@auth.requires("monitor")
def case(case_id: str) -> Any:
    ops = _ops()
    operator = _operator()
    with_content = operator.can("reader")
    case_id = _case_id_of(case_id)
    try:
        detail = ops.store.case_detail(case_id, with_content=with_content)
    except NotFound:
        return render_template("error.html", code=404, title="No such case",
                               message=f"There is no case '{_shown_id(case_id)}'."), 404
    row = detail["case"]
    unit = None
    try:
        unit = ops.mappings.units.unit(row["receiver_hsa_id"], ops.day()) if row.get("receiver_hsa_id") else None
    except Exception:  # a mapping lookup must never break the page
        unit = None
    for outbox_row in detail["outbox"]:
        outbox_row["last_error"] = _redact(outbox_row.get("last_error"))
        for attempt in outbox_row["attempts"]:
            attempt["detail"] = _redact(attempt.get("detail"))
            if not with_content:  # what the target answered is content: readers and admins only
                attempt["response"] = None
    files = detail["attachments"]
    context: dict[str, Any] = {
        "case_id": case_id, "row": row, "unit": unit, "timeline": _timeline(detail), "outbox": detail["outbox"],
        "file_count": len(files), "with_content": with_content,
    }
    if with_content:
        context["content"] = detail.get("content")
        context["message_contents"] = detail.get("message_contents") or {}
        context["files"] = files
        context["messages"] = detail["messages"]
        ops.store.audit(operator.name, operator.role, "read_case", f"case {case_id}", "case content shown")
    return render_template("case.html", **context)


@bp.get("/cases/<path:case_id>/files/<sha256>")
@auth.requires("reader")
def attachment(case_id: str, sha256: str) -> Any:
    ops = _ops()
    operator = _operator()
    found = ops.store.attachment(case_id, sha256) if _SHA256.fullmatch(sha256) else None
    if found is None:
        return render_template("error.html", code=404, title="No such file",
                               message="That case has no such file."), 404
    name, mime, data = found
    ops.store.audit(operator.name, operator.role, "download", f"case {case_id}", f"file {sha256[:16]} ({mime})")
    response = send_file(io.BytesIO(data), mimetype=mime or "application/octet-stream", as_attachment=True,
                         download_name=safe_file_name(name or ""), max_age=0, etag=False, conditional=False)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


# -- messages the wrong-patient guard holds (rule 14) ------------------------------------------------

HELD_PAGE_SIZE = 100


@bp.get("/held")
@auth.requires("monitor")
def held() -> Any:
    """The messages to citizens that the wrong-patient guard holds, newest first; a reader
    also sees where the guard found what (file and page, or the body), never the ids."""
    ops = _ops()
    before = request.args.get("before", "")
    before_id = _row_id(before, "the page cursor") if before else None
    rows = ops.store.outbox_list(status="held", limit=HELD_PAGE_SIZE, before_id=before_id)
    readers = _operator().can("reader")
    for row in rows:
        row["places"] = None
        if readers:
            try:
                guard = ops.store.outgoing_message(row["case_id"], row["ref_id"])["guard"]
                row["places"] = ", ".join(f.place for f in guard.foreign) or ", ".join(f.place for f in guard.not_checked)
            except (NotFound, CasePurged):
                row["places"] = ""
    next_url = None
    if len(rows) == HELD_PAGE_SIZE:
        next_url = url_for("ops.held") + "?" + urlencode({"before": rows[-1]["id"]})
    return render_template("held.html", rows=rows, next_url=next_url, paged=before_id is not None)


def _outgoing(case_id: str, message_id: str) -> dict[str, Any]:
    """A message to the citizen as it will be sent (the store's preview), or a 404/410 page."""
    try:
        return _ops().store.outgoing_message(case_id, message_id)
    except NotFound:
        abort(404, description="That case has no such message to the citizen.")
    except CasePurged as exc:
        abort(410, description=f"{exc.code} {exc.message}")
    raise AssertionError("unreachable")


@bp.get("/cases/<path:case_id>/messages/<message_id>")
@auth.requires("reader")
def message(case_id: str, message_id: str) -> Any:
    """The preview of a message to the citizen: its kind, subject, body, sending unit, the
    guard's findings and its files (each a download), with Release and Cancel while it is
    held. Audited as a read of content."""
    ops = _ops()
    operator = _operator()
    case_id = _case_id_of(case_id)
    row = _outgoing(case_id, message_id)
    ops.store.audit(operator.name, operator.role, "read_message", f"message {row['message_id']}",
                    f"case {case_id}: preview of a message to the citizen")
    return render_template("message.html", case_id=case_id, row=row, content=row["content"], guard=row["guard"],
                           held=row["outbox_status"] == "held",
                           cancellable=row["outbox_status"] in ("held", "pending") and row["status"] != "sent")


@bp.get("/cases/<path:case_id>/messages/<message_id>/files/<n>")
@auth.requires("reader")
def message_file(case_id: str, message_id: str, n: str) -> Any:
    """File ``n`` (0-based) of a message to the citizen: the very bytes the worker sends."""
    ops = _ops()
    operator = _operator()
    case_id = _case_id_of(case_id)
    if not re.fullmatch(r"[0-9]{1,2}", n):
        abort(404, description="That message has no such file.")
    try:
        found = ops.store.outgoing_attachment(case_id, message_id, int(n))
    except NotFound:
        abort(404, description="That message has no such file.")
    except CasePurged as exc:
        abort(410, description=f"{exc.code} {exc.message}")
    ops.store.audit(operator.name, operator.role, "download", f"message {message_id}",
                    f"case {case_id}: file {n} {found.sha256[:16]} ({found.mime_type})")
    response = send_file(io.BytesIO(found.data), mimetype=found.mime_type or "application/octet-stream",
                         as_attachment=True, download_name=safe_file_name(found.file_name or ""), max_age=0,
                         etag=False, conditional=False)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Content-SHA256"] = found.sha256
    return response


@bp.post("/cases/<path:case_id>/messages/<message_id>/release")
@auth.requires("reader")
def release(case_id: str, message_id: str) -> Any:
    """A reader or admin confirms a held message after looking at it: it is sent, once
    (``Store.release_message``, which writes the audit row: who and when)."""
    ops = _ops()
    operator = _operator()
    case_id = _case_id_of(case_id)
    back = url_for("ops.message", case_id=case_id, message_id=message_id)
    if request.form.get("confirmed") != "yes":
        flash("Nothing was done: tick the box to confirm that the message and its files go to this citizen.", "error")
        return redirect(back)
    try:
        state = ops.store.release_message(message_id, by=f"{operator.name} (ops)", case_id=case_id, role=operator.role)
    except NotFound:
        abort(404, description="That case has no such message to the citizen.")
    except NotHeld as exc:
        flash(f"Nothing was done: {exc.code} {exc.message}", "error")
        return redirect(back)
    log.info("ops: held message released", extra={"user": operator.name, "case_id": case_id, "message_id": message_id})
    _wake_worker()
    flash("Released: the message is sent to the citizen's inbox once"
          + (" its review window has passed." if state == "held" else ".") + " It cannot be recalled after that.", "info")
    return redirect(back)


@bp.post("/cases/<path:case_id>/messages/<message_id>/cancel")
@auth.requires("reader")
def cancel_message(case_id: str, message_id: str) -> Any:
    """Cancel a message to the citizen that has not been sent (held, or in its review
    window): it is never sent. Audited."""
    ops = _ops()
    operator = _operator()
    case_id = _case_id_of(case_id)
    back = url_for("ops.message", case_id=case_id, message_id=message_id)
    if request.form.get("confirmed") != "yes":
        flash("Nothing was done: tick the box to confirm that the message is never sent.", "error")
        return redirect(back)
    try:
        ops.store.cancel_message(message_id, by=f"{operator.name} (ops)", case_id=case_id)
    except NotFound:
        abort(404, description="That case has no such message to the citizen.")
    except NotCancellable as exc:
        flash(f"Nothing was done: {exc.code} {exc.message}", "error")
        return redirect(back)
    ops.store.audit(operator.name, operator.role, "cancel_message", f"message {message_id}",
                    f"case {case_id}: a message to the citizen cancelled before it was sent")
    log.info("ops: message cancelled", extra={"user": operator.name, "case_id": case_id, "message_id": message_id})
    flash("Cancelled: the message will never be sent. The provider's system can send a corrected one.", "info")
    return redirect(back)


# -- dead letters ----------------------------------------------------------------------------------


@bp.get("/dead")
@auth.requires("monitor")
def dead() -> Any:
    ops = _ops()
    target = request.args.get("target", "").strip() or None
    before = request.args.get("before", "")
    before_id = _row_id(before, "the page cursor") if before else None
    rows = ops.store.outbox_list(status="dead", target=target, limit=DEAD_PAGE_SIZE, before_id=before_id)
    for row in rows:
        row["last_error"] = _redact(row.get("last_error"))
    next_url = None
    if len(rows) == DEAD_PAGE_SIZE:
        query = {"before": rows[-1]["id"], **({"target": target} if target else {})}
        next_url = url_for("ops.dead") + "?" + urlencode(query)
    targets = list(dict.fromkeys([*ops.targets, NATIONAL_TARGET]))
    return render_template("dead.html", rows=rows, target=target or "", targets=targets, next_url=next_url,
                           paged=before_id is not None)


def _selected_ids() -> list[int]:
    ids = [_row_id(value, "the selected row") for value in request.form.getlist("id")]
    return list(dict.fromkeys(ids))[:MAX_SELECTED]


@bp.post("/dead/confirm")
@auth.requires("admin")
def confirm() -> Any:
    """What a replay or cancel will do, with the button that does it (nothing changes here)."""
    ops = _ops()
    action = request.form.get("action", "")
    back = _safe_next(request.form.get("next")) or url_for("ops.dead")
    if action not in ("replay", "cancel"):
        flash("Choose Replay or Cancel.", "error")
        return redirect(back)
    ids = _selected_ids()
    if not ids:
        flash("Select at least one row.", "error")
        return redirect(back)
    rows = []
    for outbox_id in ids:
        row = ops.store.outbox_row(outbox_id)
        if row is not None:
            row["last_error"] = _redact(row.get("last_error"))
            rows.append(row)
    if not rows:
        flash("None of the selected rows exists.", "error")
        return redirect(back)
    return render_template("confirm.html", action=action, rows=rows, next=back)


@bp.post("/dead/apply")
@auth.requires("admin")
def apply() -> Any:
    ops = _ops()
    operator = _operator()
    action = request.form.get("action", "")
    back = _safe_next(request.form.get("next")) or url_for("ops.dead")
    if action not in ("replay", "cancel") or request.form.get("confirmed") != "yes":
        flash("Nothing was done: the action was not confirmed.", "error")
        return redirect(back)
    done, skipped = 0, 0
    for outbox_id in _selected_ids():
        row = ops.store.outbox_row(outbox_id)
        if row is None:
            skipped += 1
            continue
        by = f"{operator.name} (ops)"
        ok = ops.store.replay(outbox_id, by=by) if action == "replay" else ops.store.cancel(outbox_id, by=by)
        what = f"{row['action']} of case {row['case_id']} to {row['target']}"
        ops.store.audit(operator.name, operator.role, action, f"outbox {outbox_id}",
                        what + ("" if ok else f"; nothing done, the row was {row['status']}"))
        log.info(f"ops: {action}", extra={"user": operator.name, "outbox_id": outbox_id, "case_id": row["case_id"],
                                          "target": row["target"], "done": ok})
        done += ok
        skipped += not ok
    if action == "replay" and done:
        _wake_worker()
    verb = "Replayed" if action == "replay" else "Cancelled"
    flash(f"{verb} {done} row{'s' if done != 1 else ''}."
          + (f" {skipped} left as {'they were' if skipped != 1 else 'it was'} (no longer dead)." if skipped else ""),
          "info" if done else "error")
    return redirect(back)


def _wake_worker() -> None:
    """Nudge an in-process worker so a replayed row goes out now, not on its next tick."""
    wake = _ops().wake_worker
    if wake is not None:
        wake()


# -- targets ---------------------------------------------------------------------------------------


@bp.get("/targets")
@auth.requires("monitor")
def targets() -> Any:
    ops = _ops()
    paused = ops.store.paused_targets()
    depth: dict[str, dict[str, Any]] = {}
    for row in ops.store.queue_depth():
        depth.setdefault(row["target"] or "", {})[row["status"]] = row
    names = list(dict.fromkeys([*ops.targets, *sorted(paused)]))
    now = ops.instant()
    listing = []
    for name in names:
        queue = depth.get(name, {})
        oldest = min((r["oldest"] for s, r in queue.items() if s != "dead" and r.get("oldest")), default=None)
        listing.append({"name": name, "paused": name in paused,
                        "pending": queue.get("pending", {}).get("n", 0),
                        "in_flight": queue.get("in_flight", {}).get("n", 0),
                        "dead": queue.get("dead", {}).get("n", 0),
                        "oldest_age": _age(oldest, now) if oldest else ""})
    return render_template("targets.html", targets=listing)


@bp.post("/targets/<name>")
@auth.requires("admin")
def set_target(name: str) -> Any:
    ops = _ops()
    operator = _operator()
    if name not in ops.targets and name not in ops.store.paused_targets():
        return render_template("error.html", code=404, title="No such target",
                               message=f"There is no target '{name}'."), 404
    paused = request.form.get("paused") == "1"
    ops.store.set_paused(name, paused, by=f"{operator.name} (ops)")
    action = "pause" if paused else "resume"
    ops.store.audit(operator.name, operator.role, action, f"target {name}")
    log.info(f"ops: target {action}d", extra={"user": operator.name, "target": name})
    if not paused:
        _wake_worker()
    flash(f"Target {name} {'paused' if paused else 'resumed'}.", "info")
    return redirect(url_for("ops.targets"))


# -- mappings and audit ----------------------------------------------------------------------------


@bp.get("/mappings")
@auth.requires("monitor")
def mappings() -> Any:
    maps = _ops().mappings
    today = _ops().day()
    units = sorted(maps.units.rows, key=lambda u: (u.hsa_id, u.valid_from or dt.date.min))
    rows = [{"unit": u, "in_force": u.valid_on(today)} for u in units]
    loaded = _ops().mappings_in_force  # when and from which files; the last reload (None: not known)
    return render_template("mappings.html", units=rows, default_route=maps.units.default_route,
                           case_types=maps.codes.case_types, statuses=maps.codes.statuses,
                           source_units=maps.units.source, source_codes=maps.codes.source, today=today,
                           in_force=loaded.details() if loaded is not None else None,
                           on_disk=loaded.on_disk() if loaded is not None else None,
                           folder=loaded.directory if loaded is not None else None)


@bp.get("/audit")
@auth.requires("reader")
def audit() -> Any:
    entries = _ops().store.audit_entries(limit=200)
    return render_template("audit.html", entries=entries)
