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
from shared.webhooks.dispatch import active_secrets


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
