"""Log lines mask every configured secret, whatever its shape, wherever it appears."""

from __future__ import annotations

import json
import logging

from shared import logs


def test_configured_secrets_of_any_shape_are_masked_in_message_extras_and_tracebacks() -> None:
    password = "Pw:odd/sh@pe!"  # nothing like an sk- key
    fernet = "hkG0_6v1bq3m4PqKXbLw2mVY1bT3Cq9iV8zrH7nV1mQ="
    logs.set_secrets([password, fernet, "abc"])  # too short to mask safely: ignored
    try:
        formatter = logs.JsonFormatter()
        try:
            raise RuntimeError(f"connect to postgresql://u:{password}@db failed")
        except RuntimeError:
            import sys

            exc_info = sys.exc_info()
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "key %s", (fernet,), exc_info)
        record.dsn = "postgresql://u:Pw%3Aodd%2Fsh%40pe%21@db"  # the URL-quoted form
        record.nested = {"list": [password]}
        line = formatter.format(record)
        data = json.loads(line)
        for value in (password, fernet, "Pw%3Aodd%2Fsh%40pe%21"):
            assert value not in line
        assert (
            data["msg"] == "key ***"
            and "***" in data["exc"]
            and data["nested"] == {"list": ["***"]}
        )
        assert "abc" in logs.redact("abc")
        # key-shaped values are masked even when not configured
        assert (
            logs.redact("sk-abcdef0123456789 whsec_AAAA fernet:gAAAAB")
            == "sk-abcdef*** whsec_*** fernet:***"
        )
    finally:
        logs.set_secrets([])
