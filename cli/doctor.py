"""`saas-llm doctor`: the Railway guide's security checklist and post-deploy steps, checked.

    saas-llm doctor --api-url https://api.example.com --key <admin key>   # from anywhere
    saas-llm doctor --env                                                 # inside a service
    saas-llm doctor --env --api-url ... --key ...                         # both: most checks

Each item prints `pass`, `fail`, `cannot-check` (what it needs is not reachable from here) or
`waived` (an --allow-* flag says the deployment is local on purpose), with the fix. The exit
status is 1 when any item fails, so a CI/CD step can gate a deploy on it.

From the API (URL + admin key): health and readiness (which includes "the proxy accepts the
API's master key"), rate limits and budgets on every active team, HTTPS. From the environment
(`--env`, e.g. `railway run --service saas-api saas-llm doctor --env`): the master key's form
and entropy, the same key at the proxy, each model's provider key (the proxy's `/health` calls
every model), DEBUG, sslmode, private networking, migrations at head, webhook endpoints.

Each check is a plain function of what was gathered, so tests call them one by one.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from cli.doctor_checks import (
    GENERATE,
    GUIDE_EXAMPLE_KEY,
    GUIDE_KEYS,
    LOOPBACK,
    MIN_KEY_BITS,
    MIN_KEY_CHARS,
    PLACEHOLDERS,
    TRUE,
    Result,
    Status,
    check_api_health,
    check_budgets,
    check_debug,
    check_https,
    check_master_key_form,
    check_migrations,
    check_private_networking,
    check_provider_keys,
    check_proxy_health,
    check_rate_limits,
    check_same_key,
    check_secrets_not_in_git,
    check_sslmode,
    check_webhooks,
    key_bits,
)

__all__ = [
    "GENERATE",
    "GUIDE_EXAMPLE_KEY",
    "GUIDE_KEYS",
    "LOOPBACK",
    "MIN_KEY_BITS",
    "MIN_KEY_CHARS",
    "PLACEHOLDERS",
    "TRUE",
    "Options",
    "Result",
    "Status",
    "add_parser",
    "check_api_health",
    "check_budgets",
    "check_debug",
    "check_https",
    "check_master_key_form",
    "check_migrations",
    "check_private_networking",
    "check_provider_keys",
    "check_proxy_health",
    "check_rate_limits",
    "check_same_key",
    "check_secrets_not_in_git",
    "check_sslmode",
    "check_webhooks",
    "cmd_doctor",
    "key_bits",
    "render",
    "run",
]

# --- gathering (I/O) -------------------------------------------------------------------------


@dataclass
class Options:
    api_url: str | None = None
    admin_key: str | None = None
    env: Mapping[str, str] | None = None
    proxy_url: str | None = None
    allow_insecure_db: bool = False
    allow_local_network: bool = False
    timeout: float = 30.0
    gathered: dict[str, Any] = field(default_factory=dict)


def _get_json(client: httpx.Client, url: str, **kw: Any) -> tuple[Any, str | None]:
    try:
        response = client.get(url, **kw)
        return response.json(), None
    except (httpx.HTTPError, ValueError) as exc:
        return None, f"{url}: {type(exc).__name__}"


def _teams(client: httpx.Client, api_url: str, key: str) -> list[dict[str, Any]] | None:
    teams: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200, **({"after": after} if after else {})}
        response = client.get(
            api_url + "/api/admin/teams", params=params, headers={"Authorization": f"Bearer {key}"}
        )
        if response.status_code != 200:
            return None
        page = response.json()
        teams.extend(page["data"])
        after = page.get("next_cursor")
        if not page.get("has_more") or not after:
            return teams


def _database(database_url: str) -> tuple[set[str] | None, list[dict[str, Any]] | None, str | None]:
    """(current alembic revisions, webhook endpoints, error) read with a short connection."""
    import psycopg
    from psycopg.rows import dict_row

    from shared.config import DatabaseURL

    parsed = DatabaseURL(database_url)
    dsn = parsed.url("psycopg").replace("postgresql+psycopg://", "postgresql://", 1)
    kwargs: dict[str, Any] = {"connect_timeout": 10}
    if parsed.sslmode:
        kwargs["sslmode"] = parsed.sslmode
    try:
        with psycopg.connect(dsn, row_factory=dict_row, **kwargs) as conn:
            rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
            current = {str(r["version_num"]) for r in rows}
            endpoints = conn.execute(
                "SELECT id, team_id, url, enabled, disabled_reason, failing_since"
                " FROM webhook_endpoints ORDER BY team_id, id"
            ).fetchall()
            return current, [dict(e) for e in endpoints], None
    except psycopg.Error as exc:
        return None, None, f"database: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def migration_heads() -> set[str]:
    from alembic.script import ScriptDirectory

    from shared.migrations import alembic_config

    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def run(opts: Options) -> list[Result]:
    """Gather what can be reached from here, then run every check."""
    env = opts.env
    api_url = opts.api_url.rstrip("/") if opts.api_url else None
    proxy_url = opts.proxy_url or (env or {}).get("LITELLM_PROXY_URL")
    master_key = (env or {}).get("LITELLM_MASTER_KEY")
    health = ready = proxy_health = None
    teams: list[dict[str, Any]] | None = None
    env_key: str | None = None
    alive: str | None = None
    with httpx.Client(timeout=opts.timeout, follow_redirects=False) as client:
        if api_url:
            health, _ = _get_json(client, api_url + "/health")
            ready, _ = _get_json(client, api_url + "/ready")
            if opts.admin_key:
                try:
                    teams = _teams(client, api_url, opts.admin_key)
                except (httpx.HTTPError, ValueError, KeyError):
                    teams = None
        if proxy_url:
            base = proxy_url.rstrip("/")
            try:
                client.get(base + "/health/liveliness").raise_for_status()
                alive = "ok"
            except httpx.HTTPError as exc:
                alive = f"{base}/health/liveliness: {type(exc).__name__}"
            if master_key and alive == "ok":
                env_key = _env_key_check(base, master_key, opts.timeout)
                if env_key == "ok":
                    proxy_health, _ = _get_json(
                        client,
                        base + "/health",
                        headers={"Authorization": f"Bearer {master_key}"},
                        timeout=max(opts.timeout, 120.0),
                    )
    current = endpoints = None
    db_error: str | None = None
    database_url = (env or {}).get("DATABASE_URL")
    if database_url:
        current, endpoints, db_error = _database(database_url)
    opts.gathered = {"teams": teams, "ready": ready, "proxy_health": proxy_health}
    return [
        check_api_health(health, ready),
        check_proxy_health(alive),
        check_master_key_form(master_key),
        check_same_key(ready, env_key),
        check_provider_keys(proxy_health, env or {}),
        check_debug(env),
        check_sslmode(database_url, opts.allow_insecure_db),
        check_private_networking(env, opts.allow_local_network),
        check_migrations(current, migration_heads(), db_error),
        check_rate_limits(teams),
        check_budgets(teams),
        check_webhooks(endpoints, db_error),
        check_https(api_url),
        check_secrets_not_in_git(),
    ]


def _env_key_check(proxy_url: str, key: str, timeout: float) -> str:
    import asyncio

    from shared.llm.keycheck import MasterKeyRejected, check_master_key

    async def go() -> str:
        async with httpx.AsyncClient() as http:
            try:
                await check_master_key(http, proxy_url, key, timeout=timeout)
            except MasterKeyRejected as exc:
                return str(exc)
            except httpx.HTTPError as exc:
                return f"the proxy could not be asked ({type(exc).__name__})"
        return "ok"

    return asyncio.run(go())


# --- CLI -------------------------------------------------------------------------------------

SYMBOL: dict[Status, str] = {
    "pass": "PASS",
    "fail": "FAIL",
    "cannot-check": "????",
    "waived": "WAIV",
}


def render(results: Sequence[Result], write: Callable[[str], None] = print) -> None:
    for r in results:
        write(f"[{SYMBOL[r.status]}] {r.title}: {r.detail}")
        if r.status != "pass" and r.fix:
            write(f"       fix: {r.fix}")
    counts = Counter(r.status for r in results)
    write(", ".join(f"{counts.get(s, 0)} {s}" for s in ("pass", "fail", "cannot-check", "waived")))


def add_parser(sub: Any, api: argparse.ArgumentParser) -> None:
    p = sub.add_parser("doctor", parents=[api], help="check a deployment against the guide")
    p.add_argument("--env", action="store_true", help="also check this process's environment")
    p.add_argument("--proxy-url", help="LiteLLM proxy URL (default: LITELLM_PROXY_URL with --env)")
    p.add_argument("--allow-insecure-db", action="store_true", help="waive sslmode (local only)")
    p.add_argument(
        "--allow-local-network", action="store_true", help="waive loopback internal URLs"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def cmd_doctor(args: argparse.Namespace) -> int:
    api_url = args.api_url or os.environ.get("SAAS_LLM_API_URL")
    admin_key = args.key or os.environ.get("SAAS_LLM_ADMIN_KEY")
    env = dict(os.environ) if args.env else None
    if not api_url and env is None:
        raise SystemExit("doctor needs --api-url (or SAAS_LLM_API_URL) and/or --env")
    results = run(
        Options(
            api_url=api_url,
            admin_key=admin_key,
            env=env,
            proxy_url=args.proxy_url,
            allow_insecure_db=args.allow_insecure_db,
            allow_local_network=args.allow_local_network,
        )
    )
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        render(results)
    return 1 if any(r.status == "fail" for r in results) else 0
