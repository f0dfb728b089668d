"""The dashboard's money forms as the billing services' own inputs: a grant form becomes a
`CreditsChange`, the budget and billing form a `TeamUpdate`. No money rule lives here: amounts,
expiries, modes and limits are checked by those models and by `CreditsService` / `TeamService`,
exactly as for the admin API."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shared.billing.schemas import CreditsChange
from shared.errors import BadRequest
from shared.models import Team
from shared.money import money_str
from shared.teams.schemas import TeamUpdate

# Settings that may be cleared (empty field: no budget, no cap, no threshold, no allowance).
NULLABLE = ("budget_usd", "low_credits_threshold", "monthly_allowance", "max_n", "max_tokens_cap")
# Settings that always have a value (empty field: leave as it is).
REQUIRED = ("credits_per_usd", "tokens_per_credit", "price_markup_pct", "default_max_tokens")
CHOICES = ("billing_mode", "budget_period", "on_limit")
BILLING_FIELDS = (*CHOICES, *NULLABLE, *REQUIRED, "budget_thresholds", "model_prices")


M = TypeVar("M", bound=BaseModel)


def parse_form(model: type[M], data: dict[str, Any]) -> M:
    """The form's fields as `model`; the first invalid field as a 400 naming it."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise BadRequest(f"{field}: {first['msg']}", param=field) from exc


def _utc(value: str, name: str) -> datetime | None:
    value = value.strip()
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadRequest(f"{name}: a date and time such as 2027-01-31T23:59", param=name) from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def credits_change(amount: str, expires_at: str, note: str) -> CreditsChange:
    """The grant form: `expires_at` from a datetime-local field, read as UTC."""
    return parse_form(
        CreditsChange,
        {
            "kind": "grant",
            "amount": amount.strip(),
            "expires_at": _utc(expires_at, "expires_at"),
            "note": note.strip(),
        },
    )


def _model_prices(text: str) -> dict[str, dict[str, str]]:
    """One override a line: `model input_usd_per_token output_usd_per_token`."""
    prices: dict[str, dict[str, str]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        if len(parts) != 3:
            raise BadRequest(
                f"model_prices: line {number}: write `model input_per_token output_per_token`",
                param="model_prices",
            )
        model, given_in, given_out = parts
        for value in (given_in, given_out):
            try:
                Decimal(value)
            except InvalidOperation as exc:
                raise BadRequest(
                    f"model_prices: line {number}: {value!r} is not a number",
                    param="model_prices",
                ) from exc
        prices[model] = {"input_cost_per_token": given_in, "output_cost_per_token": given_out}
    return prices


def _thresholds(text: str) -> list[str]:
    return [t for t in text.replace(",", " ").split() if t]


def team_update(form: dict[str, str]) -> TeamUpdate:
    """The budget and billing form (every field present: it is always the whole form)."""
    data: dict[str, Any] = {}
    for name in CHOICES:
        if form.get(name, "").strip():
            data[name] = form[name].strip()
    for name in NULLABLE:
        data[name] = form.get(name, "").strip() or None
    for name in REQUIRED:
        if form.get(name, "").strip():
            data[name] = form[name].strip()
    data["enforce_credits"] = form.get("enforce_credits") == "on"
    data["budget_thresholds"] = _thresholds(form.get("budget_thresholds", ""))
    data["model_prices"] = _model_prices(form.get("model_prices", ""))
    return parse_form(TeamUpdate, data)


def _s(value: Decimal | int | None) -> str:
    if value is None:
        return ""
    return money_str(Decimal(value)) if isinstance(value, Decimal) else str(value)


def billing_form_values(team: Team) -> dict[str, Any]:
    """The team's settings as the form's field values."""
    prices = "\n".join(
        f"{model} {p.get('input_cost_per_token', '')} {p.get('output_cost_per_token', '')}"
        for model, p in sorted((team.model_prices or {}).items())
    )
    return {
        "billing_mode": team.billing_mode,
        "budget_period": team.budget_period,
        "on_limit": team.on_limit,
        "enforce_credits": bool(team.enforce_credits),
        "budget_usd": _s(team.budget_usd),
        "low_credits_threshold": _s(team.low_credits_threshold),
        "monthly_allowance": _s(team.monthly_allowance),
        "max_n": _s(team.max_n),
        "max_tokens_cap": _s(team.max_tokens_cap),
        "credits_per_usd": _s(team.credits_per_usd),
        "tokens_per_credit": _s(team.tokens_per_credit),
        "price_markup_pct": _s(team.price_markup_pct),
        "default_max_tokens": _s(team.default_max_tokens),
        "budget_thresholds": ", ".join(str(t) for t in team.budget_thresholds or []),
        "model_prices": prices,
    }


def submitted_values(form: dict[str, str]) -> dict[str, Any]:
    """What the admin typed, to show again beside an error."""
    values: dict[str, Any] = {name: form.get(name, "") for name in BILLING_FIELDS}
    values["enforce_credits"] = form.get("enforce_credits") == "on"
    return values
