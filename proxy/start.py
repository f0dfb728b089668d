"""Start the LiteLLM proxy from the Railway guide's variables, as they are.

    python proxy/start.py --config proxy/config.yaml [--host 0.0.0.0] [--port 4000]

The root `Dockerfile` and `saas-llm up` / the tests both start the proxy through here. It reads
the environment, writes the config LiteLLM will run (next to no secret: passwords stay
`os.environ/...` references) and then execs `litellm --config <derived> ...`:

- `DATABASE_URL` (the guide marks it required for the proxy) is dropped from LiteLLM's
  environment unless `LITELLM_USE_DATABASE=true`: LiteLLM would start its Prisma layer, which
  this image does not ship and this platform does not use (keys, spend and budgets live in the
  SaaS API). The log says which way it went.
- `REDIS_URL` (`redis://[user:]password@host:port/db`, or `rediss://` for TLS) is split into
  `REDIS_HOST`/`REDIS_PORT`/`REDIS_PASSWORD`/`REDIS_USERNAME`/`REDIS_SSL`, and the same target is
  written into both the response cache (`litellm_settings.cache_params`) and the router's shared
  state (`router_settings.redis_*` plus `cache_kwargs`), so replicas share cooldowns and usage.
  Separate `REDIS_HOST`/`REDIS_PORT`/`REDIS_PASSWORD` (and `REDIS_SSL=true`) work as before.
  Without any Redis setting the proxy runs with in-memory state only, and says so.

Standalone on purpose (stdlib + PyYAML, which LiteLLM depends on): the proxy image ships no
platform code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

TRUE = {"1", "true", "yes", "on"}


def log(message: str) -> None:
    print(f"proxy/start: {message}", file=sys.stderr, flush=True)


def use_database(env: Mapping[str, str]) -> bool:
    return env.get("LITELLM_USE_DATABASE", "").strip().lower() in TRUE


def redis_env_from_url(url: str) -> dict[str, str]:
    """`REDIS_*` variables for one Redis URL (`redis://` or `rediss://`)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in {"redis", "rediss"}:
        raise ValueError(f"REDIS_URL must be redis:// or rediss://, not {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError("REDIS_URL has no host")
    out = {
        "REDIS_HOST": parts.hostname,
        "REDIS_PORT": str(parts.port or 6379),
    }
    if parts.scheme == "rediss":
        out["REDIS_SSL"] = "true"
    if parts.password:
        out["REDIS_PASSWORD"] = unquote(parts.password)
    # Railway's URLs name the user `default`, which is what AUTH <password> means anyway (and
    # servers older than Redis 6 refuse a user name).
    if parts.username and unquote(parts.username) != "default":
        out["REDIS_USERNAME"] = unquote(parts.username)
    db = parts.path.lstrip("/")
    if db and db != "0":
        out["REDIS_DB"] = str(int(db))
    return out


def derive(config: dict[str, Any], env: MutableMapping[str, str]) -> list[str]:
    """Adjust `config` and `env` in place for LiteLLM; returns what was decided, for the log."""
    notes: list[str] = []
    for name in ("DATABASE_URL", "DIRECT_URL"):
        if not env.get(name, "").strip():
            env.pop(name, None)  # LiteLLM refuses an empty one as an unknown scheme
    if env.get("DATABASE_URL") or env.get("DIRECT_URL"):
        if use_database(env):
            notes.append("LITELLM_USE_DATABASE=true: LiteLLM uses DATABASE_URL (needs Prisma)")
        else:
            env.pop("DATABASE_URL", None)
            env.pop("DIRECT_URL", None)
            notes.append(
                "ignoring DATABASE_URL: LiteLLM's database layer is off (this platform keeps keys"
                " and spend in the SaaS API); set LITELLM_USE_DATABASE=true to turn it on"
            )

    if env.get("REDIS_URL") and not env.get("REDIS_HOST"):
        env.update(redis_env_from_url(env["REDIS_URL"]))
    # REDIS_URL's target is now in REDIS_*; drop it so no LiteLLM code path reads another one.
    env.pop("REDIS_URL", None)

    litellm_settings = config.setdefault("litellm_settings", {}) or {}
    config["litellm_settings"] = litellm_settings
    router_settings = config.setdefault("router_settings", {}) or {}
    config["router_settings"] = router_settings
    if not env.get("REDIS_HOST"):
        for key in [k for k in router_settings if k.startswith("redis_")]:
            del router_settings[key]
        router_settings.pop("cache_kwargs", None)
        if litellm_settings.get("cache"):
            litellm_settings["cache"] = False
            litellm_settings.pop("cache_params", None)
        notes.append("no REDIS_URL or REDIS_HOST: response cache off, router state in memory only")
        return notes

    tls = env.get("REDIS_SSL", "").strip().lower() in TRUE
    # LiteLLM reads REDIS_SSL itself; a string "false" must not reach a truthiness test.
    if tls:
        env["REDIS_SSL"] = "true"
    else:
        env.pop("REDIS_SSL", None)
    target: dict[str, Any] = {
        "host": "os.environ/REDIS_HOST",
        "port": "os.environ/REDIS_PORT",
        "password": "os.environ/REDIS_PASSWORD" if env.get("REDIS_PASSWORD") else None,
    }
    extra: dict[str, Any] = {}
    if tls:
        extra["ssl"] = True
    if env.get("REDIS_USERNAME"):
        extra["username"] = "os.environ/REDIS_USERNAME"
    if env.get("REDIS_DB"):
        extra["db"] = int(env["REDIS_DB"])

    router_settings.update({f"redis_{k}": v for k, v in target.items() if v is not None})
    if target["password"] is None:
        router_settings.pop("redis_password", None)
    router_settings["cache_kwargs"] = {**(router_settings.get("cache_kwargs") or {}), **extra}
    if litellm_settings.get("cache"):
        params = litellm_settings.setdefault("cache_params", {}) or {}
        litellm_settings["cache_params"] = params
        params.setdefault("type", "redis")
        params.update({k: v for k, v in target.items() if v is not None})
        if target["password"] is None:
            params.pop("password", None)
        params.update(extra)
    where = f"{env['REDIS_HOST']}:{env['REDIS_PORT']}" + (" (TLS)" if tls else "")
    notes.append(f"Redis {where}: response cache and router state (cooldowns, usage) shared")
    return notes


def litellm_binary() -> str:
    beside = Path(sys.executable).parent / "litellm"
    if beside.exists():
        return str(beside)
    found = shutil.which("litellm")
    if not found:
        raise SystemExit("proxy/start: litellm is not installed (pip install 'litellm[proxy]')")
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(Path(__file__).with_name("config.yaml")))
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    parser.add_argument("--port", default=os.environ.get("PORT", "4000"))
    args, rest = parser.parse_known_args(argv)

    config = yaml.safe_load(Path(args.config).read_text()) or {}
    env = dict(os.environ)
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        notes = derive(config, env)
    except ValueError as exc:
        raise SystemExit(f"proxy/start: {exc}") from None
    for note in notes:
        log(note)

    out_dir = Path(tempfile.mkdtemp(prefix="litellm-config-"))
    derived = out_dir / "config.yaml"
    derived.write_text(yaml.safe_dump(config, sort_keys=False))
    derived.chmod(0o600)
    binary = litellm_binary()
    argv_out = [binary, "--config", str(derived), "--host", args.host, "--port", args.port]
    os.execve(binary, [*argv_out, *rest], env)  # noqa: S606 (exec, not a shell: on purpose)


if __name__ == "__main__":
    main()
