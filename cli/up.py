"""`saas-llm up`: the whole platform on one machine, in the foreground, until Ctrl-C.

Order: the proxy starts first (it is the slowest to boot) while PostgreSQL and Redis come up;
then migrations, the API and a worker; then the demo team and key. Stopping goes the other way.
Everything that must survive a restart lives in the data folder:

    <data-dir>/state.json   generated secrets and the demo key (mode 0600)
    <data-dir>/postgres/    the embedded PostgreSQL cluster (when DATABASE_URL is unset)
    <data-dir>/redis/       the embedded Redis (Valkey) append-only file (when REDIS_URL is unset)
    <data-dir>/proxy.yaml   the proxy config written for this run
    <data-dir>/logs/        one log per process
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from cli.embedded import EmbeddedError, EmbeddedPostgres, EmbeddedRedis
from cli.models import DEMO_MODEL, model_list
from cli.stack import BIN, ROOT, Proc, start_api, start_proxy, start_worker, write_proxy_config
from shared.crypto import new_key as new_fernet_key

DEMO_TEAM = "demo"
OWNER_EMAIL = "owner@localhost"
READY_LINE = "saas-llm is up"

MAX_WORKER_RESTARTS = 20


@dataclass
class UpOptions:
    data_dir: Path
    api_port: int = 8000
    proxy_port: int = 4000
    pg_port: int = 54329
    redis_port: int = 63799
    demo: bool = True


class _Stop(Exception):
    """Raised by the signal handlers to unwind into the orderly shutdown."""


class State:
    """Secrets and ids kept across runs in `<data-dir>/state.json`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def secret(self, name: str, prefix: str = "") -> str:
        if not self.data.get(name):
            self.data[name] = prefix + secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")
            self.save()
        return str(self.data[name])

    def value(self, name: str, make: Callable[[], str]) -> str:
        """A kept value, made by `make` on first use."""
        if not self.data.get(name):
            self.data[name] = make()
            self.save()
        return str(self.data[name])

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        tmp.replace(self.path)


@dataclass
class LocalStack:
    """What `up` started, so it can be stopped in reverse order."""

    procs: list[Proc] = field(default_factory=list)
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.name == "postgres" and self.postgres is not None:
                self.postgres.stop()
            else:
                proc.stop(timeout=30)


def _say(message: str = "") -> None:
    print(message, flush=True)


def _claim(data_dir: Path) -> None:
    """Refuse to share a data folder with another running `up`."""
    pidfile = data_dir / "up.pid"
    try:
        other = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{other}/cmdline").read_bytes()
    except (OSError, ValueError):
        cmdline = b""
    if b"saas-llm" in cmdline or b"cli.main" in cmdline:
        raise SystemExit(f"another `saas-llm up` already uses {data_dir} ({pidfile})")
    pidfile.write_text(f"{os.getpid()}\n")


def ensure_demo(api_url: str, admin_key: str, state: State) -> str:
    """The demo team and a working key for it, created once and reused on later runs."""
    admin = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=api_url, timeout=30) as http:
        r = http.post(
            "/api/admin/teams",
            headers=admin,
            json={"team_id": DEMO_TEAM, "name": "Demo team", "metadata": {"created_by": "up"}},
        )
        if r.status_code not in (201, 409):
            raise RuntimeError(f"creating the demo team failed: {r.status_code} {r.text}")
        key = state.data.get("demo_key")
        if key:
            team = {"Authorization": f"Bearer {key}"}
            if http.get("/api/jobs", params={"limit": 1}, headers=team).status_code == 200:
                return str(key)
        r = http.post(
            f"/api/admin/teams/{DEMO_TEAM}/keys", headers=admin, json={"name": "demo (up)"}
        )
        if r.status_code != 201:
            raise RuntimeError(f"creating the demo key failed: {r.status_code} {r.text}")
        state.data["demo_key"], state.data["demo_key_id"] = r.json()["key"], r.json()["id"]
        state.save()
        return str(r.json()["key"])


def ensure_owner(env: dict[str, str], state: State) -> str | None:
    """The first dashboard account (an owner), created once; returns its password the one time
    it is created (it is also kept in state.json, like the master key), else None."""
    if state.data.get("admin_email"):
        return None
    password = state.secret("admin_password")
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "admin",
            "create",
            "--email",
            OWNER_EMAIL,
            "--role",
            "owner",
            "--password-env",
            "--database-url",
            env["DATABASE_URL"],
        ],
        env={**env, "SAAS_LLM_ADMIN_PASSWORD": password},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if created.returncode != 0 and "already exists" not in created.stderr:
        raise RuntimeError(f"creating the dashboard owner failed:\n{created.stderr}")
    state.data["admin_email"] = OWNER_EMAIL
    state.save()
    return password if created.returncode == 0 else None


def curl_example(api_url: str, key: str, model: str = DEMO_MODEL) -> str:
    message = {"role": "user", "content": "Say hello"}
    body = json.dumps({"requests": [{"custom_id": "hello", "model": model, "messages": [message]}]})
    return (
        f"curl -s {api_url}/api/jobs \\\n"
        f"  -H 'Authorization: Bearer {key}' \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d {shlex.quote(body)}"
    )


def up(opts: UpOptions) -> int:
    """Start everything, print how to use it, and run until SIGINT/SIGTERM."""
    data_dir = opts.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    _claim(data_dir)
    log_dir = data_dir / "logs"
    state = State(data_dir / "state.json")
    if not (BIN / "litellm").exists():
        _say("the LiteLLM proxy is not installed: pip install 'saas-llm[proxy]'")
        return 2

    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stop_requested.is_set():
            stop_requested.set()
            raise _Stop(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    stack = LocalStack()
    started = time.monotonic()
    try:
        env = dict(os.environ)
        master_key = env.get("LITELLM_MASTER_KEY") or state.secret("master_key", "sk-local-")
        admin_key = env.get("ADMIN_API_KEY") or master_key
        proxy_url = f"http://127.0.0.1:{opts.proxy_port}"
        api_url = f"http://127.0.0.1:{opts.api_port}"
        env.update(
            LITELLM_MASTER_KEY=master_key,
            LITELLM_PROXY_URL=proxy_url,
            PYTHONUNBUFFERED="1",
        )
        # The processes default to production; `saas-llm up` is the one place that selects
        # development (and generates the development-only secrets it needs).
        env.setdefault("ENVIRONMENT", "development")
        if not env.get("WEBHOOK_SECRETS_KEY"):
            env["WEBHOOK_SECRETS_KEY"] = state.value("webhook_secrets_key", new_fernet_key)
        env.setdefault("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")

        models = model_list(env)
        config = write_proxy_config(data_dir / "proxy.yaml", models)
        proxy = start_proxy(env, config, opts.proxy_port, log_dir, wait=False, own_group=True)
        stack.procs.append(proxy)

        waits: list[Any] = []
        if not env.get("DATABASE_URL"):
            pg = EmbeddedPostgres(
                data_dir / "postgres", opts.pg_port, state.secret("postgres_password"), log_dir
            )
            stack.postgres = pg
            if pg.init():
                _say(f"created a PostgreSQL cluster in {pg.data_dir}")
            stack.procs.append(pg.start(wait=False))
            waits.append(pg.wait_ready)
            env["DATABASE_URL"] = pg.url()
        if not (env.get("REDIS_URL") or env.get("REDIS_HOST")):
            rd = EmbeddedRedis(
                data_dir / "redis", opts.redis_port, state.secret("redis_password"), log_dir
            )
            stack.redis = rd
            stack.procs.append(rd.start(wait=False))
            waits.append(rd.wait_ready)
            env["REDIS_URL"] = rd.url()
        for wait in waits:
            wait()
        if stack.postgres is not None:
            stack.postgres.ensure_database()

        # In a child process: the supervisor then holds no SQLAlchemy/Alembic in memory while idle.
        migrate = subprocess.run(
            [sys.executable, "-m", "cli.main", "migrate", "--database-url", env["DATABASE_URL"]],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"migrations failed:\n{migrate.stdout}{migrate.stderr}")

        owner_password = ensure_owner(env, state)

        api = start_api(env, opts.api_port, log_dir, wait=False, own_group=True)
        stack.procs.append(api)
        worker = start_worker(env, log_dir, wait=False, own_group=True)
        stack.procs.append(worker)
        api.wait_http(f"{api_url}/health", timeout=60)
        worker.wait_log("worker started", timeout=60)
        proxy.wait_http(f"{proxy_url}/health/liveliness", timeout=180)

        demo_key = ensure_demo(api_url, admin_key, state) if opts.demo else None
        elapsed = time.monotonic() - started
        names = ", ".join(m["model_name"] for m in models)
        _say()
        _say(f"{READY_LINE} ({elapsed:.1f}s); data in {data_dir}")
        _say(f"  API:    {api_url}   (docs: {api_url}/docs)")
        _say(f"  proxy:  {proxy_url}   models: {names}")
        _say(f"  DATABASE_URL={_redact(env['DATABASE_URL'])}")
        _say(f"  REDIS_URL={_redact(env['REDIS_URL'])}")
        _say(f"  logs:   {log_dir}")
        _say(f"  admin:  {api_url}/admin   sign in as {state.data.get('admin_email', OWNER_EMAIL)}")
        if owner_password:
            _say(f"Dashboard password (shown once; also in {state.path}): {owner_password}")
        if demo_key:
            _say(f"  demo team: {DEMO_TEAM}")
            _say(f"Demo key: {demo_key}")
            _say()
            _say("Submit a job:")
            _say(curl_example(api_url, demo_key))
            _say()
            _say(
                f"Or: SAAS_LLM_API_KEY={demo_key} saas-llm jobs submit --model {DEMO_MODEL} "
                "--prompt 'Say hello' --wait"
            )
        _say("Press Ctrl-C to stop.")
        worker_restarts = 0
        while not stop_requested.is_set():
            for index, proc in enumerate(stack.procs):
                if proc.alive():
                    continue
                code = proc.popen.returncode
                if proc is worker and worker_restarts < MAX_WORKER_RESTARTS:
                    # Like Railway's ON_FAILURE policy: a worker holds no state, so start another
                    # (it exits when it loses Redis for longer than its retries cover).
                    worker_restarts += 1
                    _say(f"worker exited ({code}); restarting ({worker_restarts})")
                    worker = start_worker(env, log_dir, wait=False, own_group=True)
                    stack.procs[index] = worker
                    continue
                _say(f"{proc.name} exited ({code}); stopping:\n{proc.log_tail()}")
                return 1
            stop_requested.wait(0.5)
        return 0
    except _Stop:
        return 0
    except (EmbeddedError, RuntimeError) as exc:
        _say(f"saas-llm up failed: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _say("stopping...")
        stack.stop()
        (data_dir / "up.pid").unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _say("stopped.")
        sys.stdout.flush()


def _redact(url: str) -> str:
    """The URL with its password hidden (the password stays in state.json)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
