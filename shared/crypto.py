"""Secrets at rest: webhook signing secrets are stored Fernet-encrypted (`cryptography`).

`WEBHOOK_SECRETS_KEY` holds one or more Fernet keys, comma-separated, newest first: the first
encrypts, every one decrypts (MultiFernet), so a key is rotated by putting a new one in front,
running `saas-llm webhooks rotate-key` (re-encrypts every row with the first key), then dropping
the old one. Stored values carry a `fernet:` prefix so a plaintext left by an older version is
recognised and never mistaken for a token.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PREFIX = "fernet:"


class SecretKeyError(Exception):
    """A stored secret cannot be decrypted with any configured key."""


def invalid_keys(keys: Sequence[str]) -> list[str]:
    """Why each malformed key is unusable (a Fernet key is 32 url-safe base64 bytes)."""
    problems: list[str] = []
    for index, key in enumerate(keys, 1):
        try:
            if len(base64.urlsafe_b64decode(key.encode())) != 32:
                raise ValueError
        except (ValueError, binascii.Error):
            problems.append(
                f"key {index} is not a Fernet key (generate one with `saas-llm webhooks new-key`)"
            )
    return problems


def new_key() -> str:
    return Fernet.generate_key().decode()


@lru_cache(maxsize=8)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise SecretKeyError("WEBHOOK_SECRETS_KEY is not set")
    if problems := invalid_keys(keys):
        raise SecretKeyError("WEBHOOK_SECRETS_KEY: " + "; ".join(problems))
    return MultiFernet([Fernet(k.encode()) for k in keys])


class SecretBox:
    """Encrypts and decrypts stored secrets with the configured keys."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._fernet = _fernet(tuple(keys))

    def seal(self, plaintext: str) -> str:
        return PREFIX + self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return stored  # a row written before encryption (migration 0007 converts them)
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken as exc:
            raise SecretKeyError(
                "a stored webhook secret does not decrypt with any WEBHOOK_SECRETS_KEY key"
            ) from exc

    def open_optional(self, stored: str | None) -> str | None:
        return None if stored is None else self.open(stored)

    def rotate(self, stored: str) -> str:
        """Re-encrypt with the first key (plaintext rows get encrypted)."""
        if not stored.startswith(PREFIX):
            return self.seal(stored)
        return PREFIX + self._fernet.rotate(stored[len(PREFIX) :].encode()).decode()
