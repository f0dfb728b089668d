from __future__ import annotations

import pytest

from shared.config import DatabaseURL, Settings


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


def test_production_refuses_placeholder_secrets() -> None:
    with pytest.raises(RuntimeError, match="LITELLM_MASTER_KEY"):
        Settings(
            environment="production", litellm_master_key="sk-prod-CHANGE-ME-TO-SECURE-RANDOM-KEY"
        ).check_production()
    good = Settings(
        environment="production", litellm_master_key="sk-prod-8vN_zK2QmR4tX7wY3jL9pF1nH6cV5bA8"
    )
    good.check_production()
    assert good.admin_api_key == good.litellm_master_key
    Settings(environment="development").check_production()


def test_money_is_a_plain_exact_string() -> None:
    from decimal import Decimal

    from shared.money import money_str

    assert money_str(Decimal("0E-10")) == "0"
    assert money_str(Decimal("0.0000135000")) == "0.0000135"
    assert money_str(Decimal("12.5000000000")) == "12.5"
    assert money_str(Decimal("1E+1")) == "10"
