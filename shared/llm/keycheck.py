"""Is this process's `LITELLM_MASTER_KEY` the proxy's? (The guide: "use the same key for both
services"; with different keys every call answers 401.) Used by `/ready`, the worker's start and
`saas-llm doctor`."""

from __future__ import annotations

import httpx

# LiteLLM answers a key that is not its master key with 401, or, when it has no database of its
# own (this platform's setup: the key is then looked up as a virtual key), 400 "No connected db".
REJECTED = frozenset({400, 401, 403})


class MasterKeyRejected(Exception):
    """The proxy refused this process's master key."""


def rejection_reason(proxy_url: str, status: int) -> str:
    return (
        f"LITELLM_MASTER_KEY is not accepted by the proxy at {proxy_url} (HTTP {status}):"
        " set the same LITELLM_MASTER_KEY on the proxy, the API and the worker"
    )


async def check_master_key(
    http: httpx.AsyncClient, proxy_url: str, master_key: str, timeout: float = 5.0
) -> None:
    """Ask the proxy's `/v1/models` with the key. Raises `MasterKeyRejected` if refused and
    `httpx.HTTPError` when the proxy cannot be asked or answers another error."""
    base = proxy_url.rstrip("/")
    response = await http.get(
        base + "/v1/models", headers={"Authorization": f"Bearer {master_key}"}, timeout=timeout
    )
    if response.status_code in REJECTED:
        raise MasterKeyRejected(rejection_reason(base, response.status_code))
    response.raise_for_status()
