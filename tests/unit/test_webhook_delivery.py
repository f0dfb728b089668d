"""The network guard and the signing of webhook requests, without the platform."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from shared.config import Settings
from shared.webhooks.delivery import (
    AddressRefused,
    Resolver,
    WebhookSender,
    check_addresses,
    generate_secret,
    send,
    sign_headers,
)
from shared.webhooks.runner import active_secrets


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1%eth0",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        # IPv4-mapped, -compatible and -translated forms of public addresses: refused outright
        "::ffff:93.184.216.34",
        "::5db8:d822",
        "::ffff:0:5db8:d822",
        "fec0::1",  # site-local
        # cloud metadata services, some on public addresses
        "168.63.129.16",
        "100.100.100.200",
        "fd00:ec2::254",
        "169.254.170.2",
    ],
)
def test_non_global_addresses_are_refused(address: str) -> None:
    with pytest.raises(AddressRefused, match="non-global"):
        check_addresses("hooks.example", [address])


@pytest.mark.parametrize(
    ("address", "embedded"),
    [
        ("64:ff9b::a00:5", "10.0.0.5"),  # NAT64 well-known prefix
        ("64:ff9b::7f00:1", "127.0.0.1"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("2002:7f00:1::1", "127.0.0.1"),  # 6to4
        ("2002:a00:5::1", "10.0.0.5"),
        ("2001:0:a00:5::f7f7:f7f7", "10.0.0.5"),  # Teredo: server 10.0.0.5, client 8.8.8.8
        ("2001:0:808:808:0:0:f5ff:fffa", "10.0.0.5"),  # Teredo: client 10.0.0.5 (bits inverted)
    ],
)
def test_ipv4_embedded_in_nat64_6to4_and_teredo_addresses_is_checked_as_ipv4(
    address: str, embedded: str
) -> None:
    with pytest.raises(AddressRefused, match="non-global") as refused:
        check_addresses("hooks.example", [address])
    assert embedded in str(refused.value)


def test_the_local_use_nat64_prefix_is_refused_whatever_it_embeds() -> None:
    # 64:ff9b:1::/48 (RFC 8215) is never globally routed, and where the IPv4 sits in it depends
    # on the prefix length the local translator uses: refused outright.
    for address in ["64:ff9b:1::a00:5", "64:ff9b:1::808:808", "64:ff9b:1:808:8:8::"]:
        with pytest.raises(AddressRefused, match="non-global"):
            check_addresses("hooks.example", [address])


@pytest.mark.parametrize(
    "address",
    [
        "2606:4700:4700::1111",
        "2a00:1450:4001:80b::200e",
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
        "2002:808:808::1",  # 6to4 of 8.8.8.8
    ],
)
def test_global_ipv6_addresses_and_global_embedded_ipv4_are_allowed(address: str) -> None:
    check_addresses("hooks.example", [address])


def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    check_addresses("hooks.example", ["93.184.216.34", "2606:4700:4700::1111"])
    with pytest.raises(AddressRefused):
        check_addresses("hooks.example", ["93.184.216.34", "10.0.0.5"])
    with pytest.raises(AddressRefused, match="did not resolve"):
        check_addresses("hooks.example", [])


def test_send_refuses_a_loopback_name_without_sending() -> None:
    transport_calls: list[httpx.Request] = []

    async def run() -> None:
        async with httpx.AsyncClient(transport=Recording(transport_calls, 200)) as http:
            sender = WebhookSender(Settings(environment="test"), http=http)
            refused = await send(
                sender, "http://localhost:9/x", "{}", {}, timeout_seconds=1, allow_private=False
            )
            assert (
                refused.refused
                and refused.status_code is None
                and "not sent" in (refused.error or "")
            )
            allowed = await send(
                sender, "http://localhost:9/x", "{}", {}, timeout_seconds=1, allow_private=True
            )
            assert allowed.ok
            await sender.resolver.close()

    asyncio.run(run())
    assert len(transport_calls) == 1


def test_signatures_verify_with_each_secret_and_not_another() -> None:
    old, new = generate_secret(), generate_secret()
    body = '{"type":"job.succeeded"}'
    headers = sign_headers([new, old], "msg_1", body)
    assert headers["webhook-id"] == "msg_1"
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(old).verify(body, headers) == Webhook(new).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body + " ", headers)


def test_the_previous_secret_signs_only_during_its_grace_period() -> None:
    now = datetime.now(UTC)
    assert active_secrets("a", "b", now + timedelta(seconds=60)) == ["a", "b"]
    assert active_secrets("a", "b", now - timedelta(seconds=1)) == ["a"]
    assert active_secrets("a", None, None) == ["a"]


class Recording(httpx.AsyncBaseTransport):
    """Records each request and answers `status` with an unread stream, like a real transport."""

    def __init__(self, seen: list[httpx.Request], status: int) -> None:
        self.seen, self.status = seen, status

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return httpx.Response(self.status, stream=httpx.ByteStream(b""))


class FixedResolver(Resolver):
    """A resolver that answers one address (the unit under test is what send does with it)."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address

    async def addresses(self, host: str, port: int, deadline: float) -> list[str]:
        assert (host, port) == ("hooks.example", 443)
        return [self.address]


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700:4700::1111"])
def test_send_connects_to_the_checked_address_with_the_original_host(address: str) -> None:
    seen: list[httpx.Request] = []

    async def run() -> None:
        async with httpx.AsyncClient(transport=Recording(seen, 204)) as http:
            sender = WebhookSender(
                Settings(environment="test"), http=http, resolver=FixedResolver(address)
            )
            result = await send(
                sender,
                "https://hooks.example/in?x=1",
                "{}",
                {},
                timeout_seconds=1,
                allow_private=False,
            )
            assert result.ok

    asyncio.run(run())
    [request] = seen
    assert request.url.host == address and request.url.path == "/in" and request.url.query == b"x=1"
    assert request.headers["host"] == "hooks.example"
    assert request.headers["accept-encoding"] == "identity"
    assert request.extensions["sni_hostname"] == "hooks.example"
