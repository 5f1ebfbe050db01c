"""Alert channels: a webhook (JSON POST) and e-mail over SMTP.

Role: carry an ``Alert`` to the people who run the gateway. The worker decides when to
alert (thresholds, throttling, recovery); this module only delivers.

May import: ``adapters.base``, ``errors``.

Invariants: an alert names targets, counts, error codes and case ids only, never a
citizen's text or person id; a channel that fails raises ``DeliveryError`` and never
takes the worker down; the SMTP password is never printed.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from typing import Any

import requests

from adapters.base import classify_exception, classify_status
from errors import TargetUnavailable


@dataclass(frozen=True)
class Alert:
    """What needs an operator: ``kind`` dead | failure_rate | queue_age; ``recovered`` for the all-clear."""

    kind: str
    target: str
    subject: str
    text: str
    recovered: bool = False
    gateway: str = ""


class WebhookChannel:
    """POSTs the alert as JSON to a URL (chat tools and incident systems take this)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, session: requests.Session | None = None):
        self.url = url
        self.timeout_s = timeout_s
        self.session = session or requests.Session()

    def send(self, alert: Alert) -> None:
        try:
            response = self.session.post(self.url, json={**asdict(alert), "text": f"{alert.subject}\n{alert.text}"},
                                         timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise classify_exception("alerts.webhook", exc, "an alert") from None
        if not 200 <= response.status_code < 300:
            raise classify_status("alerts.webhook", response.status_code, "an alert")


class SmtpChannel:
    """Sends the alert as a plain-text e-mail."""

    def __init__(self, *, host: str, port: int, sender: str, recipients: list[str], starttls: bool = False,
                 username: str | None = None, password: Any = None, timeout_s: float = 15.0):
        self.host, self.port, self.sender, self.recipients = host, port, sender, recipients
        self.starttls, self.username, self.password, self.timeout_s = starttls, username, password, timeout_s

    def send(self, alert: Alert) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["Subject"] = alert.subject
        message.set_content(f"{alert.text}\n\n-- {alert.gateway or '1177 integration gateway'}\n")
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    secret = self.password.get_secret_value() if hasattr(self.password, "get_secret_value") else self.password
                    smtp.login(self.username, secret or "")
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise TargetUnavailable(f"the alert e-mail could not be sent via {self.host}:{self.port} ({type(exc).__name__}).") from None


def channels_from(settings: Any) -> list[Any]:
    """The channels an ``alerts`` config section asks for."""
    found: list[Any] = []
    if settings.webhook_url:
        found.append(WebhookChannel(settings.webhook_url))
    if settings.smtp_host and settings.mail_to:
        found.append(SmtpChannel(host=settings.smtp_host, port=settings.smtp_port, sender=settings.mail_from,
                                 recipients=list(settings.mail_to), starttls=settings.smtp_starttls,
                                 username=settings.smtp_username, password=settings.smtp_password))
    return found
