"""Time-ordered, prefixed ids (`job_01J...`): they sort by creation, so lists page by id."""

from __future__ import annotations

import os
import time
from datetime import datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def ulid() -> str:
    """A 26-character ULID: 48 bits of milliseconds, then 80 random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    return _b32(ms, 10) + _b32(rand, 16)


def new_id(prefix: str) -> str:
    """A new id such as `job_01JD3K...`."""
    return f"{prefix}_{ulid()}"


def ulid_floor(ms: int) -> str:
    """The smallest ULID of millisecond `ms`: ids compared with it select those created since."""
    return _b32(ms, 10) + "0" * 16


def id_floor(prefix: str, when: datetime) -> str:
    """The smallest id of `prefix` created at `when`: a time range becomes an index range on id."""
    ms = max(0, int(when.timestamp() * 1000))
    return f"{prefix}_{_b32(ms, 10)}{'0' * 16}"


# Where a version-4 UUID's random bits lie, five at a time: bits 1-45 and 67-101 (1-based),
# skipping the version (49-52) and variant (65-66) bits: 16 characters, 80 random bits.
_UUID_RANDOM_BITS = (*range(1, 46, 5), *range(67, 102, 5))


def sql_ulid_random(bits: str) -> str:
    """SQL for the 16 random characters of a ULID, read from `bits`, a `bit(128)` expression
    made of `gen_random_uuid()`; evaluated once per row, so a statement can mint many ids."""
    return " || ".join(
        f"substr('{_ALPHABET}', substring({bits} from {p} for 5)::bit(5)::int + 1, 1)"
        for p in _UUID_RANDOM_BITS
    )
