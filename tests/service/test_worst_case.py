"""The worst case a call reserves in its team's budget before its provider request is LiteLLM's
token count of its prompt x input price + max_tokens x n x output price (with the team's markup),
not the admission's byte bound."""

from __future__ import annotations

import os
import uuid
from decimal import ROUND_CEILING, Decimal

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.billing.prices import prompt_bound, warm_counter
from shared.jobs import money
from shared.jobs.lifecycle import claim_call
from shared.jobs.money import reserve_for_call
from shared.models import Call, Team
from tests.litellm_prices import per_token
from tests.service.conftest import Factory

PROMPT = [
    {"role": "system", "content": "You answer in one word."},
    {"role": "user", "content": "What is the capital of France? Think about it, then answer."},
]


async def test_the_reserved_worst_case_is_litellms_token_count_times_the_prices(
    session: AsyncSession, make_job: Factory
) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from litellm import token_counter

    warm_counter()  # as the worker does at start

    team = Team(
        id="t-" + uuid.uuid4().hex[:10],
        name="t",
        budget_usd=Decimal(10),
        price_markup_pct=Decimal(25),
    )
    session.add(team)
    await session.flush()
    body = {"model": "gpt-4o", "messages": PROMPT, "max_tokens": 300, "n": 2}
    _, _, (call,) = await make_job(1, team=team)
    await session.execute(
        update(Call).where(Call.id == call.id).values(model_requested="gpt-4o", request=body)
    )
    claimed = await claim_call(session, call.id, 60)
    assert claimed is not None
    assert await reserve_for_call(session, claimed) is None
    await session.refresh(claimed)

    counted = token_counter(model="gpt-4o", messages=PROMPT)
    # o200k_base: 6 + 14 tokens of content, 1 + 1 of roles, 3 per message, 3 to prime the reply
    assert counted == 31
    assert counted < prompt_bound(body)  # not the byte bound
    inp, out = per_token("gpt-4o")
    want = ((inp * counted + out * 600) * Decimal("1.25")).quantize(
        Decimal("1e-10"), rounding=ROUND_CEILING
    )
    assert claimed.budget_reserved_usd == want


async def test_until_the_counter_is_warm_the_admission_bound_stands_in(
    session: AsyncSession, make_job: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(money, "counter_ready", lambda: False)
    team = Team(id="t-" + uuid.uuid4().hex[:10], name="t", budget_usd=Decimal(10))
    session.add(team)
    await session.flush()
    _, _, (call,) = await make_job(1, team=team)
    await session.execute(
        update(Call).where(Call.id == call.id).values(max_billed_usd=Decimal("0.0123"))
    )
    claimed = await claim_call(session, call.id, 60)
    assert claimed is not None
    assert await reserve_for_call(session, claimed) is None
    await session.refresh(claimed)
    assert claimed.budget_reserved_usd == Decimal("0.0123")
