"""The proxy's start command (proxy/start.py) with the Railway guide's variables, as they are:
DATABASE_URL set is ignored (and logged) unless LITELLM_USE_DATABASE=true, and REDIS_URL with a
password configures both the response cache and the router's shared state, so two proxy
processes on one Redis share a cooldown."""

from __future__ import annotations

import os
import secrets
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
import redis
import trustme
import yaml

from cli.embedded import EmbeddedRedis
from cli.stack import ROOT, Proc, free_port, spawn
from proxy import start as proxy_start
from tests.harness import PG_ADMIN, REDIS_URL, provider_requests, wait_until

GUIDE_KEY = "sk-prod-CHANGE-ME-TO-SECURE-RANDOM-KEY"


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A Valkey server that requires a password; yields (Railway-style URL, password)."""
    password = "p@ss/w:rd-" + secrets.token_hex(6)
    base = tmp_path_factory.mktemp("pwredis")
    server = EmbeddedRedis(base / "data", free_port(), password, base)
    server.start()
    url = f"redis://default:{quote(password, safe='')}@127.0.0.1:{server.port}/0"
    yield url, password
    server.stop()


@pytest.fixture
def throwaway_database() -> Iterator[str]:
    name = "saasllm_proxydb_" + uuid.uuid4().hex[:10]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def guide_env(database_url: str, redis_url: str, port: int) -> dict[str, str]:
    """The guide's "Quick Copy for LiteLLM Proxy" block, with Railway's references resolved."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "LITELLM_MASTER_KEY": GUIDE_KEY,
        "OPENAI_API_KEY": "sk-proj-YOUR-OPENAI-KEY",
        "ANTHROPIC_API_KEY": "sk-ant-YOUR-ANTHROPIC-KEY",
        "REDIS_URL": redis_url,
    }


def start_proxy(name: str, config: Path, env: dict[str, str], log_dir: Path) -> Proc:
    argv = [sys.executable, str(ROOT / "proxy/start.py"), "--config", str(config)]
    proc = spawn(name, [*argv, "--host", "127.0.0.1"], env, log_dir)
    proc.wait_http(f"http://127.0.0.1:{env['PORT']}/health/liveliness", timeout=180)
    return proc


def chat(port: int, model: str, content: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        headers={"Authorization": f"Bearer {GUIDE_KEY}"},
        json={"model": model, "messages": [{"role": "user", "content": content}], **extra},
        timeout=60,
    )


def test_guide_variables_serve_the_demo_model_without_litellms_database(
    tmp_path: Path, password_redis: tuple[str, str], throwaway_database: str
) -> None:
    redis_url, password = password_redis
    port = free_port()
    proc = start_proxy(
        "proxy-guide",
        ROOT / "proxy/config.yaml",
        guide_env(throwaway_database, redis_url, port),
        tmp_path,
    )
    try:
        log = proc.log_path.read_text()
        assert "ignoring DATABASE_URL" in log and "LITELLM_USE_DATABASE=true" in log
        content = "cache me " + uuid.uuid4().hex
        first = chat(port, "demo", content, cache={"use-cache": True})
        assert first.status_code == 200, first.text
        assert float(first.headers["x-litellm-response-cost"]) > 0
        # The response cache is the password-protected Redis of REDIS_URL: the second identical
        # request is a hit, and its key is in that server.
        second = chat(port, "demo", content, cache={"use-cache": True})
        assert second.status_code == 200, second.text
        cache_key = second.headers.get("x-litellm-cache-key")
        assert cache_key, dict(second.headers)
        client = redis.Redis.from_url(redis_url)
        try:
            assert client.exists(cache_key) == 1
        finally:
            client.close()
    finally:
        proc.stop()
    # LiteLLM never touched the database it was handed.
    with psycopg.connect(throwaway_database) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (0,)
    assert password not in proc.log_path.read_text()


def test_two_proxies_on_one_redis_share_a_cooldown(
    tmp_path: Path, password_redis: tuple[str, str], fake_provider: str, provider: httpx.Client
) -> None:
    redis_url, _ = password_redis
    tag = uuid.uuid4().hex[:8]
    group = f"shared-{tag}"
    ids = {"gpt-4o-mini": f"dep-mini-{tag}", "gpt-4o": f"dep-4o-{tag}"}
    config = {
        "model_list": [
            {
                "model_name": group,
                "litellm_params": {
                    "model": f"openai/{model}",
                    "api_base": fake_provider + "/v1",
                    "api_key": "fake-key",
                },
                "model_info": {"id": dep_id},
            }
            for model, dep_id in ids.items()
        ],
        "litellm_settings": {"num_retries": 0, "request_timeout": 60},
        "router_settings": {"num_retries": 0, "cooldown_time": 120},
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump(config))
    ports = free_port(), free_port()
    procs = [
        start_proxy(f"proxy-{n}", path, guide_env("", redis_url, port), tmp_path)
        for n, port in zip("ab", ports, strict=True)
    ]
    client = redis.Redis.from_url(redis_url)
    try:
        # Proxy A: the provider answers 429 for this request, so A cools the deployment down.
        failing = f"[[fail:429]] {tag}"
        assert chat(ports[0], group, failing).status_code == 429
        (seen,) = provider_requests(provider, failing)
        cooled = ids[seen["model"]]
        other = next(m for m, i in ids.items() if i != cooled)
        wait_until(lambda: client.exists(f"deployment:{cooled}:cooldown"), what="cooldown in Redis")

        # Proxy B never saw a failure, yet routes around the cooled deployment: every request
        # reaches the other one (without shared state, each would pick either, 50/50).
        def via_b(i: int) -> str:
            marker = f"via-b {tag} {i}"
            response = chat(ports[1], group, marker)
            assert response.status_code == 200, response.text
            return str(provider_requests(provider, marker)[0]["model"])

        wait_until(lambda: via_b(0) == other, what="proxy B to skip the cooled deployment")
        assert [via_b(i) for i in range(1, 9)] == [other] * 8
    finally:
        client.close()
        for proc in procs:
            proc.stop()


def test_rediss_url_reaches_redis_over_tls(tmp_path: Path) -> None:
    """`rediss://` for real: a TLS front (with a test CA) before the local Redis."""
    ca = trustme.CA()
    server_pem, ca_pem = tmp_path / "server.pem", tmp_path / "ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    ca.cert_pem.write_to_path(str(ca_pem))
    plain = httpx.URL(REDIS_URL)
    tls_port = free_port()
    tunnel = spawn(
        "tls-tunnel",
        [
            sys.executable,
            "-m",
            "tests.fakes.tls_tunnel",
            "--port",
            str(tls_port),
            "--target",
            f"{plain.host}:{plain.port or 6379}",
            "--cert",
            str(server_pem),
            "--key",
            str(server_pem),
        ],
        dict(os.environ),
        tmp_path,
    )
    port = free_port()
    env = guide_env("", f"rediss://127.0.0.1:{tls_port}/0", port)
    env["REDIS_SSL_CA_CERTS"] = str(ca_pem)  # LiteLLM reads REDIS_* options from the environment
    try:
        tunnel.wait_log("listening", timeout=30)
        proc = start_proxy("proxy-tls", ROOT / "proxy/config.yaml", env, tmp_path)
        try:
            assert f"Redis 127.0.0.1:{tls_port} (TLS)" in proc.log_path.read_text()
            content = "over tls " + uuid.uuid4().hex
            assert chat(port, "demo", content, cache={"use-cache": True}).status_code == 200
            hit = chat(port, "demo", content, cache={"use-cache": True})
            assert hit.status_code == 200, hit.text
            cache_key = hit.headers.get("x-litellm-cache-key")
            assert cache_key, dict(hit.headers)
        finally:
            proc.stop()
        # The entry went through the TLS front into the Redis behind it.
        client = redis.Redis.from_url(REDIS_URL)
        try:
            assert client.exists(cache_key) == 1
        finally:
            client.close()
        assert "tls connection" in tunnel.log_path.read_text()
    finally:
        tunnel.stop()


# --- what start.py derives (the forms no local server can show: TLS, user names) ------------


def test_rediss_url_configures_tls_for_cache_and_router() -> None:
    config = yaml.safe_load((ROOT / "proxy/config.yaml").read_text())
    env = {"REDIS_URL": "rediss://app:s%3Acret@redis.railway.internal:6380/2"}
    notes = proxy_start.derive(config, env)
    assert env["REDIS_HOST"] == "redis.railway.internal" and env["REDIS_PORT"] == "6380"
    assert env["REDIS_PASSWORD"] == "s:cret" and env["REDIS_USERNAME"] == "app"
    assert env["REDIS_SSL"] == "true" and "REDIS_URL" not in env
    router, cache = config["router_settings"], config["litellm_settings"]["cache_params"]
    assert router["redis_host"] == cache["host"] == "os.environ/REDIS_HOST"
    assert router["redis_password"] == cache["password"] == "os.environ/REDIS_PASSWORD"
    assert router["cache_kwargs"] == {"ssl": True, "username": "os.environ/REDIS_USERNAME", "db": 2}
    assert cache["ssl"] is True and cache["mode"] == "default_off"
    assert "s:cret" not in yaml.safe_dump(config)  # secrets stay references
    assert any("TLS" in n for n in notes)


def test_plain_redis_url_and_separate_variables() -> None:
    config = yaml.safe_load((ROOT / "proxy/config.yaml").read_text())
    env = {"REDIS_URL": "redis://default:pw@10.0.0.5:6379", "REDIS_SSL": "false"}
    proxy_start.derive(config, env)
    assert "REDIS_USERNAME" not in env and "REDIS_SSL" not in env
    assert "ssl" not in config["router_settings"]["cache_kwargs"]
    config = yaml.safe_load((ROOT / "proxy/config.yaml").read_text())
    env = {"REDIS_HOST": "r", "REDIS_PORT": "6379", "REDIS_SSL": "true"}
    proxy_start.derive(config, env)
    assert config["router_settings"]["cache_kwargs"] == {"ssl": True}
    assert "redis_password" not in config["router_settings"]


def test_without_redis_the_cache_is_off_and_database_opt_in_keeps_it() -> None:
    config = yaml.safe_load((ROOT / "proxy/config.yaml").read_text())
    env = {"DATABASE_URL": "postgresql://u:p@h/db", "LITELLM_USE_DATABASE": "true"}
    notes = proxy_start.derive(config, env)
    assert env["DATABASE_URL"] == "postgresql://u:p@h/db"
    assert config["litellm_settings"]["cache"] is False
    assert not [k for k in config["router_settings"] if k.startswith("redis_")]
    assert any("LITELLM_USE_DATABASE=true" in n for n in notes)
    with pytest.raises(ValueError, match="redis://"):
        proxy_start.derive({}, {"REDIS_URL": "http://nope"})
