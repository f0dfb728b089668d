"""Signing and sending one webhook request.

Signing is the `standardwebhooks` library's, never our own HMAC. Before a request leaves, every
address the host resolves to must be global (not private, loopback, link-local, ...) unless
private networks are allowed; the request then goes to the address that was checked, so a
second DNS answer cannot point it elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import secrets
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from shared.retry import parse_retry_after

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
BODY_LOG_BYTES = 2048
USER_AGENT = "saas-llm-webhooks/0.1"


class AddressRefused(Exception):
    """The target resolves to an address webhooks may not reach."""


def generate_secret() -> str:
    """A `whsec_` secret: 192 random bits, base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def encode_payload(payload: dict[str, Any]) -> str:
    """The exact body that is signed and sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def sign_headers(
    signing_secrets: Sequence[str], msg_id: str, body: str, when: datetime | None = None
) -> dict[str, str]:
    """Standard Webhooks headers; one `v1,` signature per secret, space-separated."""
    when = when or datetime.now(UTC)
    signature = " ".join(Webhook(s).sign(msg_id, when, body) for s in signing_secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 is the last 32 bits
# RFC 8215: never globally routed, and where the IPv4 sits depends on the local translator's
# prefix length (/48 to /96), so it cannot be read reliably: refused outright.
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses a packet to `ip` may really reach (mapped, NAT64, 6to4, Teredo)."""
    out: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        out.append(ip.ipv4_mapped)
    if ip in NAT64_WELL_KNOWN:
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        out.append(ip.sixtofour)
    if ip.teredo is not None:
        out.extend(ip.teredo)  # (server, client)
    return out


def _refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why `ip` may not be reached, or None if it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in NAT64_LOCAL_USE:
            return f"non-global address {ip} (local-use NAT64 prefix)"
        for inner in _embedded_ipv4(ip):
            if not inner.is_global:
                return f"non-global address {inner} (embedded in {ip})"
        if ip.ipv4_mapped is not None:
            return None  # an IPv4-mapped address is the IPv4 address, checked above
    if not ip.is_global:
        return f"non-global address {ip}"
    return None


def check_addresses(host: str, addresses: Iterable[str]) -> None:
    """Refuse unless every address is globally routable, including any IPv4 address embedded
    in an IPv6 one (IPv4-mapped, NAT64 64:ff9b::/96, 6to4, Teredo server and client)."""
    found = False
    for raw in addresses:
        found = True
        reason = _refusal(ipaddress.ip_address(raw.split("%", 1)[0]))
        if reason is not None:
            raise AddressRefused(f"{host} resolves to {reason}; not sent")
    if not found:
        raise AddressRefused(f"{host} did not resolve to any address; not sent")


async def resolve_global(host: str, port: int) -> str:
    """The address to connect to, after checking every address `host` resolves to."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise AddressRefused(f"cannot resolve {host}: {exc}") from exc
    addresses = [str(info[4][0]) for info in infos]
    check_addresses(host, addresses)
    return addresses[0]


@dataclass(frozen=True)
class SendResult:
    """What one attempt produced; `status_code` is None if no answer came or nothing was sent."""

    status_code: int | None
    latency_ms: int | None
    response_body: str | None = None
    error: str | None = None
    retry_after: float | None = None
    refused: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def send(
    http: httpx.AsyncClient,
    url: str,
    body: str,
    headers: dict[str, str],
    *,
    timeout_seconds: float,
    allow_private: bool,
) -> SendResult:
    """POST `body` once: no redirects, `timeout` seconds in all, at most 2 KB of the answer read."""
    target = httpx.URL(url)
    request_headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        **headers,
    }
    extensions: dict[str, Any] = {}
    if not allow_private:
        host = target.host
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            address = await resolve_global(host, port)
        except AddressRefused as exc:
            return SendResult(status_code=None, latency_ms=None, error=str(exc), refused=True)
        request_headers["host"] = target.netloc.decode("ascii")
        if target.scheme == "https":
            extensions["sni_hostname"] = host
        target = target.copy_with(host=address)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_seconds):
            async with http.stream(
                "POST",
                target,
                content=body.encode(),
                headers=request_headers,
                timeout=timeout_seconds,
                follow_redirects=False,
                extensions=extensions,
            ) as response:
                chunks = bytearray()
                async for chunk in response.aiter_bytes():
                    chunks += chunk
                    if len(chunks) >= BODY_LOG_BYTES:
                        break
    except (TimeoutError, httpx.TimeoutException):
        return SendResult(
            status_code=None,
            latency_ms=_ms(started),
            error=f"timed out after {timeout_seconds:g}s",
        )
    except httpx.HTTPError as exc:
        return SendResult(
            status_code=None,
            latency_ms=_ms(started),
            error=f"{type(exc).__name__}: {exc}"[:500],
        )
    text = bytes(chunks[:BODY_LOG_BYTES]).decode("utf-8", errors="replace").replace("\x00", "")
    return SendResult(
        status_code=response.status_code,
        latency_ms=_ms(started),
        response_body=text,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
