"""Money in API payloads: exact decimals as plain strings ("0.0000135", never "1.35E-5")."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import PlainSerializer


def money_str(value: Decimal) -> str:
    """A Decimal as a plain, trailing-zero-free string."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


Money = Annotated[Decimal, PlainSerializer(money_str, return_type=str, when_used="json")]
