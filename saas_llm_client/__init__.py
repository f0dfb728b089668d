"""Python client for the saas-llm API; needs only httpx.

from saas_llm_client import Client, request

with Client("http://127.0.0.1:8000", api_key="sk-...") as client:
    job = client.submit([request("demo", "Say hello", custom_id="a")])
    job = client.wait(job.id)
    for result in client.results(job.id):
        print(result.custom_id, result.content)
"""

from saas_llm_client._client import AsyncClient, Client, request
from saas_llm_client._errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PaymentRequiredError,
    RateLimitError,
    SaaSLLMError,
    WaitTimeout,
)
from saas_llm_client._types import TERMINAL, Call, Job, JobPage, RequestCounts, Result, Usage
from saas_llm_client._webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "TERMINAL",
    "APIConnectionError",
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "Call",
    "Client",
    "ConflictError",
    "Job",
    "JobPage",
    "NotFoundError",
    "PaymentRequiredError",
    "RateLimitError",
    "RequestCounts",
    "Result",
    "SaaSLLMError",
    "Usage",
    "WaitTimeout",
    "WebhookVerificationError",
    "request",
    "verify_webhook",
]
