"""`saas-llm`: start the platform locally, and drive a running API (admin and team commands).

    saas-llm up                                 everything, locally, until Ctrl-C
    saas-llm migrate                            alembic upgrade head on DATABASE_URL
    saas-llm admin create --email E --role R    a dashboard account (DATABASE_URL)
    saas-llm teams create|list|get|suspend|resume
    saas-llm keys create|list|revoke
    saas-llm jobs submit|get|list|results|cancel
    saas-llm doctor [--env]                     check a deployment against the Railway guide
    saas-llm credits grant TEAM AMOUNT          grant (or --adjust) credits (admin key)
    saas-llm credits show [TEAM]                a team's balance and ledger
    saas-llm credits refund JOB                 refund a job's charge, once (admin key)
    saas-llm usage [--group-by day|model|job_type] [--csv]

API commands read `--api-url` / SAAS_LLM_API_URL, a team key from `--key` / SAAS_LLM_API_KEY and
an admin key from `--key` / SAAS_LLM_ADMIN_KEY. Without them, the keys `saas-llm up` saved in
./.saas-llm/state.json are used (the demo key, the generated master key).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from saas_llm_client import APIError, Client, SaaSLLMError, WaitTimeout

DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_DATA_DIR = ".saas-llm"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _local_state(args: argparse.Namespace) -> dict[str, Any]:
    path = Path(getattr(args, "data_dir", None) or DEFAULT_DATA_DIR) / "state.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _api_url(args: argparse.Namespace) -> str:
    return str(args.api_url or os.environ.get("SAAS_LLM_API_URL") or DEFAULT_API_URL).rstrip("/")


def _team_key(args: argparse.Namespace) -> str:
    key = args.key or os.environ.get("SAAS_LLM_API_KEY") or _local_state(args).get("demo_key")
    if not key:
        raise SystemExit("no team key: pass --key or set SAAS_LLM_API_KEY")
    return str(key)


def _admin_key(args: argparse.Namespace) -> str:
    key = args.key or os.environ.get("SAAS_LLM_ADMIN_KEY") or _local_state(args).get("master_key")
    if not key:
        raise SystemExit("no admin key: pass --key or set SAAS_LLM_ADMIN_KEY")
    return str(key)


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# --- up / migrate ---------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from cli.up import UpOptions, up

    return up(
        UpOptions(
            data_dir=Path(args.data_dir),
            api_port=args.api_port,
            proxy_port=args.proxy_port,
            pg_port=args.pg_port,
            redis_port=args.redis_port,
            demo=not args.no_demo,
        )
    )


def cmd_migrate(args: argparse.Namespace) -> int:
    from shared.migrations import upgrade

    upgrade(args.database_url or None, args.revision)
    print(f"database at {args.revision}")
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    from cli.admin import cmd_admin_create

    password = os.environ.get("SAAS_LLM_ADMIN_PASSWORD") if args.password_env else None
    return cmd_admin_create(args.database_url or None, args.email, args.role, password)


# --- admin: teams and keys ------------------------------------------------------------------


def _admin(args: argparse.Namespace, method: str, path: str, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {_admin_key(args)}", **kw.pop("headers", {})}
    try:
        response = httpx.request(
            method, _api_url(args) + "/api/admin" + path, headers=headers, timeout=30, **kw
        )
    except httpx.TransportError as exc:
        raise SaaSLLMError(f"cannot reach {_api_url(args)}: {exc}") from exc
    from saas_llm_client._errors import raise_for_response

    raise_for_response(response)
    return response.json()


def cmd_teams(args: argparse.Namespace) -> int:
    action = args.action
    if action == "create":
        body: dict[str, Any] = {"team_id": args.team_id, "name": args.name or args.team_id}
        if args.allowed_models:
            models = [m.strip() for m in args.allowed_models.split(",")]
            body["allowed_models"] = [m for m in models if m]
        _print(_admin(args, "POST", "/teams", json=body))
    elif action == "list":
        _print(_admin(args, "GET", "/teams", params={"limit": args.limit}))
    elif action == "get":
        _print(_admin(args, "GET", f"/teams/{args.team_id}"))
    else:  # suspend / resume
        _print(_admin(args, "POST", f"/teams/{args.team_id}/{action}"))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    if args.action == "create":
        created = _admin(args, "POST", f"/teams/{args.team_id}/keys", json={"name": args.name})
        _print(created)
        print("store this key now: it is not shown again", file=sys.stderr)
    elif args.action == "list":
        _print(_admin(args, "GET", f"/teams/{args.team_id}/keys"))
    else:
        _print(_admin(args, "DELETE", f"/teams/{args.team_id}/keys/{args.key_id}"))
    return 0


# --- team: jobs -----------------------------------------------------------------------------


def read_requests(path: str) -> Iterator[dict[str, Any]]:
    """Requests from a JSONL file (`-` for stdin); blank lines and `#` comments skipped.

    Each line is a request (`{"custom_id", "model", "messages", ...}`) or an OpenAI Batch input
    line (`{"custom_id", "method", "url", "body": {...}}`).
    """
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with stream:
        for number, line in enumerate(stream, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise SystemExit(f"{path}:{number}: not JSON ({exc})") from exc
            if isinstance(item.get("body"), dict):
                item = {"custom_id": item.get("custom_id"), **item["body"]}
                if item["custom_id"] is None:
                    del item["custom_id"]
            yield item


def cmd_jobs(args: argparse.Namespace) -> int:
    from cli.progress import ProgressBar

    with Client(_api_url(args), _team_key(args)) as client:
        if args.action == "submit":
            if args.file:
                requests = list(read_requests(args.file))
            elif args.model and args.prompt:
                messages = [{"role": "user", "content": args.prompt}]
                if args.system:
                    messages.insert(0, {"role": "system", "content": args.system})
                requests = [{"model": args.model, "messages": messages}]
            else:
                raise SystemExit("jobs submit needs --file, or --model and --prompt")
            if not requests:
                raise SystemExit("no requests to submit")
            metadata = json.loads(args.metadata) if args.metadata else None
            job = client.submit(
                requests,
                job_type=args.job_type,
                metadata=metadata,
                idempotency_key=args.idempotency_key,
            )
            print(f"submitted job {job.id} ({job.request_counts.total} calls)", file=sys.stderr)
            if args.wait:
                bar = ProgressBar()
                try:
                    job = client.wait(job.id, timeout=args.timeout, on_progress=bar)
                finally:
                    bar.close()
            _print(job.raw)
            return 0 if job.status in ("succeeded", "queued", "running") else 3
        if args.action == "get":
            _print(client.get(args.job_id, include_calls=args.calls).raw)
        elif args.action == "list":
            page = client.list_jobs(status=args.status, limit=args.limit)
            _print([j.raw for j in page.data])
        elif args.action == "cancel":
            _print(client.cancel(args.job_id).raw)
        elif args.action == "results":
            if args.format == "jsonl":
                text = client.results_jsonl(args.job_id)
            else:
                text = json.dumps([r.raw for r in client.results(args.job_id)], indent=2) + "\n"
            if args.output:
                Path(args.output).write_text(text)
            else:
                sys.stdout.write(text)
    return 0


# --- money: credits and usage ----------------------------------------------------------------


def cmd_credits(args: argparse.Namespace) -> int:
    if args.action == "grant":
        body: dict[str, Any] = {
            "kind": "adjustment" if args.adjust else "grant",
            "amount": args.amount,
            "note": args.note,
        }
        if args.expires_at:
            body["expires_at"] = args.expires_at
        headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
        _print(_admin(args, "POST", f"/teams/{args.team_id}/credits", json=body, headers=headers))
        return 0
    if args.action == "refund":
        headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
        path = f"/jobs/{args.job_id}/refund"
        _print(_admin(args, "POST", path, json={"note": args.note}, headers=headers))
        return 0
    if args.team_id:  # the admin's view of a team
        team = _admin(args, "GET", f"/teams/{args.team_id}")
        ledger = _admin(args, "GET", f"/teams/{args.team_id}/ledger", params={"limit": args.limit})
        _print(
            {
                "team_id": team["team_id"],
                "balance": team["credits_balance"],
                "reserved": team["credits_reserved"],
                "billing_mode": team["billing_mode"],
                "entries": ledger["data"],
            }
        )
        return 0
    with Client(_api_url(args), _team_key(args)) as client:
        _print(client.credits(limit=args.limit))
    return 0


USAGE_COLUMNS = (
    "group",
    "jobs",
    "calls",
    "total_tokens",
    "cost_usd",
    "billed_usd",
    "credits",
)


def usage_table(rows: list[dict[str, Any]], total: dict[str, Any]) -> str:
    """Usage rows as an aligned text table, totals last."""
    table = [list(USAGE_COLUMNS)] + [[str(r[c]) for c in USAGE_COLUMNS] for r in [*rows, total]]
    widths = [max(len(row[i]) for row in table) for i in range(len(USAGE_COLUMNS))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def cmd_usage(args: argparse.Namespace) -> int:
    params = {"from": args.start, "to": args.end, "group_by": args.group_by}
    if args.team_id is not None:  # admin, across teams or for one
        params["team_id"] = args.team_id
        clean = {k: v for k, v in params.items() if v}
        if args.csv:
            headers = {"Authorization": f"Bearer {_admin_key(args)}", "Accept": "text/csv"}
            response = httpx.get(
                _api_url(args) + "/api/admin/usage", params=clean, headers=headers, timeout=60
            )
            from saas_llm_client._errors import raise_for_response

            raise_for_response(response)
            sys.stdout.write(response.text)
            return 0
        data = _admin(args, "GET", "/usage", params=clean)
    else:
        with Client(_api_url(args), _team_key(args)) as client:
            if args.csv:
                sys.stdout.write(
                    client.usage_csv(start=args.start, end=args.end, group_by=args.group_by)
                )
                return 0
            data = client.usage(start=args.start, end=args.end, group_by=args.group_by)
    sys.stdout.write(usage_table(data["data"], data["total"]))
    return 0


# --- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saas-llm", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    api = argparse.ArgumentParser(add_help=False)
    api.add_argument("--api-url", help=f"default: $SAAS_LLM_API_URL or {DEFAULT_API_URL}")
    api.add_argument(
        "--key", help="team key ($SAAS_LLM_API_KEY) or admin key ($SAAS_LLM_ADMIN_KEY)"
    )
    api.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="where `up` keeps its keys")

    p = sub.add_parser("up", help="start everything locally until Ctrl-C")
    p.add_argument("--data-dir", default=os.environ.get("SAAS_LLM_DATA_DIR", DEFAULT_DATA_DIR))
    p.add_argument("--api-port", type=int, default=_env_int("SAAS_LLM_API_PORT", 8000))
    p.add_argument("--proxy-port", type=int, default=_env_int("SAAS_LLM_PROXY_PORT", 4000))
    p.add_argument("--pg-port", type=int, default=_env_int("SAAS_LLM_PG_PORT", 54329))
    p.add_argument("--redis-port", type=int, default=_env_int("SAAS_LLM_REDIS_PORT", 63799))
    p.add_argument("--no-demo", action="store_true", help="do not create the demo team and key")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("migrate", help="run database migrations (alembic upgrade)")
    p.add_argument("--database-url", help="default: $DATABASE_URL")
    p.add_argument("--revision", default="head")
    p.set_defaults(func=cmd_migrate)

    admin = sub.add_parser("admin", help="dashboard accounts (DATABASE_URL)").add_subparsers(
        dest="action", required=True
    )
    p = admin.add_parser("create", help="create a dashboard account; prints its password once")
    p.add_argument("--email", required=True)
    p.add_argument("--role", choices=("owner", "admin", "viewer"), default="owner")
    p.add_argument("--database-url", help="default: $DATABASE_URL")
    p.add_argument(
        "--password-env",
        action="store_true",
        help="take the password from $SAAS_LLM_ADMIN_PASSWORD instead of generating one",
    )
    p.set_defaults(func=cmd_admin)

    teams = sub.add_parser("teams", help="manage teams (admin key)").add_subparsers(
        dest="action", required=True
    )
    p = teams.add_parser("create", parents=[api])
    p.add_argument("team_id")
    p.add_argument("--name")
    p.add_argument("--allowed-models", help="comma-separated; empty: all")
    p = teams.add_parser("list", parents=[api])
    p.add_argument("--limit", type=int, default=50)
    for action in ("get", "suspend", "resume"):
        teams.add_parser(action, parents=[api]).add_argument("team_id")
    for p in teams.choices.values():
        p.set_defaults(func=cmd_teams)

    keys = sub.add_parser("keys", help="manage a team's API keys (admin key)").add_subparsers(
        dest="action", required=True
    )
    p = keys.add_parser("create", parents=[api])
    p.add_argument("team_id")
    p.add_argument("--name", default="")
    keys.add_parser("list", parents=[api]).add_argument("team_id")
    p = keys.add_parser("revoke", parents=[api])
    p.add_argument("team_id")
    p.add_argument("key_id")
    for p in keys.choices.values():
        p.set_defaults(func=cmd_keys)

    jobs = sub.add_parser("jobs", help="submit and read jobs (team key)").add_subparsers(
        dest="action", required=True
    )
    p = jobs.add_parser("submit", parents=[api], help="batch-style job from args or a JSONL file")
    p.add_argument("--model")
    p.add_argument("--prompt")
    p.add_argument("--system", help="a system message before the prompt")
    p.add_argument("--file", "-f", help="JSONL of requests ('-' for stdin)")
    p.add_argument("--job-type")
    p.add_argument("--metadata", help="JSON object")
    p.add_argument("--idempotency-key")
    p.add_argument("--wait", action="store_true", help="wait for the end, progress on stderr")
    p.add_argument("--timeout", type=float, default=600.0)
    p = jobs.add_parser("get", parents=[api])
    p.add_argument("job_id")
    p.add_argument("--calls", action="store_true", help="include the calls")
    p = jobs.add_parser("list", parents=[api])
    p.add_argument("--status")
    p.add_argument("--limit", type=int, default=20)
    jobs.add_parser("cancel", parents=[api]).add_argument("job_id")
    p = jobs.add_parser("results", parents=[api])
    p.add_argument("job_id")
    p.add_argument("--format", choices=("json", "jsonl"), default="json")
    p.add_argument("--output", "-o")
    for p in jobs.choices.values():
        p.set_defaults(func=cmd_jobs)
    credits = sub.add_parser("credits", help="grant and show credits").add_subparsers(
        dest="action", required=True
    )
    p = credits.add_parser("grant", parents=[api], help="grant credits to a team (admin key)")
    p.add_argument("team_id")
    p.add_argument("amount", help="a decimal; with --adjust it may be negative")
    p.add_argument("--adjust", action="store_true", help="an adjustment rather than a grant")
    p.add_argument("--expires-at", help="ISO 8601 time the grant's remainder expires")
    p.add_argument("--note", default="")
    p.add_argument("--idempotency-key")
    p = credits.add_parser(
        "show", parents=[api], help="your team's credits (team key), or TEAM's (admin key)"
    )
    p.add_argument("team_id", nargs="?")
    p.add_argument("--limit", type=int, default=20)
    p = credits.add_parser("refund", parents=[api], help="refund a job's charge (admin key)")
    p.add_argument("job_id")
    p.add_argument("--note", default="")
    p.add_argument("--idempotency-key")
    for p in credits.choices.values():
        p.set_defaults(func=cmd_credits)
    p = sub.add_parser("usage", parents=[api], help="usage report: a table, or CSV")
    p.add_argument("--from", dest="start", help="ISO date or time (default: this month)")
    p.add_argument("--to", dest="end")
    p.add_argument("--group-by", choices=("day", "model", "job_type", "team"), default="day")
    p.add_argument("--csv", action="store_true")
    p.add_argument("--team-id", help="admin key: this team's usage ('' for every team)")
    p.set_defaults(func=cmd_usage)

    hooks = sub.add_parser("webhooks", help="work with webhooks locally").add_subparsers(
        dest="action", required=True
    )
    p = hooks.add_parser("listen", help="receive, verify and print webhooks")
    p.add_argument("--secret", default=os.environ.get("SAAS_LLM_WEBHOOK_SECRET"), required=False)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--full", action="store_true", help="print whole payloads")
    p.set_defaults(func=cmd_webhooks_listen)
    p = hooks.add_parser("new-key", help="print a new key for WEBHOOK_SECRETS_KEY")
    p.set_defaults(func=cmd_webhooks_new_key)
    p = hooks.add_parser(
        "rotate-key",
        help="re-encrypt every stored signing secret with the first WEBHOOK_SECRETS_KEY key",
    )
    p.add_argument("--database-url", default=None)
    p.set_defaults(func=cmd_webhooks_rotate_key)

    from cli import doctor

    doctor.add_parser(sub, api)
    sub.choices["doctor"].set_defaults(func=doctor.cmd_doctor)
    return parser


def cmd_webhooks_new_key(args: argparse.Namespace) -> int:
    from shared.crypto import new_key

    print(new_key())
    return 0


def cmd_webhooks_rotate_key(args: argparse.Namespace) -> int:
    """Put the new key first in WEBHOOK_SECRETS_KEY (old ones after it), run this, then drop
    the old keys."""
    import asyncio

    from shared.config import get_settings
    from shared.crypto import SecretBox
    from shared.db import create_engine, create_sessionmaker, transaction
    from shared.webhooks.service import reencrypt_secrets

    settings = get_settings()
    if args.database_url:
        settings = settings.model_copy(update={"database_url": args.database_url})

    async def run() -> int:
        engine = create_engine(settings, pool_size=1)
        try:
            async with transaction(create_sessionmaker(engine)) as session:
                return await reencrypt_secrets(session, SecretBox(settings.webhook_secret_keys))
        finally:
            await engine.dispose()

    print(f"re-encrypted {asyncio.run(run())} row(s) with the first WEBHOOK_SECRETS_KEY key")
    return 0


def cmd_webhooks_listen(args: argparse.Namespace) -> int:
    from cli.listen import serve

    if not args.secret:
        print("error: --secret (or SAAS_LLM_WEBHOOK_SECRET) is required", file=sys.stderr)
        return 2
    serve(args.host, args.port, args.secret, full=args.full)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except APIError as exc:
        rid = f" (request {exc.request_id})" if exc.request_id else ""
        print(f"error: {exc.status} {exc.type}: {exc.message}{rid}", file=sys.stderr)
        return 1
    except WaitTimeout as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SaaSLLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
