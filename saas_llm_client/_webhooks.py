"""Verifying the platform's webhooks (Standard Webhooks signatures) with the standard library.

Signed content is `{webhook-id}.{webhook-timestamp}.{body}`; each `v1,<base64>` entry of
`webhook-signature` is an HMAC-SHA256 of it under the base64 key after `whsec_`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from saas_llm_client._errors import SaaSLLMError


class WebhookVerificationError(SaaSLLMError):
    """The webhook's signature or timestamp did not verify."""


def verify_webhook(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance_seconds: int = 300,
) -> dict[str, Any]:
    """The event (`{"type", "timestamp", "data"}`) if signed with `secret`; raises otherwise."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    timestamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not msg_id or not timestamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        sent = int(timestamp)
    except ValueError as exc:
        raise WebhookVerificationError("invalid webhook-timestamp") from exc
    if abs(time.time() - sent) > tolerance_seconds:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance")
    body = payload.encode() if isinstance(payload, str) else payload
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    for entry in signatures.split():
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            event: dict[str, Any] = json.loads(body)
            return event
    raise WebhookVerificationError("no matching signature")
