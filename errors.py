"""The gateway's exception tree: every error a user can see, with a stable code.

Role: one place that names what can go wrong, so that a SOAP fault, a result with
``resultCode ERROR``, a CLI message and a log line all say the same thing. Each class
says when it is raised. This module is a leaf: it imports nothing of ours.

Invariants: a code (``GW0xx``) is never reused for another meaning; a message never
contains a personnummer, a secret or file content (callers pass masked values).

    GatewayError                    every error of ours; .code, .message, .hint
    ├── ConfigError          GW001  the config file is wrong (names the dotted key)
    │   └── ProfileConfigError GW086  national.profile names no profile, or the config asks for what it cannot carry
    ├── MappingError         GW002  a mapping file is wrong, or a look-up fell through
    │   ├── MappingsNotReloaded GW073  a reload (SIGHUP) found the new files wrong: the old mappings stay in force
    │   └── MappingsChanging GW074  the files changed while a reload read them: the old mappings stay in force
    ├── ContractError        GW003  a contract file (WSDL/XSD) is missing or broken
    │   └── PlatformContractError GW080  rivta.contracts_dir (the platform's own files) is missing, laid out otherwise or does not fit
    ├── StoreError           GW050  the database cannot be read or written
    │   └── TargetNotEmpty   GW051  gateway migrate --from-sqlite: the PostgreSQL database already holds data
    ├── WorkerProcessDied    GW055  gateway serve's worker process died unasked (logged; a new one takes over)
    ├── DeliveryError               a target did not take a delivery; .permanent says if a retry can help
    │   ├── TargetUnavailable GW060  connection refused, DNS, TLS or timeout (transient)
    │   ├── TargetFailed     GW061  HTTP 408/429/5xx or a SOAP Server fault (transient)
    │   ├── TargetRefused    GW062  another HTTP 4xx or a SOAP Client fault (permanent)
    │   ├── BadTargetAnswer  GW063  a 2xx not in success_statuses, or whose body is not what the field map expects (permanent)
    │   ├── AttemptsExhausted GW064  a transient failure that used up its attempts (permanent)
    │   ├── NationalRefused  GW065  1177 answered resultCode ERROR (permanent; its message kept)
    │   └── Undeliverable    GW066  the delivery cannot be built: content purged or gone (permanent)
    ├── RecordError                 a record the request names is missing, or in a state that does not allow it
    │   ├── NotFound         GW032  no such case or message (API: 404)
    │   ├── NotCancellable   GW034  the message has been sent (or is being sent): it is final (API: 409)
    │   └── NotHeld          GW048  a release of a message the wrong-patient guard does not hold (API: 409)
    ├── ApiError                    the provider REST API refuses a call (JSON {code, message, field})
    │   ├── Unauthenticated  GW030  401: no or wrong credentials
    │   ├── Forbidden        GW031  403: the case is not routed to the caller's target
    │   ├── BadJson          GW033  400: the body is not the JSON object the API describes
│   └── MethodNotAllowed GW037  405: the path does not take this HTTP method
    ├── RequestRefused              the request itself is refused (SOAP Fault, soap:Client)
    │   ├── PayloadTooLarge  GW010  the body is over the configured limit
    │   ├── HostileXml       GW011  a DOCTYPE, entity or processing trick; too many namespaces or attributes
    │   ├── MalformedXml     GW012  not well-formed XML, or not UTF-8
    │   ├── NotSoap11        GW013  not a SOAP 1.1 envelope (e.g. SOAP 1.2)
    │   ├── UnknownContract  GW014  the Body's first child names no contract we serve
    │   ├── SchemaViolation  GW015  the Body does not match the contract's XSD
    │   ├── UnknownLogicalAddress GW016  LogicalAddress missing or not a unit we know
    │   ├── UnsupportedMediaType GW017  wrong Content-Type for SOAP 1.1
    │   ├── CallerNotAllowed GW018  no verified client certificate, or one not on the allow-list
    │   ├── HeaderNotUnderstood GW070  a mustUnderstand="1" header the gateway does not process (soap:MustUnderstand)
    │   ├── SoapActionMismatch GW071  the SOAPAction HTTP header names another operation than the Body
    │   └── NoPublicAddress  GW072  a WSDL asked for through a non-loopback Host while gateway.public_url is unset
    ├── OpsRefused                  the ops view refuses a request (an error page with the code)
    │   ├── BadOpsRequest    GW038  400: a page cursor, row id or return path that is not valid
    │   └── SignInLocked     GW039  429: too many failed sign-ins for the user or from the address
    ├── MessageHeld          GW047  202: the wrong-patient guard holds a message until it is released (not a refusal)
    ├── RuleViolation               a 1177 rule refuses the content (resultCode ERROR)
    │   ├── InvalidPersonId  GW020  anonymous, or personnummer/samordningsnummer invalid
    │   ├── InvalidHsaId     GW021  an HSA-id does not have the HSA-id syntax
    │   ├── AttachmentTypeRefused GW022  content is not PDF, GIF, JPEG or PNG all the way through (says why)
    │   ├── AttachmentTooLarge GW023  an attachment is over 20 MB
    │   ├── TooManyAttachments GW024  more attachments than the sender may send
    │   ├── EventDateInvalid GW025  complaint without event date, or one in the future
    │   ├── LocationMissing  GW026  patient-board complaint with neither unit nor place
    │   ├── UnknownCase      GW027  a follow-up message for a case we never received
    │   ├── IdConflict       GW028  a known caseId/messageId resent with other content
    │   ├── InvalidValue     GW029  any other field that breaks a rule (names the field)
    │   ├── UnmappedUnit     GW035  a sending unit that maps to no HSA-id
    │   ├── ClosingCodesMissing GW036  a complaint closed without problem and business-area codes
    │   ├── CasePurged       GW040  the case's content was purged after the retention period
    │   ├── CaseClosed       GW041  the case is closed: no more messages until it is reopened
    │   ├── ExternalAttachments GW042  files on a case registered outside 1177 (RegisterCase carries none)
    │   ├── RenewalWithoutList GW043  chosen medications where rule 9 shows no list (under 16, proxy for a child)
    │   ├── SenderNotAllowed GW044  a message signed by a unit that may not answer for the case's unit
    │   ├── CitizenFilesRefused GW045  a citizen's files in a case type where the clinic takes none
    │   ├── SenderMayNotAttach GW046  files or a counter-question the sender's role may not send (rule 13)
    │   │   (GW083-GW085, what national.profile cannot carry: 422 at the API, and each is also a
    │   │   permanent DeliveryError, a dead row with an alert, if it reaches the worker)
    │   ├── AttachmentsNotCarried GW083  files on a message to a profile that carries none
    │   ├── KindNotCarried   GW084  a message kind the profile cannot carry (mvk-inbox-2.0: INFO only)
    │   └── ActionNotCarried GW085  a status change or a registered case, for which the profile has no contract
    └── InternalError        GW099  a bug: logged with a reference, never with details

Technical errors (``RequestRefused``, ``StoreError``, ``InternalError``) become SOAP
faults; logical ones (``RuleViolation``) become a normal response with ``resultCode
ERROR``, ``errorCode`` and ``message``.
"""

from __future__ import annotations

import re
from typing import Any

_PNR_IN_TEXT = re.compile(r"(?<!\d)(19|20)(\d{6})[-+]?(\d{4})(?!\d)")
_PNR10_IN_TEXT = re.compile(r"(?<!\d)(\d{2})(\d{4})[-+](\d{4})(?!\d)")  # YYMMDD-NNNC


def redact_person_ids(text: str) -> str:
    """Replace everything in ``text`` that looks like a personnummer (12 digits, or the
    10-digit ``YYMMDD-NNNC`` form) by its mask. The last line of defence of every message a
    user or a log sees (logs, faults, results), so it lives with the errors, in the leaf."""
    text = _PNR_IN_TEXT.sub(lambda m: m.group(1) + m.group(2)[:2] + "********", text)
    return _PNR10_IN_TEXT.sub(lambda m: m.group(1) + "****-****", text)


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose.

    ``message`` says what went wrong, ``hint`` what to do about it; ``field`` names the
    element or key concerned where there is one.
    """

    code: str = "GW000"
    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        text = f"{self.code} {self.message}"
        if self.hint:
            text += f" {self.hint}"
        return text


class ConfigError(GatewayError):
    """Raised at start-up and by ``gateway check`` when the config file is wrong."""

    code = "GW001"
    hint = "Fix the key in the config file (or its GATEWAY__ environment override) and start again."


class MappingError(GatewayError):
    """Raised when a file in ``mappings/`` is wrong or a look-up falls through."""

    code = "GW002"
    hint = "Correct the mapping file and run 'gateway check'."


class MappingsNotReloaded(MappingError):
    """Not raised: the code and text of a reload (SIGHUP, ``systemctl reload``) whose new
    mapping files have a problem that ``gateway check`` would report. The gateway goes on
    with the mappings it had; the log, ``/health/ready`` and the ops mappings page say why."""

    code = "GW073"
    hint = "Fix the files ('gateway mappings check' lists every problem), then reload again (SIGHUP)."


class MappingsChanging(MappingError):
    """Not raised: the code and text of a reload that found the mapping files changing while
    it read them (a copy or a checkout still under way), so what it read may be half old and
    half new. The gateway goes on with the mappings it had."""

    code = "GW074"
    hint = "Reload again (SIGHUP) once every file is in place."


class ContractError(GatewayError):
    """Raised at start-up when a WSDL/XSD in ``contracts/`` is missing or does not compile."""

    code = "GW003"
    hint = "Restore the contracts/ folder from the release; it must not be edited by hand."


class PlatformContractError(ContractError):
    """Raised at start-up and by ``gateway check`` when ``rivta.contracts_dir`` (a folder of the
    platform's own contract files, laid out as a RIV-TA TKB: ``schemas/core_components/``,
    ``schemas/interactions/<Op>Interaction/``) is missing, holds a file that does not parse or
    compile, or holds a contract in another version or shape than the one the gateway speaks."""

    code = "GW080"
    hint = ("Point rivta.contracts_dir at the unpacked service contract zip (the folder that holds schemas/), "
            "or remove the contract's folder from it to use the shipped file; 'gateway check' lists what it replaces.")
class ProfileConfigError(ConfigError):
    """Raised by ``gateway check`` and at start-up when ``national.profile`` names no profile
    the gateway has, or the config turns on something that profile cannot carry (e.g. the
    automatic receipts, kind CONFIRMATION, with ``mvk-inbox-2.0``)."""

    code = "GW086"
    hint = "Change the config key it names, or choose a national.profile that carries it (README: National profiles)."


class StoreError(GatewayError):
    """Raised when the database cannot be read or written (locked too long, disk full)."""

    code = "GW050"
    hint = "Nothing was stored; send the request again later. Operators: check the database file and disk."


class TargetNotEmpty(StoreError):
    """Raised by ``gateway migrate --from-sqlite`` when the PostgreSQL database already holds
    rows: a copy never mixes two stores' histories."""

    code = "GW051"
    hint = ("Copy into a new, empty PostgreSQL database (CREATE DATABASE ...), or empty this one first "
            "if its rows are not needed.")


class WorkerProcessDied(GatewayError):
    """Logged (never raised to a caller) by ``gateway serve``'s master when its worker
    process ended without being asked to (killed, out of memory, a crash): a new one is
    started at once and requeues what the dead one held."""

    code = "GW055"
    hint = ("Nothing is lost: the new worker process delivers what the dead one held, with the same idempotency "
            "keys. If it keeps dying, read the lines the worker logged before it and the system log (out of memory?).")


class DeliveryError(GatewayError):
    """A delivery to a target failed. ``permanent`` is True when retrying cannot help.

    Raised by adapters (never the store); the worker turns it into a retry or a dead row.
    ``status_code`` is the HTTP status where there was one; ``response`` what came back
    where something did (``{status, headers, body, truncated}``: a few headers and the first
    kilobytes of the body, person ids masked), kept on the attempt for readers.
    """

    code = "GW060"
    permanent = False

    def __init__(self, message: str, *, status_code: int | None = None, retry_after_s: float | None = None,
                 response: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.status_code = status_code
        self.retry_after_s = retry_after_s
        self.response = response


class TargetUnavailable(DeliveryError):
    """Raised when the target cannot be reached (connection, DNS, TLS handshake, timeout)."""

    code = "GW060"
    hint = "The gateway retries; check that the provider system is up and reachable."


class TargetFailed(DeliveryError):
    """Raised on HTTP 408, 429 or 5xx, or a SOAP Server fault: the target may take it later."""

    code = "GW061"
    hint = "The gateway retries; if it persists, look at the provider system's own log."


class TargetRefused(DeliveryError):
    """Raised on any other HTTP 4xx or a SOAP Client fault: the target will never take it."""

    code = "GW062"
    permanent = True
    hint = "Fix the target's configuration or field map (or the provider system), then replay the dead row."


class BadTargetAnswer(DeliveryError):
    """Raised when a 2xx answer is not one of the target's ``success_statuses``, or lacks what
    the field map says it holds (e.g. the provider's case id)."""

    code = "GW063"
    permanent = True
    hint = "Check the target's response mapping against what the provider system answers, then replay."


class AttemptsExhausted(DeliveryError):
    """Recorded when a row has failed transiently on every allowed attempt."""

    code = "GW064"
    permanent = True
    hint = "Fix the cause (see the attempts), then replay the dead row."


class NationalRefused(DeliveryError):
    """Raised when 1177 answers ``resultCode ERROR``: it will not take this message as it is."""

    code = "GW065"
    permanent = True
    hint = "Read 1177's message in the attempt, correct the message or case, then replay or cancel it."


class Undeliverable(DeliveryError):
    """Raised by the worker when a row can never be delivered as it stands: the content it
    carries has been purged or is missing. The row goes dead at once, with an alert."""

    code = "GW066"
    permanent = True
    hint = "Nothing can be sent for this row; cancel it (gateway outbox cancel ID) and tell the provider."


class RecordError(GatewayError):
    """A stored record the request names is not there, or not in a state that allows it.
    Raised by the store (and by the API and the worker for what they look up); each entry
    point says it its own way (the API: 404 or 409, the ops view: an error page)."""

    code = "GW032"


class ApiError(GatewayError):
    """The provider REST API refuses a call; ``status`` is the HTTP status to answer."""

    code = "GW033"
    status = 400


class Unauthenticated(ApiError):
    """Raised when a call to the provider API has no valid credentials."""

    code = "GW030"
    status = 401
    hint = "Send 'Authorization: Bearer <token>' with the API token configured for your target."


class Forbidden(ApiError):
    """Raised when a client touches a case that is routed to another target."""

    code = "GW031"
    status = 403
    hint = "A target may only touch the cases routed to it (mappings/units.yaml)."


class NotFound(RecordError):
    """Raised when the case or message named in the path does not exist."""

    code = "GW032"
    hint = "Check the case id: it is 1177's caseId, or the id the gateway returned for a registered case."


class BadJson(ApiError):
    """Raised when the body is not a JSON object of the shape the OpenAPI document describes."""

    code = "GW033"
    status = 400
    hint = "See /api/openapi.json for the body this call takes."


class NotCancellable(RecordError):
    """Raised when cancelling a message that has been sent, or is being sent, to the citizen."""

    code = "GW034"
    hint = "A message delivered to the citizen's inbox cannot be recalled; send a correction instead."


class NotHeld(RecordError):
    """Raised when releasing a message that the wrong-patient guard does not hold (it was
    never held, or it was cancelled)."""

    code = "GW048"
    hint = "Only a message answered with status 'held' (GW047) waits for a release; the others are sent without one."


class MessageHeld(GatewayError):
    """Not raised: the code and text of the answer (HTTP 202, status ``held``) to a message
    that the wrong-patient guard (rule 14) holds, because its files or text name a
    personnummer or samordningsnummer that is neither the citizen's nor the
    representative's (or, with ``outbound.guard.require_text``, a PDF has no readable
    text). The message names the places (file name and page, or 'body'), never the id."""

    code = "GW047"
    status = 202
    hint = ("Preview it (GET …/messages/{messageId}); if it is right, confirm it with POST …/messages/{messageId}/release, "
            "otherwise cancel it (POST …/cancel) and send a corrected one.")


class MethodNotAllowed(ApiError):
    """Raised when an API path is called with a method it does not take (e.g. PUT, DELETE)."""

    code = "GW037"
    status = 405
    hint = "See /api/openapi.json for the methods of each path."


class RequestRefused(GatewayError):
    """A request that is refused as a whole before its content is looked at (SOAP Client fault)."""

    code = "GW010"


class PayloadTooLarge(RequestRefused):
    """Raised when a request body is over ``intake.max_body_bytes``."""

    code = "GW010"
    hint = "Send smaller attachments (at most 20 MB each, 5 per message)."


class HostileXml(RequestRefused):
    """Raised when a request carries a DOCTYPE, an entity declaration or similar, or more
    namespace declarations or SOAP-element attributes than any SOAP stack writes."""

    code = "GW011"
    hint = ("Send plain SOAP 1.1 XML without a DOCTYPE or entity declarations, declaring only the "
            "namespaces it uses.")


class MalformedXml(RequestRefused):
    """Raised when the body is not well-formed UTF-8 XML."""

    code = "GW012"
    hint = "Send well-formed XML encoded as UTF-8."


class NotSoap11(RequestRefused):
    """Raised when the document is not a SOAP 1.1 envelope with a Body."""

    code = "GW013"
    hint = "Send a SOAP 1.1 envelope (namespace http://schemas.xmlsoap.org/soap/envelope/)."


class UnknownContract(RequestRefused):
    """Raised when the first child of Body is in a namespace the gateway does not serve."""

    code = "GW014"
    hint = "Check the service contract namespace; the WSDLs are listed at GET /rivta."


class SchemaViolation(RequestRefused):
    """Raised when the Body does not validate against the contract's XSD."""

    code = "GW015"
    hint = "Build the request from the contract's WSDL (GET /rivta lists them)."


class UnknownLogicalAddress(RequestRefused):
    """Raised when the LogicalAddress header is missing or names a unit not in the mappings."""

    code = "GW016"
    hint = "Send the case to a unit HSA-id that this gateway serves (see mappings/units.yaml)."


class UnsupportedMediaType(RequestRefused):
    """Raised when the Content-Type is not the SOAP 1.1 one (text/xml)."""

    code = "GW017"
    hint = "Send Content-Type: text/xml; charset=UTF-8."


class CallerNotAllowed(RequestRefused):
    """Raised when /rivta requires a client certificate and the caller has none, or its
    HSA-id (certificate SERIALNUMBER) is not in ``rivta.allowed_consumers``."""

    code = "GW018"
    hint = "Call with a function certificate whose HSA-id the gateway's operators have allowed."


class OpsRefused(GatewayError):
    """The ops view refuses a request; ``status`` is the HTTP status of its error page."""

    code = "GW038"
    status = 400


class BadOpsRequest(OpsRefused):
    """Raised when a page cursor, a row id or a return path in an ops request is not valid."""

    code = "GW038"
    status = 400
    hint = "Use the links and forms of the ops view; they only make valid requests."


class SignInLocked(OpsRefused):
    """Raised when a sign-in comes after too many failed ones for the user or from the address."""

    code = "GW039"
    status = 429
    hint = "Wait until the lock ends, or ask an admin to lift it ('gateway ops unlock USER')."


class HeaderNotUnderstood(RequestRefused):
    """A SOAP Header child carries ``mustUnderstand="1"`` (for the gateway, or for no actor in
    particular) and is not one the gateway processes; SOAP 1.1 answers ``soap:MustUnderstand``."""

    code = "GW070"
    hint = "Send only LogicalAddress and WS-Addressing headers with mustUnderstand=\"1\", or set it to \"0\"."


class SoapActionMismatch(RequestRefused):
    """The ``SOAPAction`` HTTP header is not empty and is not ``<ResponderNamespace>:<Operation>``
    of the Body's first child (a missing or empty SOAPAction is accepted, as the platform does)."""

    code = "GW071"
    hint = "Send the SOAPAction of the operation in the Body (or none)."


class NoPublicAddress(RequestRefused):
    """A WSDL was asked for through a Host that is not a loopback address while
    ``gateway.public_url`` is unset: the gateway never writes a caller's Host into a WSDL."""

    code = "GW072"
    hint = "Set gateway.public_url to the address the national platform reaches the gateway at."


class RuleViolation(GatewayError):
    """Content that breaks one of 1177's rules; answered with ``resultCode ERROR``."""

    code = "GW029"


class InvalidPersonId(RuleViolation):
    """Raised when a person id is missing, has the wrong type OID or fails its check."""

    code = "GW020"
    hint = "Send a valid 12-digit personnummer or samordningsnummer; complaints are never anonymous."


class InvalidHsaId(RuleViolation):
    """Raised when an HSA-id does not follow SE + organisation number + '-' + suffix."""

    code = "GW021"
    hint = "An HSA-id is 'SE', a 10-digit organisation number, '-' and letters or digits, at most 31 characters."


class AttachmentTypeRefused(RuleViolation):
    """Raised when an attachment's content is not PDF, GIF, JPEG or PNG, or contradicts its
    mimeType, or is not that type all the way through: a PDF that does not parse, is locked
    with a password, or carries JavaScript, a launch action or a file inside it; a picture
    that does not decode whole, or has more pixels than the gateway decodes. The message
    names the attachment and the reason; the hint says what to send instead."""

    code = "GW022"
    hint = "Only PDF, GIF, JPEG and PNG files can be attached."


class AttachmentTooLarge(RuleViolation):
    """Raised when one attachment is over the size limit (20 MB)."""

    code = "GW023"
    hint = "Attach files of at most 20 MB each."


class TooManyAttachments(RuleViolation):
    """Raised when a message has more attachments than its sender may send."""

    code = "GW024"
    hint = "A citizen may attach at most 5 files per message, the care side at most 10."


class EventDateInvalid(RuleViolation):
    """Raised when a complaint has no event date, or one in the future."""

    code = "GW025"
    hint = "Give the date of the event (for a whole care process, its start date), not in the future."


class LocationMissing(RuleViolation):
    """Raised when a complaint to the patient board names neither a unit nor a place."""

    code = "GW026"
    hint = "Give the care unit's HSA-id or, for the patient board, a free-text location."


class UnknownCase(RuleViolation):
    """Raised when a follow-up message refers to a case the gateway never received."""

    code = "GW027"
    hint = "Send the case itself first (ProcessCase), then its messages."


class IdConflict(RuleViolation):
    """Raised when a caseId or messageId already stored arrives again with other content."""

    code = "GW028"
    hint = "Use a new id for new content; a retry must repeat the original request exactly."


class InvalidValue(RuleViolation):
    """Raised when a field breaks a rule not covered by a more specific class."""

    code = "GW029"
    hint = "Correct the field named in the message."


class UnmappedUnit(RuleViolation):
    """Raised when a provider's sending unit (code or HSA-id) maps to no unit in units.yaml."""

    code = "GW035"
    hint = "Give a unit code or HSA-id that mappings/units.yaml lists for your target."


class ClosingCodesMissing(RuleViolation):
    """Raised when a complaint is closed without problem codes and a business-area code."""

    code = "GW036"
    hint = "Closing a complaint needs at least one problem code and a business-area code."


class CasePurged(RuleViolation):
    """Raised when a message, status or reply names a case whose content was purged after
    the retention period (two years from its last activity): it can no longer be delivered."""

    code = "GW040"
    hint = "The case's content has been purged after the retention period; start a new case."


class CaseClosed(RuleViolation):
    """Raised when a message arrives for a case that is CLOSED; 1177 closes the dialogue then."""

    code = "GW041"
    hint = "The case is closed. The care provider can reopen it (status IN_PROGRESS, or 'reopen': true on the message)."


class ExternalAttachments(RuleViolation):
    """Raised when a case registered outside 1177 carries files: RegisterCase cannot carry them."""

    code = "GW042"
    hint = "Register the case without files, then send the files to the citizen as a message in the case."


class RenewalWithoutList(RuleViolation):
    """Raised when a prescription renewal names medications for a citizen under 16, or from
    a guardian acting as proxy for a child: rule 9 showed no list to choose from."""

    code = "GW043"
    hint = "A renewal for a child, or by a guardian as proxy, names no chosen medications; describe them in the text."


class SenderNotAllowed(RuleViolation):
    """Raised when a message to the citizen is signed by a unit other than the case's own,
    and mappings/units.yaml does not let that unit answer for it (``answers_for``)."""

    code = "GW044"
    hint = "Sign with the case's own unit, or list the case's unit under answers_for of the sending unit in mappings/units.yaml."


class CitizenFilesRefused(RuleViolation):
    """Raised when a citizen's case or message carries files in a case type for which the
    receiving clinic does not take them (``citizen_attachments`` in mappings/units.yaml, rule 12)."""

    code = "GW045"
    hint = "Send it without files; the clinic takes files from citizens only in the case types it lists."


class SenderMayNotAttach(RuleViolation):
    """Raised when a reply's ``sentBy`` role may not send what it carries (rule 13): a case
    receiver attaches files only to a partial answer (the case handed on), a case handler to
    an answer or a counter-question, and a counter-question only in a case a citizen started."""

    code = "GW046"
    hint = "Send it as the role 1177 allows for it (a case handler answers with files), or without the files."


#: What the national profile cannot carry (``national.profile``, ``adapters/national/``) is
#: refused by the provider API (a RuleViolation: 422) before anything is stored; if it reaches
#: the worker anyway (a polled update, a row queued under another profile) the delivery fails
#: permanently (a DeliveryError): the row is dead, with an alert, never sent in part.


class AttachmentsNotCarried(RuleViolation, DeliveryError):
    """Raised for a message to the citizen with files when the national profile carries none
    (``mvk-inbox-2.0``: the legacy inbox's message has no attachment element)."""

    code = "GW083"
    permanent = True
    hint = "Send the message without files (tell the citizen where to get them), or use a profile that carries files."


class KindNotCarried(RuleViolation, DeliveryError):
    """Raised for a message kind the national profile cannot carry (``mvk-inbox-2.0`` has no
    message kinds and no case thread: it carries INFO notices only)."""

    code = "GW084"
    permanent = True
    hint = "Send it as kind INFO (a notice outside the case), or use a profile that carries the kind."


class ActionNotCarried(RuleViolation, DeliveryError):
    """Raised for a status change or a case registered outside 1177 when the national profile
    has no contract for it (``mvk-inbox-2.0`` has AddMessage only)."""

    code = "GW085"
    permanent = True
    hint = "The configured profile cannot tell 1177 this; keep it in your own system, or use a profile that has the contract."


class InternalError(GatewayError):
    """An unexpected failure. The response carries only a reference; the log has the rest."""

    code = "GW099"
    hint = "Nothing was stored; try again. If it persists, give operations the reference."


#: Every user-visible code, for documentation and for tests that check codes stay unique.
ALL_CODES: dict[str, type[GatewayError]] = {}
for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, GatewayError) and _cls not in (GatewayError, RequestRefused, RuleViolation, DeliveryError, ApiError, OpsRefused):
        ALL_CODES.setdefault(_cls.code, _cls)
