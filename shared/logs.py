"""Structured (JSON-lines) logging with request, team and job ids; never keys or secrets."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_SECRET = re.compile(
    r"(sk-[A-Za-z0-9_\-]{6})[A-Za-z0-9_\-]+|(whsec_)[A-Za-z0-9+/=]+|(fernet:)[A-Za-z0-9_\-=]+"
)
# The configured secrets themselves (master, admin and metrics keys, Fernet keys, database and
# Redis passwords), whatever their shape: set by `configure`.
_configured: re.Pattern[str] | None = None
MIN_REDACTED_LENGTH = 4  # shorter values would mask ordinary words


def set_secrets(values: Iterable[str]) -> None:
    """Mask each of `values` (and its URL-quoted form) wherever it appears in a log line."""
    global _configured
    forms = {
        form for v in values if len(v) >= MIN_REDACTED_LENGTH for form in (v, quote(v, safe=""))
    }
    if not forms:
        _configured = None
        return
    # Longest first, so a secret containing another is masked whole.
    _configured = re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))


def redact(text: str) -> str:
    """Mask every configured secret and anything that looks like an API key or webhook secret."""
    if _configured is not None:
        text = _configured.sub("***", text)
    return _SECRET.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + "***", text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = _redact_value(value)
        if record.exc_info:
            data["exc"] = redact(self.formatException(record.exc_info))
        return redact(json.dumps(data, default=str))


def configure(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Send JSON lines to stderr, masking `secrets`; quiet the chattiest libraries."""
    set_secrets(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # arq logs every task's start and end; our own logs say what each call and delivery did.
    for noisy in ("httpx", "httpcore", "uvicorn.access", "arq.worker", "arq.jobs"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
