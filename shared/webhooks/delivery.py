"""Signing and sending one webhook request.

Signing is the `standardwebhooks` library's, never our own HMAC. The host is resolved by
`aiodns` (c-ares, on the event loop: never the shared thread-pool executor, so a host whose DNS
hangs holds nothing another delivery needs) under a deadline inside the attempt's timeout.
Every address it resolves to must be global (not private, loopback, link-local, metadata, ...)
unless private networks are allowed; the request then goes to the address that was checked
(`PinnedTransport`: one small pool per host and pinned address, Host and TLS SNI still the
host name), so a second DNS answer cannot point it elsewhere. Answers are never decompressed:
`Accept-Encoding: identity` is asked for and at most 2 KB of the raw bytes are kept.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import aiodns
import httpx
from standardwebhooks import Webhook

from shared.config import Settings
from shared.retry import parse_retry_after

ARES_ETIMEOUT = 12  # pycares.errno.ARES_ETIMEOUT
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
BODY_LOG_BYTES = 2048
USER_AGENT = "saas-llm-webhooks/0.1"


class AddressRefused(Exception):
    """The target resolves to an address webhooks may not reach."""


class LookupFailed(Exception):
    """The host's name could not be resolved in time (or at all)."""


def generate_secret() -> str:
    """A `whsec_` secret: 192 random bits, base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def encode_payload(payload: dict[str, Any]) -> str:
    """The exact body that is signed and sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


@lru_cache(maxsize=1024)
def _signer(secret: str) -> Webhook:
    """The library's signer of a secret (its key decoded once, not per attempt)."""
    return Webhook(secret)


def sign_headers(
    signing_secrets: Sequence[str], msg_id: str, body: str, when: datetime | None = None
) -> dict[str, str]:
    """Standard Webhooks headers; one `v1,` signature per secret, space-separated."""
    when = when or datetime.now(UTC)
    signature = " ".join(_signer(s).sign(msg_id, when, body) for s in signing_secrets)
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


# Ranges refused outright whatever Python's `is_global` says: IPv4-compatible (::/96,
# deprecated), IPv4-mapped and IPv4-translated (an AAAA answer has no business being either:
# the socket would reach the IPv4 host), and site-local (fec0::/10, deprecated, still routed
# inside some networks).
REFUSED_V6 = tuple(
    ipaddress.IPv6Network(n) for n in ("::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "fec0::/10")
)
# Cloud metadata and host-agent services (some are public addresses, so `is_global` is no
# guard): AWS/GCP/Azure IMDS, Azure's WireServer, Alibaba, Oracle, AWS IMDS over IPv6.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.169.253",
        "169.254.170.2",
        "168.63.129.16",
        "100.100.100.200",
        "192.0.0.192",
        "fd00:ec2::254",
        "fd00:ec2::23",
    )
)


def _refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why `ip` may not be reached, or None if it may."""
    if ip in METADATA_ADDRESSES:
        return f"non-global address {ip} (cloud metadata service)"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in NAT64_LOCAL_USE:
            return f"non-global address {ip} (local-use NAT64 prefix)"
        for network in REFUSED_V6:
            if ip in network:
                return f"non-global address {ip} (in {network})"
        for inner in _embedded_ipv4(ip):
            if not inner.is_global:
                return f"non-global address {inner} (embedded in {ip})"
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


class Resolver:
    """Name lookups on the event loop (c-ares), each bounded by a deadline."""

    def __init__(self, nameservers: Sequence[str] = (), timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._nameservers = list(nameservers)
        self._dns: aiodns.DNSResolver | None = None

    def _resolver(self) -> aiodns.DNSResolver:
        if self._dns is None:  # created on first use, inside the running loop
            self._dns = aiodns.DNSResolver(
                nameservers=self._nameservers or None, timeout=self.timeout, tries=1
            )
        return self._dns

    async def addresses(self, host: str, port: int, deadline: float) -> list[str]:
        """Every address `host` resolves to, IPv4 first; an IP literal is itself."""
        try:
            return [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            pass
        limit = min(self.timeout, deadline)
        try:
            async with asyncio.timeout(limit):
                result = await self._resolver().getaddrinfo(
                    host, port=port, type=socket.SOCK_STREAM
                )
        except TimeoutError as exc:
            raise LookupFailed(f"DNS lookup of {host} timed out after {limit:g}s") from exc
        except aiodns.error.DNSError as exc:
            if exc.args and exc.args[0] == ARES_ETIMEOUT:  # c-ares' own clock ran out first
                raise LookupFailed(f"DNS lookup of {host} timed out after {limit:g}s") from exc
            raise LookupFailed(f"cannot resolve {host}: {exc}") from exc
        nodes = sorted(result.nodes, key=lambda n: n.family != socket.AF_INET)
        addresses = [
            n.addr[0].decode() if isinstance(n.addr[0], bytes) else n.addr[0] for n in nodes
        ]
        return list(dict.fromkeys(addresses))

    async def close(self) -> None:
        if self._dns is not None:
            await self._dns.close()
            self._dns = None


class _Released(httpx.AsyncByteStream):
    """A response stream that hands its pool back when closed."""

    def __init__(self, inner: httpx.AsyncByteStream, release: Any) -> None:
        self._inner = inner
        self._release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._release()


class PinnedTransport(httpx.AsyncBaseTransport):
    """Connection pools keyed by (scheme, host name, port, pinned address).

    A request's URL names the pinned address and its Host header (and SNI) the host name, so
    a kept-alive connection opened for one host or one address is never reused for another.
    Idle pools beyond `max_pools` are closed, least recently used first."""

    def __init__(self, max_pools: int = 256, per_pool: int = 4) -> None:
        self._pools: OrderedDict[tuple[str, str, int, str], httpx.AsyncHTTPTransport] = (
            OrderedDict()
        )
        self._busy: dict[tuple[str, str, int, str], int] = {}
        self._max_pools = max_pools
        self._limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        name = request.extensions.get("sni_hostname") or request.headers.get("host", "")
        key = (request.url.scheme, str(name), request.url.port or 0, request.url.host)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = httpx.AsyncHTTPTransport(limits=self._limits, retries=0)
        self._pools.move_to_end(key)
        self._busy[key] = self._busy.get(key, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._busy[key] -= 1

        try:
            response = await pool.handle_async_request(request)
        except BaseException:
            release()
            raise
        await self._evict()
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_Released(response.stream, release),
            extensions=response.extensions,
            request=request,
        )

    async def _evict(self) -> None:
        for key in list(self._pools):
            if len(self._pools) <= self._max_pools:
                return
            if self._busy.get(key, 0) == 0:
                self._busy.pop(key, None)
                await self._pools.pop(key).aclose()

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()


class WebhookSender:
    """What a process needs to send webhooks: its resolver and its pinned connection pools."""

    def __init__(
        self,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.settings = settings
        self.resolver = resolver or Resolver(
            settings.dns_nameservers, settings.webhook_dns_timeout_seconds
        )
        self.http = http or httpx.AsyncClient(
            transport=PinnedTransport(), follow_redirects=False, trust_env=False
        )

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.resolver.close()


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
    sender: WebhookSender,
    url: str,
    body: str,
    headers: dict[str, str],
    *,
    timeout_seconds: float,
    allow_private: bool,
) -> SendResult:
    """POST `body` once to the checked, pinned address: no redirects, `timeout` seconds in all
    (the name lookup included), at most 2 KB of the raw answer read, never decompressed."""
    target = httpx.URL(url)
    host = target.host
    port = target.port or (443 if target.scheme == "https" else 80)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_seconds):
            try:
                addresses = await sender.resolver.addresses(host, port, timeout_seconds)
                if not allow_private:
                    check_addresses(host, addresses)
                if not addresses:
                    raise AddressRefused(f"{host} did not resolve to any address; not sent")
            except LookupFailed as exc:
                return SendResult(status_code=None, latency_ms=_ms(started), error=str(exc))
            except AddressRefused as exc:
                return SendResult(status_code=None, latency_ms=None, error=str(exc), refused=True)
            request_headers = {
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                "accept-encoding": "identity",
                **headers,
                "host": target.netloc.decode("ascii"),
            }
            extensions: dict[str, Any] = {"sni_hostname": host}
            address = addresses[0]
            async with sender.http.stream(
                "POST",
                target.copy_with(host=address),
                content=body.encode(),
                headers=request_headers,
                timeout=timeout_seconds,
                follow_redirects=False,
                extensions=extensions,
            ) as response:
                chunks = bytearray()
                async for chunk in response.aiter_raw():
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
    # The raw bytes, cut at 2 KB before any decoding (a compressed answer stays compressed).
    text = bytes(chunks[:BODY_LOG_BYTES]).decode("utf-8", errors="replace").replace("\x00", "")
    return SendResult(
        status_code=response.status_code,
        latency_ms=_ms(started),
        response_body=text,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
