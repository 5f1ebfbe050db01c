"""Configuration: one YAML file, environment overrides, secrets, validation.

Role: turn ``config.yaml`` (plus ``GATEWAY__SECTION__KEY`` environment variables, each
text converted by its key's own type in the models below) into a validated, immutable
``Config``. Relative paths resolve against the config file's folder; secrets are
written ``{$env: NAME}`` or ``{$file: PATH}`` and held as ``SecretStr`` so they never
print. A wrong file fails here, at start, with the dotted
key path and what to do (``ConfigError``, GW001).

May import: ``errors``, ``model``.

Invariants: ``load`` either returns a complete ``Config`` or raises ``ConfigError``;
no secret value appears in a ``ConfigError`` or in ``repr(config)``.
"""

from __future__ import annotations

import json
import os
import string
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from errors import ConfigError, InvalidHsaId
from model import CaseType, hsa_id

ENV_PREFIX = "GATEWAY__"
CONFIG_ENV = "GATEWAY_CONFIG"
MiB = 1024 * 1024


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        value = Path(base) / value
    return value


#: A filesystem path; relative paths resolve against the config file's folder.
RelPath = Annotated[Path, AfterValidator(_resolve_path)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Section):
    """Who the gateway is on the national platform."""

    name: str = "1177 integration gateway"
    hsa_id: str = Field(description="The gateway's own system HSA-id (sourceSystem on messages to 1177).")
    public_url: str | None = Field(
        default=None, description="Base URL 1177 reaches the gateway at; written into served WSDLs."
    )

    @field_validator("hsa_id")
    @classmethod
    def _hsa(cls, value: str) -> str:
        try:
            return hsa_id(value)
        except InvalidHsaId as exc:
            raise ValueError(exc.message) from None


class DatabaseSection(_Section):
    """SQLite (``path``, the default) or PostgreSQL (``url``) for several instances."""

    path: RelPath = Path("data/gateway.db")
    url: str | None = Field(
        default=None, description="postgresql://USER@HOST:5432/DB selects PostgreSQL instead of the SQLite file at "
                                  "path; its password goes in password, never in the URL.")
    password: SecretStr | None = Field(default=None, description="The PostgreSQL user's password, e.g. {$env: PGPASSWORD}.")
    pool_size: int = Field(default=10, ge=1, le=200, description="PostgreSQL connections per process at most.")
    busy_timeout_ms: int = Field(default=5000, ge=0, le=600_000)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a PostgreSQL URL, postgresql://USER@HOST:5432/DATABASE "
                             "(for SQLite set path instead)")
        if urlsplit(value).password is not None:
            raise ValueError("has a password in it: put the password in database.password, "
                             "e.g. password: {$env: PGPASSWORD}, and leave it out of the URL")
        return value


class ServerTlsSection(_Section):
    """TLS terminated by ``gateway serve`` itself (gunicorn)."""

    cert: RelPath = Field(description="The server's certificate chain (PEM).")
    key: RelPath = Field(description="Its private key (PEM).")
    client_ca: RelPath | None = Field(
        default=None, description="Client certificates are asked for and verified against this CA bundle (e.g. SITHS)."
    )

    @model_validator(mode="after")
    def _files(self) -> "ServerTlsSection":
        for name in ("cert", "key", "client_ca"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: file {path} does not exist")
        return self


class ServerSection(_Section):
    bind: str = "127.0.0.1:8080"
    workers: int = Field(default=1, ge=1, le=64)
    threads: int = Field(default=8, ge=1, le=256)
    timeout_s: int = Field(default=120, ge=1)
    read_timeout_s: float = Field(
        default=15, gt=0, le=600,
        description="A client that sends nothing for this long in the middle of a request is cut off (slow loris).",
    )
    tls: ServerTlsSection | None = None

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"'{value}' is not HOST:PORT")
        return value


class IntakeSection(_Section):
    """Limits on what 1177 may send (DESIGN.md rule 1)."""

    max_body_bytes: int = Field(default=150 * MiB, ge=64 * 1024)
    max_attachment_bytes: int = Field(default=20 * MiB, ge=1, le=20 * MiB, description="At most 1177's own limit, 20 MB.")
    max_attachments: int = Field(default=5, ge=0, le=5)


class MappingsSection(_Section):
    dir: RelPath = Path("mappings")


class LoggingSection(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class RetrySection(_Section):
    """Retry policy for transient failures: exponential backoff with jitter and a ceiling."""

    max_attempts: int = Field(default=10, ge=1, le=1000)
    initial_s: float = Field(default=2.0, gt=0)
    multiplier: float = Field(default=2.0, ge=1)
    max_s: float = Field(default=900.0, gt=0)
    jitter: float = Field(default=0.2, ge=0, le=1)

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds before attempt ``attempt + 1``; ``rand`` in [0, 1) spreads retries (jitter)."""
        base = min(self.max_s, self.initial_s * self.multiplier ** max(0, attempt - 1))
        return max(0.0, base * (1 - self.jitter + 2 * self.jitter * rand))


class TlsSection(_Section):
    """TLS towards a target: CA bundle, client certificate. Verification stays on unless
    ``verify: false`` together with ``insecure: true`` (which ``gateway check`` warns about)."""

    ca_bundle: RelPath | None = None
    client_cert: RelPath | None = None
    client_key: RelPath | None = None
    verify: bool = True
    insecure: bool = False

    @model_validator(mode="after")
    def _never_silently_insecure(self) -> "TlsSection":
        if not self.verify and not self.insecure:
            raise ValueError("verify: false turns certificate checks off; that also needs insecure: true")
        for name in ("ca_bundle", "client_cert", "client_key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: file {path} does not exist")
        if self.client_key and not self.client_cert:
            raise ValueError("client_key without client_cert")
        return self


class AuthSection(_Section):
    """How the gateway authenticates to a REST target."""

    type: Literal["none", "basic", "bearer", "oauth2", "client_cert"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    token_url: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    scope: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> "AuthSection":
        needs = {
            "basic": ("username", "password"),
            "bearer": ("token",),
            "oauth2": ("token_url", "client_id", "client_secret"),
        }.get(self.type, ())
        missing = [name for name in needs if getattr(self, name) in (None, "")]
        if missing:
            raise ValueError(f"auth type '{self.type}' needs {', '.join(missing)}")
        return self


class ApiAccessSection(_Section):
    """How a target's system authenticates when it calls the gateway's REST API."""

    token: SecretStr | None = Field(default=None, description="Bearer token of this target's system.")
    client_cert_hsa_id: str | None = Field(
        default=None, description="Or: a client certificate whose SERIALNUMBER is this HSA-id (needs server.tls.client_ca)."
    )


#: What a delivery path may name; the worker fills them in.
PATH_PLACEHOLDERS = ("provider_case_id", "case_id", "unit_code")
#: The HTTP methods a delivery may use: each carries the body the field map built.
DELIVERY_METHODS = ("POST", "PUT", "PATCH")
RestAction = Literal["deliver_case", "deliver_message"]


def _url_path(value: str, placeholders: tuple[str, ...] | None = None) -> str:
    """``value`` if it is the path part of a URL (``/…``, no spaces), naming only ``placeholders``."""
    if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
        shown = value if isinstance(value, str) else type(value).__name__
        delivery = placeholders is not None
        if isinstance(value, str) and value.split(" ", 1)[0].upper() in ("GET", *DELIVERY_METHODS, "DELETE"):
            why = ("the HTTP method goes under 'methods', the path alone here" if delivery
                   else "this one is always a GET, give the path alone")
        elif isinstance(value, str) and value.startswith(("http://", "https://")):
            why = "the address goes in base_url, the path alone here"
        else:
            why = "a path starts with '/' and has no spaces"
        example = "/cases/{provider_case_id}/messages" if delivery else "/updates"
        raise ValueError(f"'{shown}' is not a path: {why} (e.g. {example})")
    if placeholders is not None:
        try:
            named = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        except ValueError:
            raise ValueError(f"'{value}' is not a path: unbalanced {{ or }}") from None
        unknown = [name for name in named if name not in placeholders]
        if unknown:
            raise ValueError(f"'{value}' names {{{unknown[0]}}}; a path may name "
                             + ", ".join(f"{{{p}}}" for p in placeholders))
    return value


#: A delivery path under base_url, e.g. /cases/{provider_case_id}/messages.
DeliveryPath = Annotated[str, AfterValidator(lambda v: _url_path(v, PATH_PLACEHOLDERS))]
#: Any other path under base_url (polls, medication lists).
UrlPath = Annotated[str, AfterValidator(_url_path)]
DeliveryMethod = Annotated[
    Literal["POST", "PUT", "PATCH"], BeforeValidator(lambda v: v.strip().upper() if isinstance(v, str) else v)
]
def _success_status(value: int) -> int:
    if not 200 <= value <= 299:
        raise ValueError(f"{value} is not a 2xx status; list the 2xx statuses that mean the target took it")
    return value


SuccessStatus = Annotated[int, AfterValidator(_success_status)]


class PollSection(_Section):
    """Ask the target for updates (messages, status changes) on a schedule, for systems that cannot call out."""

    interval_s: float = Field(default=60.0, ge=1)
    path: UrlPath | None = Field(default=None, description="REST: GET base_url + path?since=<cursor>.")
    operation: str | None = Field(default=None, description="SOAP: the operation called with 'since'.")
    cursor_param: str = "since"


class MedicationsSection(_Section):
    """Where a target lists a patient's medications, for 1177's prescription renewal form."""

    path: UrlPath | None = Field(default=None, description="REST: GET base_url + path; {person_id} and {unit_code} are filled in.")
    operation: str | None = Field(default=None, description="SOAP: the operation called with personId and unitCode.")
    timeout_s: float = Field(default=5.0, gt=0, le=30, description="1177 waits for the answer: keep it short.")


class _TargetBase(_Section):
    description: str | None = None
    api: ApiAccessSection = ApiAccessSection()
    poll: PollSection | None = None
    medications: MedicationsSection | None = None
    timeout_s: float = Field(default=30.0, gt=0, description="Read timeout of one call.")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_answer_bytes: int = Field(default=10 * MiB, ge=1024, le=100 * MiB, description=(
        "The largest answer read from the target; a larger one is refused unread (GW063)."))
    retry: RetrySection = RetrySection()
    tls: TlsSection = TlsSection()


def _default_paths() -> dict[RestAction, DeliveryPath]:
    return {"deliver_case": "/cases", "deliver_message": "/cases/{provider_case_id}/messages"}


class RestTarget(_TargetBase):
    """A provider system with a JSON-over-HTTP API."""

    kind: Literal["rest"]
    base_url: str
    paths: dict[RestAction, DeliveryPath] = Field(
        default_factory=lambda: _default_paths()
    )
    methods: dict[RestAction, DeliveryMethod] = Field(
        default_factory=dict, description="The HTTP method per action: POST (the default), PUT or PATCH."
    )
    success_statuses: list[SuccessStatus] | None = Field(
        default=None, min_length=1,
        description="The 2xx statuses that mean the target took the delivery; null: any 2xx.",
    )
    auth: AuthSection = AuthSection()
    idempotency_header: str = "Idempotency-Key"

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"'{value}' is not an http(s) URL")
        return value.rstrip("/")

    def method(self, action: str) -> str:
        """The HTTP method of ``action`` (POST unless ``methods`` says otherwise)."""
        return self.methods.get(action, "POST")  # type: ignore[call-overload]

    @model_validator(mode="after")
    def _client_cert(self) -> "RestTarget":
        if self.auth.type == "client_cert" and not self.tls.client_cert:
            raise ValueError("auth type 'client_cert' needs tls.client_cert")
        return self


class WsseSection(_Section):
    username: str
    password: SecretStr


class IdempotencySection(_Section):
    """Where a SOAP target gets the idempotency key: an HTTP header or a body field."""

    http_header: str | None = "Idempotency-Key"
    field: str | None = None


class SoapTarget(_TargetBase):
    """A provider system with a SOAP service described by a local WSDL file."""

    kind: Literal["soap"]
    wsdl: RelPath
    endpoint: str | None = Field(default=None, description="Overrides the WSDL's soap:address.")
    binding: str | None = Field(default=None, description="{namespace}Binding when the WSDL has several.")
    operations: dict[Literal["deliver_case", "deliver_message"], str]
    wsse: WsseSection | None = None
    idempotency: IdempotencySection = IdempotencySection()

    @field_validator("wsdl")
    @classmethod
    def _wsdl_exists(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"WSDL file {value} does not exist (it is read locally, never fetched)")
        return value


TargetSection = Annotated[RestTarget | SoapTarget, Field(discriminator="kind")]


class WorkerSection(_Section):
    enabled: bool = True
    heartbeat_s: int = Field(default=10, ge=1, le=3600)
    concurrency: int = Field(default=4, ge=1, le=64, description="Deliveries in flight at once per process.")
    processes: int = Field(default=1, ge=1, le=16, description=(
        "Worker processes gateway serve runs beside its server processes, each with "
        "concurrency slots of its own: one Python process uses one core at most."))
    poll_s: float = Field(default=2.0, gt=0, description="How often due retries are looked for.")
    lease_s: float = Field(default=300.0, ge=5, description="A claimed row returns to the queue after this.")
    per_target: int | None = Field(default=None, ge=1, le=64, description=(
        "Calls to one target in flight at once (default: half of concurrency, at least 1), so a "
        "slow target never holds every delivery slot."))
    deadline_s: float = Field(default=60.0, gt=0, le=3600, description=(
        "The total deadline of one delivery call (connect, send and the whole answer); a call "
        "past it is given up and retried later with the same idempotency key."))


class RivtaSection(_Section):
    """Who may call the RIV-TA endpoint (/rivta), and which contract files it speaks."""

    require_client_cert: bool = Field(default=False, description="Only callers with a verified client certificate.")
    allowed_consumers: list[str] = Field(
        default_factory=list, description="HSA-ids (certificate SERIALNUMBER) that may call, e.g. the platform's."
    )
    proxy_cert_header: str | None = Field(
        default=None, description="A TLS-terminating proxy's header with the client certificate (URL-encoded PEM)."
    )
    proxy_addresses: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    ping_details: bool = Field(
        default=False,
        description="PingForConfiguration also lists the gateway's name, contracts, unit count, targets, start time and Python version.",
    )
    contracts_dir: RelPath | None = Field(default=None, description=(
        "A folder of the platform's own contract files (a service contract zip from Inera, unpacked: "
        "schemas/core_components/, schemas/interactions/<Op>Interaction/). Each contract it holds replaces "
        "the shipped file, for validation and for the WSDLs/XSDs served; 'gateway check' lists them."))

    @field_validator("allowed_consumers")
    @classmethod
    def _hsa_ids(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            try:
                out.append(hsa_id(item))
            except InvalidHsaId:
                out.append(item.strip().upper())  # platform ids such as SE165565594230-1000 are not unit ids
        return out

    @model_validator(mode="after")
    def _list(self) -> "RivtaSection":
        if self.require_client_cert and not self.allowed_consumers:
            raise ValueError("require_client_cert needs allowed_consumers (the HSA-ids that may call)")
        return self


class NationalSection(_Section):
    """The national platform (NTjP) / 1177 services the gateway calls as consumer."""

    profile: str = Field(default="patientportal-2.0", pattern=r"^[a-z0-9][a-z0-9.-]{0,63}$", description=(
        "The version of 1177's contracts the gateway calls (a profile under adapters/national/): "
        "patientportal-2.0 (the current inbox, the default) or mvk-inbox-2.0 (the legacy MVK inbox). 'gateway check' "
        "and start-up refuse a name the gateway has no profile for, or settings the profile cannot carry (GW086)."))
    endpoint: str = Field(description="URL of the platform's RIV-TA endpoint for AddMessage, UpdateCaseStatus, RegisterCase.")
    logical_address: str = Field(description="LogicalAddress header of calls to 1177 (the inbox's HSA-id).")
    logical_addresses: dict[Literal["AddMessage", "UpdateCaseStatus", "RegisterCase"], str] = Field(
        default_factory=dict,
        description="A LogicalAddress per contract where it is not logical_address (AddMessage, UpdateCaseStatus, RegisterCase).",
    )
    notify: bool = Field(default=True, description="Ask 1177 to notify the citizen (SMS/e-mail) of a new message.")
    timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_answer_bytes: int = Field(default=10 * MiB, ge=1024, le=100 * MiB, description=(
        "The largest answer read from the platform; a larger one is refused unread (GW063)."))
    retry: RetrySection = RetrySection()
    tls: TlsSection = TlsSection()

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"'{value}' is not an http(s) URL")
        return value

    @field_validator("logical_addresses")
    @classmethod
    def _addresses(cls, value: dict[str, str]) -> dict[str, str]:
        empty = [name for name, address in value.items() if not address.strip()]
        if empty:
            raise ValueError(f"the LogicalAddress of {', '.join(empty)} is empty (leave the key out to use logical_address)")
        return {name: address.strip() for name, address in value.items()}

    def address_for(self, contract: str) -> str:
        """The LogicalAddress of calls to ``contract``: its own, or the shared ``logical_address``."""
        own = {str(name): address for name, address in self.logical_addresses.items()}
        return own.get(contract, self.logical_address)


class ConfirmationsSection(_Section):
    """Send the citizen a receipt when the provider's system has accepted a case."""

    enabled: bool = False
    subject: str = "Vi har tagit emot ditt ärende"
    texts: dict[CaseType, str] = Field(
        default_factory=dict, description="Per case type; a type without text gets no automatic receipt."
    )


class GuardSection(_Section):
    """The wrong-patient guard (rule 14): a message whose PDFs or text name another
    citizen's personnummer or samordningsnummer is held until someone confirms it."""

    require_text: bool = Field(
        default=False,
        description="Hold a message with a PDF whose text cannot be read (a scan) too; otherwise it is sent, marked 'not checked'.",
    )


class OutboundSection(_Section):
    """Messages to citizens."""

    review_s: float = Field(default=0.0, ge=0, le=7 * 86400, description="Hold each message this long before sending; it can be cancelled meanwhile.")
    max_attachments: int = Field(default=10, ge=0, le=10)
    max_attachment_bytes: int = Field(default=20 * MiB, ge=1, le=20 * MiB, description="At most 1177's own limit, 20 MB.")
    confirmations: ConfirmationsSection = ConfirmationsSection()
    guard: GuardSection = GuardSection()


class OpsUser(_Section):
    """Someone who may use the ops view. ``password_hash`` from ``gateway ops hash-password``;
    none for a user who only signs in through the authenticating reverse proxy."""

    name: str = Field(min_length=1)
    role: Literal["monitor", "reader", "admin"]
    password_hash: SecretStr | None = None
    client_cert_hsa_id: str | None = Field(
        default=None, description="Or: signed in by a client certificate whose SERIALNUMBER is this (SITHS card)."
    )


class SignInSection(_Section):
    """Throttling of the ops view's password sign-in, shared by every process (in the store)."""

    max_failures_per_user: int = Field(default=5, ge=1, le=1000, description="Failed sign-ins for one user name within window_s that lock it.")
    max_failures_per_address: int = Field(default=20, ge=1, le=100000, description="Failed sign-ins from one address within window_s that lock it.")
    window_s: int = Field(default=900, ge=1, description="The time over which failures are counted.")
    lockout_s: int = Field(default=900, ge=1, description="How long a lock lasts ('gateway ops unlock' lifts it sooner).")


class OpsSection(_Section):
    """The operations view (/ops): who may use it and how they sign in."""

    users: list[OpsUser] = Field(default_factory=list)
    secret_key: SecretStr | None = Field(default=None, description="Signs the session cookie; if unset, one is kept in the database.")
    proxy_header: str | None = Field(default=None, description="A header an authenticating reverse proxy puts the user's name in.")
    proxy_addresses: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"], description="Where that header is trusted from.")
    session_minutes: int = Field(default=480, ge=5, le=7 * 24 * 60)
    sign_in: SignInSection = SignInSection()
    secure_cookie: bool | None = Field(
        default=None, description="Mark the session cookie Secure. null: whenever server.tls is set or gateway.public_url is https "
                                  "(set true behind a TLS-terminating proxy).")


class AlertsSection(_Section):
    """Who is told when something needs an operator, and when."""

    webhook_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    mail_from: str = "gateway@localhost"
    mail_to: list[str] = Field(default_factory=list)
    check_s: float = Field(default=60, ge=1, description="How often the thresholds are checked.")
    throttle_s: float = Field(default=3600, ge=0, description="At most one alert per target and kind in this period.")
    failure_rate: float = Field(default=0.5, gt=0, le=1, description="Alert when this share of a target's attempts fail...")
    failure_window_s: float = Field(default=900, ge=60, description="...over this window,")
    min_attempts: int = Field(default=5, ge=1, description="...and at least this many attempts were made.")
    queue_age_s: float = Field(default=1800, ge=1, description="Alert when a target's oldest undelivered row is older than this.")


class RetentionSection(_Section):
    """How long case content is kept (DESIGN.md rule 2)."""

    content_years: int = Field(default=2, ge=1, le=100, description=(
        "Case content and files: 1177's two years, in calendar years of Swedish dates "
        "(29 February + 2 years is 1 March)."))
    log_detail_years: int = Field(default=2, ge=1, le=100, description="The sync log's detail text, likewise.")
    run_at_hour: int = Field(default=3, ge=0, le=23, description="Daily, at this hour (UTC).")


class Config(_Section):
    """The whole validated configuration."""

    gateway: GatewaySection
    database: DatabaseSection = DatabaseSection()
    server: ServerSection = ServerSection()
    intake: IntakeSection = IntakeSection()
    mappings: MappingsSection = MappingsSection()
    logging: LoggingSection = LoggingSection()
    worker: WorkerSection = WorkerSection()
    targets: dict[str, TargetSection] = Field(default_factory=dict)
    national: NationalSection
    rivta: RivtaSection = RivtaSection()
    outbound: OutboundSection = OutboundSection()
    ops: OpsSection = OpsSection()
    alerts: AlertsSection = AlertsSection()
    retention: RetentionSection = RetentionSection()
    source: Path | None = Field(default=None, description="The file this was loaded from (set by load).")

    @model_validator(mode="after")
    def _reserved(self) -> "Config":
        if "national" in self.targets:
            raise ValueError("'targets.national' is reserved for the national platform; use another name")
        needs_ca = (self.rivta.require_client_cert and not self.rivta.proxy_cert_header) or any(
            t.api.client_cert_hsa_id for t in self.targets.values()) or any(u.client_cert_hsa_id for u in self.ops.users)
        if needs_ca and (self.server.tls is None or self.server.tls.client_ca is None):
            raise ValueError("client certificates are configured (rivta, targets.*.api or ops.users) but "
                             "server.tls.client_ca is not: set it so they can be verified")
        return self

    def warnings(self) -> list[str]:
        """Settings that work but weaken security or leave failures unseen (shown by ``gateway check``)."""
        found = []
        if not self.alerts.webhook_url and not (self.alerts.smtp_host and self.alerts.mail_to):
            found.append("alerts: no alert channel (webhook_url, or smtp_host with mail_to): dead deliveries and "
                         "stuck queues will be seen only by someone who looks at the ops view or /metrics.")
        for name, section in [*((f"targets.{n}", t) for n, t in self.targets.items()), ("national", self.national)]:
            if not section.tls.verify:
                found.append(f"{name}.tls: certificate verification is OFF (insecure: true); never in production.")
        if self.server.tls is None and self.rivta.require_client_cert and self.rivta.proxy_cert_header is None:
            found.append("rivta.require_client_cert without server.tls or a proxy header: no caller can be verified.")
        return found

    def redacted(self) -> dict[str, Any]:
        """The config as plain data with secrets shown as '***' (for ``gateway check``)."""
        return self.model_dump(mode="json")


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """``annotation`` without ``Annotated`` and ``None``: (what is left, whether None is allowed).
    A union of several types (the kinds of target) comes back as a tuple of them."""
    nullable = False
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if origin in (Union, types.UnionType):
            members = tuple(a for a in get_args(annotation) if a is not type(None))
            nullable = nullable or len(members) < len(get_args(annotation))
            if len(members) == 1:
                annotation = members[0]
                continue
            return members, nullable
        return annotation, nullable


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


#: What ``_key_type`` answers for a key the models do not have.
_UNKNOWN = object()


def _key_type(keys: list[str], data: dict[str, Any]) -> Any:
    """The annotation of the config key at ``keys`` (``_UNKNOWN`` when the models have no
    such key). A target's kind is read from ``data`` to choose between the kinds' models."""
    annotation: Any = Config
    node: Any = data
    for key in keys:
        annotation, _ = _unwrap(annotation)
        if isinstance(annotation, tuple):  # the kinds of target: the one the data names
            kind = node.get("kind") if isinstance(node, dict) else None
            chosen = [m for m in annotation if _is_model(m) and "kind" in m.model_fields
                      and kind in get_args(m.model_fields["kind"].annotation)]
            candidates = chosen or [m for m in annotation if _is_model(m) and key in m.model_fields]
            if not candidates:
                return _UNKNOWN
            annotation = candidates[0]
        if _is_model(annotation):
            field_info = annotation.model_fields.get(key)
            if field_info is None:
                return _UNKNOWN
            annotation = field_info.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return _UNKNOWN  # inside a list or a plain value: not addressable by name
        node = node.get(key) if isinstance(node, dict) else None
    return annotation



def _env_value(name: str, dotted: str, raw: str, annotation: Any) -> Any:
    """An override's text as the key's own type takes it: plain text for a scalar (the
    model converts it, so a name stays text and ``no`` is false only for a boolean), JSON
    for a list or a section, ``null`` for a key that may be null."""
    if annotation is _UNKNOWN:
        return raw  # the model reports the unknown key with its dotted path
    inner, nullable = _unwrap(annotation)
    if nullable and raw.strip() == "null":
        return None
    members = inner if isinstance(inner, tuple) else (inner,)
    if any(_is_model(m) or get_origin(m) in (dict, list, tuple, set) or m in (dict, list) for m in members):
        try:
            return json.loads(raw)
        except ValueError:
            raise ConfigError(
                f"environment variable {name}: config key '{dotted}' is a list or a section, "
                f"and '{raw[:60]}' is not JSON.",
                hint='Write it as JSON, e.g. ["a", "b"] or {"key": "value"}, or set its keys one by one.',
                field=dotted,
            ) from None
    return raw


def _apply_env_overrides(data: dict[str, Any], environ: dict[str, str]) -> dict[str, str]:
    """Put every ``GATEWAY__SECTION__KEY`` variable into ``data``, converted by the key's
    own type. Returns dotted key → variable name, to name the variable in errors."""
    origins: dict[str, str] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        if not all(keys):
            raise ConfigError(f"environment variable {name} has an empty key between '__'.")
        dotted = ".".join(keys)
        value = _env_value(name, dotted, raw, _key_type(keys, data))
        node = data
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                path = ".".join(keys[: depth + 1])
                raise ConfigError(f"environment variable {name}: config key '{path}' is not a section.", field=path)
            node = child
        node[keys[-1]] = value
        origins[dotted] = name
    return origins


def _resolve_secrets(node: Any, base_dir: Path, environ: dict[str, str], path: str = "") -> Any:
    if isinstance(node, dict):
        if set(node) == {"$env"}:
            var = str(node["$env"])
            if var not in environ:
                raise ConfigError(
                    f"config key '{path}' reads environment variable {var}, which is not set.",
                    hint=f"Set {var} in the gateway's environment.",
                    field=path,
                )
            return environ[var]
        if set(node) == {"$file"}:
            file = Path(str(node["$file"]))
            file = file if file.is_absolute() else base_dir / file
            try:
                return file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(
                    f"config key '{path}' reads file {file}, which cannot be read ({exc.strerror}).",
                    hint="Create the file or correct the path (relative paths start at the config file's folder).",
                    field=path,
                ) from None
        return {k: _resolve_secrets(v, base_dir, environ, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_secrets(v, base_dir, environ, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


def _as_config_error(exc: ValidationError, origins: dict[str, str] | None = None) -> ConfigError:
    lines = []
    first_path = None
    for err in exc.errors(include_url=False, include_input=False):
        loc = [p for p in err["loc"] if p != "[key]"]  # pydantic marks a dict key it refused
        if len(loc) > 2 and loc[0] == "targets" and loc[2] in ("rest", "soap"):
            del loc[2]  # the discriminator pydantic adds for the kind of target
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc.append("kind")
            err = {**err, "msg": "must be one of: rest, soap"}
        path = ".".join(str(p) for p in loc)
        first_path = first_path or path
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (a typo?); config.example.yaml lists every key"
        elif err["type"] == "missing":
            msg = "is required"
        variable = next((v for k, v in (origins or {}).items() if path == k or path.startswith(k + ".")), None)
        if variable:
            msg += f" (from environment variable {variable})"
        lines.append(f"'{path}': {msg}")
    return ConfigError("config key " + "; ".join(lines) + ".", field=first_path)


def load(path: str | os.PathLike[str] | None = None, *, environ: dict[str, str] | None = None) -> Config:
    """Load and validate the config file at ``path`` (default: ``$GATEWAY_CONFIG``)."""
    environ = dict(os.environ if environ is None else environ)
    path = path or environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(
            "no config file given.",
            hint=f"Pass --config PATH or set {CONFIG_ENV}; config.example.yaml is a working start.",
        )
    file = Path(path).resolve()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}.", hint="Check the path.") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {file} is not valid YAML{where}.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file} must hold a mapping of sections at the top level.")
    return from_dict(data, base_dir=file.parent, environ=environ, source=file)


def from_dict(
    data: dict[str, Any],
    *,
    base_dir: Path,
    environ: dict[str, str] | None = None,
    source: Path | None = None,
) -> Config:
    """Validate already-parsed config data (used by ``load`` and by tests)."""
    environ = dict(os.environ if environ is None else environ)
    data = _resolve_secrets(data, base_dir, environ)
    origins = _apply_env_overrides(data, environ)
    data = _resolve_secrets(data, base_dir, environ)
    if source is not None:
        data["source"] = source
    try:
        return Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise _as_config_error(exc, origins) from None


__all__ = ["Config", "ConfigError", "SecretStr", "load", "from_dict", "CONFIG_ENV"]
