"""Structured logging: one line per event, with correlation id, never a person id.

Role: configure the standard ``logging`` tree for the gateway (JSON lines or plain
text), carry the current exchange's correlation id in a context variable so every line
of that exchange has it, and scrub anything shaped like a personnummer from every line
as a last line of defence (callers already log masked values).

May import: ``errors`` (person-id redaction).

Invariants: every record passes the redaction filter before it is formatted; payloads
are never logged above DEBUG (by the callers' contract).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from typing import Any

from errors import redact_person_ids

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class RedactFilter(logging.Filter):
    """Masks personnummer-shaped digit runs in the message and in extra fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_person_ids(record.getMessage())
        record.args = ()
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact_person_ids(value))
        if getattr(record, "correlation_id", None) is None:
            record.correlation_id = correlation_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event text and the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and value is not None and not key.startswith("_"):
                line[key] = value
        if record.exc_info and record.levelno <= logging.DEBUG:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_info:
            line["exception"] = record.exc_info[0].__name__ if record.exc_info[0] else None
        return redact_person_ids(json.dumps(line, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD and v is not None and not k.startswith("_")
        )
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        return redact_person_ids(f"{base} {extras}".rstrip())


class StderrHandler(logging.StreamHandler[Any]):
    """Writes to whatever ``sys.stderr`` is at the time of the record (not at set-up)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure(level: str = "INFO", fmt: str = "json", stream: Any = None) -> None:
    """Install the gateway's handler on the root logger (idempotent)."""
    import time

    logging.Formatter.converter = time.gmtime
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactFilter())
    handler.set_name("gateway")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "gateway":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("zeep", "urllib3", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))
