from __future__ import annotations

import re

import pytest

from cli.stack import ROOT
from shared.config import DEV_WEBHOOK_SECRETS_KEY, KNOWN_EXAMPLE_SECRETS, DatabaseURL, Settings
from shared.crypto import new_key


def test_railway_postgres_urls_are_understood() -> None:
    url = DatabaseURL(
        "postgres://u:p@db.internal:5432/railway?sslmode=require&pool_size=20&max_overflow=10"
    )
    assert url.url() == "postgresql+asyncpg://u:p@db.internal:5432/railway"
    assert url.pool_size == 20 and url.max_overflow == 10
    assert url.connect_args == {"ssl": "require"}
    plain = DatabaseURL("postgresql://u@h/db")
    assert plain.url() == "postgresql+asyncpg://u@h/db" and plain.connect_args == {}
    with pytest.raises(ValueError):
        DatabaseURL("mysql://u@h/db")


def test_redis_url_from_host_port_password() -> None:
    s = Settings(
        redis_url=None, redis_host="redis.railway.internal", redis_port=6380, redis_password="p@ss"
    )
    assert s.effective_redis_url == "redis://:p%40ss@redis.railway.internal:6380/0"
    assert Settings(redis_url="redis://x:1/2").effective_redis_url == "redis://x:1/2"


GOOD_KEY = "sk-" + "Q7v2Lk9xPz4Rw8Tn3Yb6Hc1Jm5Sd0Fg"  # 35 characters, random-looking
GOOD_FERNET = "hkG0_6v1bq3m4PqKXbLw2mVY1bT3Cq9iV8zrH7nV1mQ="


def production(**overrides: object) -> Settings:
    fields: dict[str, object] = {
        "environment": "production",
        "litellm_master_key": GOOD_KEY,
        "webhook_secrets_key": GOOD_FERNET,
    }
    fields.update(overrides)
    return Settings(**fields)  # type: ignore[arg-type]


def refusal(settings: Settings) -> str:
    with pytest.raises(RuntimeError) as refused:
        settings.check_production()
    return str(refused.value)


def test_processes_run_as_production_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENVIRONMENT", raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.environment == "production" and not settings.is_development
    assert "LITELLM_MASTER_KEY" in refusal(settings)
    # the tests' own environment name counts as development
    for name in ("development", "test", "TEST", "local"):
        assert Settings(environment=name).is_development
        Settings(environment=name).check_production()


def test_a_good_production_configuration_starts() -> None:
    good = production()
    good.check_production()
    assert good.admin_api_key == good.litellm_master_key
    production(admin_api_key="sk-admin-" + "Zx8Vb2Nm4Lk6Jh9Gf3Ds1Qw7Er5Ty0Ui").check_production()
    production(webhook_secrets_key=GOOD_FERNET + "," + new_key()).check_production()
    production(metrics_token="m" + "Aq1Sw2De3Fr4Gt5Hy6Ju7Ki8Lo9Pz0Xc").check_production()


def _doc_example_keys() -> set[str]:
    """Every sk-... key printed in the deployment guide, the docs and the compose file."""
    texts = [ROOT.joinpath(p).read_text() for p in ("README.md", "docker-compose.yml")]
    texts += [p.read_text() for p in (ROOT / "docs").glob("*.md")]
    for guide in (ROOT.parent / "shared" / "SEED-railway-guide.md",):
        if guide.exists():  # beside the checkout, in CI and in worktrees
            texts.append(guide.read_text())
    return {m for t in texts for m in re.findall(r"sk-[A-Za-z0-9_\-]{8,}", t)}


def test_every_example_key_of_the_guide_and_docs_is_refused() -> None:
    examples = _doc_example_keys() | set(KNOWN_EXAMPLE_SECRETS)
    for guide_key in (
        "sk-prod-1234567890abcdef",
        "sk-prod-8vN_zK2QmR4tX7wY3jL9pF1nH6cV5bA8",
        "sk-prod-CHANGE-ME-TO-SECURE-RANDOM-KEY",
    ):
        assert guide_key in examples
    for key in examples:
        assert "LITELLM_MASTER_KEY" in refusal(production(litellm_master_key=key)), key
        assert "ADMIN_API_KEY" in refusal(production(admin_api_key=key)), key


@pytest.mark.parametrize(
    ("overrides", "named", "why"),
    [
        ({"litellm_master_key": ""}, "LITELLM_MASTER_KEY", "missing"),
        ({"litellm_master_key": "sk-Zx8Vb2Nm4Lk6Jh9"}, "LITELLM_MASTER_KEY", "shorter than 32"),
        ({"litellm_master_key": "sk-dev-master-key"}, "LITELLM_MASTER_KEY", "shorter than 32"),
        (
            {"litellm_master_key": "sk-prod-your-key-goes-here-0123456789abc"},
            "LITELLM_MASTER_KEY",
            "placeholder",
        ),
        ({"litellm_master_key": "a" * 40}, "LITELLM_MASTER_KEY", "not random"),
        ({"admin_api_key": "short-admin-key"}, "ADMIN_API_KEY", "shorter than 32"),
        ({"metrics_token": "tok"}, "METRICS_TOKEN", "shorter than 32"),
        ({"webhook_secrets_key": None}, "WEBHOOK_SECRETS_KEY", "missing"),
        ({"webhook_secrets_key": "x" * 20}, "WEBHOOK_SECRETS_KEY", "shorter than 32"),
        (
            {"webhook_secrets_key": "Zx8Vb2Nm4Lk6Jh9Gf3Ds1Qw7Er5Ty0Ui-not-fernet"},
            "WEBHOOK_SECRETS_KEY",
            "not a Fernet key",
        ),
        ({"webhook_secrets_key": DEV_WEBHOOK_SECRETS_KEY}, "WEBHOOK_SECRETS_KEY", "example"),
        ({"debug": True}, "DEBUG", "is on"),
        ({"webhook_allow_private_networks": True}, "WEBHOOK_ALLOW_PRIVATE_NETWORKS", "is on"),
    ],
)
def test_production_refuses_and_names_the_setting(
    overrides: dict[str, object], named: str, why: str
) -> None:
    message = refusal(production(**overrides))
    assert named in message and why in message, message
    # the value itself is never printed
    for value in overrides.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in message


def test_empty_optional_secrets_mean_unset() -> None:
    # compose passes `${ADMIN_API_KEY:-}` as an empty string
    s = production(admin_api_key="", metrics_token="")
    s.check_production()
    assert s.admin_api_key == GOOD_KEY and s.metrics_token is None


def test_secret_values_cover_keys_and_database_and_redis_passwords() -> None:
    s = production(
        database_url="postgresql://app:p%40ss-w0rd@db:5432/x",
        redis_url="redis://:r3dis-pw@r:6379/0",
        metrics_token="m" * 3 + "Aq1Sw2De3Fr4Gt5Hy6Ju7Ki8Lo9Pz0Xc",
    )
    values = set(s.secret_values())
    assert {GOOD_KEY, GOOD_FERNET, "p@ss-w0rd", "p%40ss-w0rd", "r3dis-pw"} <= values
    assert s.metrics_token in values


def test_money_is_a_plain_exact_string() -> None:
    from decimal import Decimal

    from shared.money import money_str

    assert money_str(Decimal("0E-10")) == "0"
    assert money_str(Decimal("0.0000135000")) == "0.0000135"
    assert money_str(Decimal("12.5000000000")) == "12.5"
    assert money_str(Decimal("1E+1")) == "10"
