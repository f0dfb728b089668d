"""The checks of `saas-llm doctor` (cli/doctor.py): one plain function per item of the Railway
guide's security checklist and post-deploy steps, from what doctor gathered to a `Result`."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

Status = Literal["pass", "fail", "cannot-check", "waived"]
PLACEHOLDERS = (
    "change-me",
    "changeme",
    "change_me",
    "your-",
    "placeholder",
    "example",
    "generate-secure",
    "sk-dev-",
    "1234567890",
    "xxxx",
)
# Keys printed in the Railway guide itself: anyone who copied one has a public key.
GUIDE_EXAMPLE_KEY = "sk-prod-CHANGE-ME-TO-SECURE-RANDOM-KEY"  # its "quick copy" block
GUIDE_KEYS = frozenset(
    {"sk-prod-1234567890abcdef", "sk-prod-8vN_zK2QmR4tX7wY3jL9pF1nH6cV5bA8", GUIDE_EXAMPLE_KEY}
)
MIN_KEY_CHARS = 32
MIN_KEY_BITS = 128.0
GENERATE = "python3 -c \"import secrets; print(f'sk-prod-{secrets.token_urlsafe(32)}')\""
TRUE = {"1", "true", "yes", "on"}
LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


@dataclass(frozen=True)
class Result:
    id: str
    title: str
    status: Status
    detail: str
    fix: str = ""


def ok(id_: str, title: str, detail: str) -> Result:
    return Result(id_, title, "pass", detail)


def bad(id_: str, title: str, detail: str, fix: str) -> Result:
    return Result(id_, title, "fail", detail, fix)


def unknown(id_: str, title: str, detail: str, fix: str = "") -> Result:
    return Result(id_, title, "cannot-check", detail, fix)


# --- the checks (pure functions) -------------------------------------------------------------


def key_bits(key: str) -> float:
    """Entropy estimate of a key's random part: Shannon entropy per character times length."""
    body = re.sub(r"^sk-(?:[a-z]+-)?", "", key)
    if not body:
        return 0.0
    counts = Counter(body)
    per_char = -sum(n / len(body) * math.log2(n / len(body)) for n in counts.values())
    return per_char * len(body)


def check_master_key_form(key: str | None) -> Result:
    id_, title = "master_key_secure", "Generated secure random LITELLM_MASTER_KEY"
    fix = f"generate one: {GENERATE}; set it on the proxy and reference it from the API and worker"
    if key is None:
        return unknown(id_, title, "LITELLM_MASTER_KEY not in this environment (run with --env)")
    lowered = key.lower()
    if key in GUIDE_KEYS:
        return bad(id_, title, "the key is an example printed in the deployment guide", fix)
    marker = next((m for m in PLACEHOLDERS if m in lowered), None)
    if marker:
        return bad(id_, title, f"the key looks like a placeholder (contains {marker!r})", fix)
    if len(key) < MIN_KEY_CHARS:
        return bad(id_, title, f"{len(key)} characters, fewer than {MIN_KEY_CHARS}", fix)
    bits = key_bits(key)
    if bits < MIN_KEY_BITS:
        return bad(id_, title, f"about {bits:.0f} bits of entropy, under {MIN_KEY_BITS:.0f}", fix)
    return ok(id_, title, f"{len(key)} characters, about {bits:.0f} bits of entropy")


def check_same_key(ready: Mapping[str, Any] | None, env_key_result: str | None) -> Result:
    """`ready`: the API's /ready body; `env_key_result`: "ok" or the reason, from this env."""
    id_, title = "same_master_key", "Same master key used in all services"
    fix = (
        "set LITELLM_MASTER_KEY=${{litellm-proxy.LITELLM_MASTER_KEY}} on saas-api and worker"
        " (a worker with another key refuses to start and logs why)"
    )
    seen: list[str] = []
    if ready is not None:
        api = (ready.get("checks") or {}).get("master_key")
        if api is None:
            seen.append("the API's /ready does not check the key (older API)")
        elif api != "ok":
            return bad(id_, title, f"API: {api}", fix)
        else:
            seen.append("the proxy accepts the API's key")
    if env_key_result is not None:
        if env_key_result != "ok":
            return bad(id_, title, f"this environment: {env_key_result}", fix)
        seen.append("the proxy accepts this environment's key")
    if not any("accepts" in s for s in seen):
        return unknown(id_, title, "; ".join(seen) or "needs --api-url/--key or --env", fix)
    return ok(id_, title, "; ".join(seen) + " (workers refuse to start with another key)")


def check_provider_keys(health: Mapping[str, Any] | None, env: Mapping[str, str]) -> Result:
    """`health`: the proxy's GET /health (it calls every configured model)."""
    id_, title = "provider_keys", "Real provider API keys for every configured model"
    fix = "set OPENAI_API_KEY / ANTHROPIC_API_KEY on litellm-proxy to real keys (not the guide's)"
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        value = env.get(name, "")
        if value and any(m in value.lower() for m in PLACEHOLDERS):
            return bad(id_, title, f"{name} is a placeholder", fix)
    if health is None:
        return unknown(id_, title, "the proxy's /health was not reachable from here", fix)
    unhealthy = health.get("unhealthy_endpoints") or []
    healthy = health.get("healthy_endpoints") or []
    if unhealthy:
        names = sorted({str(e.get("model")) for e in unhealthy})
        first = str(unhealthy[0].get("error", ""))[:200]
        return bad(id_, title, f"{len(unhealthy)} model(s) fail: {', '.join(names)}: {first}", fix)
    if not healthy:
        return bad(id_, title, "the proxy serves no model", "check proxy/config.yaml")
    return ok(id_, title, f"{len(healthy)} model(s) answered the proxy's health call")


def check_debug(env: Mapping[str, str] | None) -> Result:
    id_, title = "debug_off", "DEBUG=false in production"
    if env is None:
        return unknown(id_, title, "needs --env")
    value = env.get("DEBUG", "false").strip().lower()
    if value in TRUE:
        return bad(id_, title, f"DEBUG={env['DEBUG']}", "set DEBUG=false (or remove it)")
    return ok(id_, title, f"DEBUG={env.get('DEBUG', '(unset)')}")


def check_sslmode(database_url: str | None, allow_insecure: bool = False) -> Result:
    id_, title = "database_ssl", "Database URL uses SSL (?sslmode=require)"
    fix = "append ?sslmode=require to DATABASE_URL (verify-full with a CA is stronger)"
    if database_url is None:
        return unknown(id_, title, "DATABASE_URL not in this environment (run with --env)")
    query = dict(parse_qsl(urlsplit(database_url).query))
    mode = query.get("sslmode") or query.get("ssl")
    if mode in {"require", "verify-ca", "verify-full"}:
        return ok(id_, title, f"sslmode={mode}")
    detail = f"sslmode={mode}" if mode else "no sslmode in DATABASE_URL"
    if allow_insecure:
        return Result(id_, title, "waived", detail + " (--allow-insecure-db)", fix)
    return bad(id_, title, detail, fix)


def check_private_networking(env: Mapping[str, str] | None, allow_local: bool = False) -> Result:
    id_, title = "private_networking", "Services talk over private networking (*.railway.internal)"
    if env is None:
        return unknown(id_, title, "needs --env")
    fix = (
        "use http://litellm-proxy.railway.internal:4000 for LITELLM_PROXY_URL and the"
        " ${{Postgres.DATABASE_URL}} / ${{Redis.REDIS_URL}} references (not the *_PUBLIC_URL ones)"
    )
    public: list[str] = []
    local: list[str] = []
    for name in ("LITELLM_PROXY_URL", "DATABASE_URL", "REDIS_URL"):
        value = env.get(name)
        if not value:
            continue
        host = (urlsplit(value).hostname or "").lower()
        if host.endswith(".railway.internal"):
            continue
        (local if host in LOOPBACK else public).append(f"{name} → {host}")
    if public:
        return bad(id_, title, "not private: " + ", ".join(public), fix)
    if local:
        detail = "loopback: " + ", ".join(local)
        if allow_local:
            return Result(id_, title, "waived", detail + " (--allow-local-network)", fix)
        return bad(id_, title, detail, fix)
    return ok(id_, title, "every internal URL is *.railway.internal")


def check_migrations(current: set[str] | None, heads: set[str], error: str | None = None) -> Result:
    id_, title = "migrations_at_head", "Database migrations at head"
    fix = "railway run --service saas-api alembic upgrade head (railway.saas.toml runs it)"
    if current is None:
        return unknown(id_, title, error or "DATABASE_URL not in this environment", fix)
    if current == heads:
        return ok(id_, title, "at " + ", ".join(sorted(heads)))
    have = ", ".join(sorted(current)) or "none"
    return bad(id_, title, f"database at {have}, code at {', '.join(sorted(heads))}", fix)


def _active(teams: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [t for t in teams if t.get("status", "active") == "active"]


def check_rate_limits(teams: Sequence[Mapping[str, Any]] | None) -> Result:
    id_, title = "rate_limits", "Rate limiting set on every team (requests_per_minute)"
    fix = 'PATCH /api/admin/teams/{team_id} {"requests_per_minute": N}'
    if teams is None:
        return unknown(id_, title, "needs --api-url and the admin --key")
    missing = [str(t["team_id"]) for t in _active(teams) if not t.get("requests_per_minute")]
    if missing:
        return bad(id_, title, "no requests_per_minute: " + ", ".join(missing[:20]), fix)
    return ok(id_, title, f"{len(_active(teams))} active team(s) limited")


def check_budgets(teams: Sequence[Mapping[str, Any]] | None) -> Result:
    id_, title = "team_budgets", "Team budgets configured (budget_usd)"
    fix = 'PATCH /api/admin/teams/{team_id} {"budget_usd": "100.00", "budget_period": "month"}'
    if teams is None:
        return unknown(id_, title, "needs --api-url and the admin --key")
    active = _active(teams)
    if active and all("budget_usd" not in t for t in active):
        return bad(id_, title, "the API reports no budget_usd field (budgets not deployed)", fix)
    missing = [str(t["team_id"]) for t in active if t.get("budget_usd") in (None, "")]
    if missing:
        return bad(id_, title, "no budget_usd: " + ", ".join(missing[:20]), fix)
    return ok(id_, title, f"{len(active)} active team(s) with a budget")


def check_webhooks(
    endpoints: Sequence[Mapping[str, Any]] | None, error: str | None = None
) -> Result:
    """`endpoints`: rows with id, team_id, url, enabled, disabled_reason, failing_since."""
    id_, title = "webhooks_reachable", "Webhooks configured for job events and reachable"
    fix = (
        "GET /api/webhooks/deliveries?status=failed shows each attempt; fix the receiver, then"
        ' PATCH /api/webhooks/endpoints/{id} {"enabled": true}'
    )
    if endpoints is None:
        return unknown(id_, title, error or "needs --env (DATABASE_URL)")
    if not endpoints:
        return unknown(id_, title, "no webhook endpoint configured", "POST /api/webhooks/endpoints")
    broken = [
        f"{e['team_id']}/{e['id']} ({e.get('disabled_reason') or 'disabled'})"
        for e in endpoints
        if not e.get("enabled")
    ]
    broken += [
        f"{e['team_id']}/{e['id']} (failing since {e['failing_since']})"
        for e in endpoints
        if e.get("enabled") and e.get("failing_since")
    ]
    if broken:
        return bad(id_, title, "unreachable: " + ", ".join(broken[:20]), fix)
    return ok(id_, title, f"{len(endpoints)} endpoint(s), none failing")


def check_api_health(health: Mapping[str, Any] | None, ready: Mapping[str, Any] | None) -> Result:
    id_, title = "api_health", "SaaS API health and readiness (/health, /ready)"
    if health is None:
        return unknown(id_, title, "needs --api-url")
    expected = {"status": "healthy", "service": "saas-llm-api"}
    if dict(health) != expected:
        return bad(id_, title, f"/health answered {health}", "check the saas-api deploy logs")
    if ready is None or ready.get("status") != "ready":
        checks = (ready or {}).get("checks", {})
        failing = {k: v for k, v in checks.items() if v != "ok"}
        return bad(id_, title, f"/ready: {failing or ready}", "see docs/railway.md troubleshooting")
    return ok(id_, title, "/health as in the guide; /ready: " + ", ".join(ready["checks"]))


def check_proxy_health(alive: str | None) -> Result:
    id_, title = "proxy_health", "LiteLLM proxy health (/health/liveliness)"
    if alive is None:
        return unknown(id_, title, "needs LITELLM_PROXY_URL (--env or --proxy-url)")
    if alive != "ok":
        return bad(id_, title, alive, "check the litellm-proxy deploy logs")
    return ok(id_, title, "alive")


def check_https(api_url: str | None) -> Result:
    """Optional in the guide, so plain HTTP (an internal URL, say) is not a failure."""
    id_, title = "https", "Custom domain with HTTPS (optional)"
    fix = "pass the public https:// URL as --api-url (Railway domain or a custom one)"
    if api_url is None:
        return unknown(id_, title, "needs --api-url")
    parts = urlsplit(api_url)
    if parts.scheme == "https":
        return ok(id_, title, f"{parts.hostname} over HTTPS")
    return unknown(id_, title, f"{api_url} is not the public HTTPS URL", fix)


def check_secrets_not_in_git() -> Result:
    return unknown(
        "secrets_not_in_git",
        "Environment variables not committed to git",
        "not visible from a deployment",
        "keep secrets in Railway variables; `git log -p | grep -n sk-` finds old ones",
    )
