"""The network guard and the signing of webhook requests, without the platform."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from shared.webhooks.delivery import (
    AddressRefused,
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
        "::ffff:93.184.216.34",
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

    def handler(request: httpx.Request) -> httpx.Response:
        transport_calls.append(request)
        return httpx.Response(200)

    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            refused = await send(
                http, "http://localhost:9/x", "{}", {}, timeout_seconds=1, allow_private=False
            )
            assert (
                refused.refused
                and refused.status_code is None
                and "not sent" in (refused.error or "")
            )
            allowed = await send(
                http, "http://localhost:9/x", "{}", {}, timeout_seconds=1, allow_private=True
            )
            assert allowed.ok

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


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700:4700::1111"])
def test_send_connects_to_the_checked_address_with_the_original_host(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    seen: list[httpx.Request] = []

    async def resolved(host: str, port: int) -> str:
        assert (host, port) == ("hooks.example", 443)
        return address

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    monkeypatch.setattr("shared.webhooks.delivery.resolve_global", resolved)

    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            result = await send(
                http,
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
    assert request.extensions["sni_hostname"] == "hooks.example"
