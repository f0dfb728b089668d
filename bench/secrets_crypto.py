"""Cost of secrets at rest per webhook delivery: `python -m bench.secrets_crypto` prints µs."""

from __future__ import annotations

import timeit
from collections.abc import Callable

from shared.crypto import SecretBox, new_key
from shared.webhooks.delivery import generate_secret

N = 20_000


def per_call_us(fn: Callable[[], object]) -> float:
    """Best of 5 runs of N calls, in microseconds per call."""
    return min(timeit.repeat(fn, number=N, repeat=5)) / N * 1e6


def main() -> None:
    k1, k2 = new_key(), new_key()
    box = SecretBox([k1])
    plain = generate_secret()
    sealed = box.seal(plain)
    under_old_key = SecretBox([k2]).seal(generate_secret())

    def grace() -> None:
        b = SecretBox([k1])
        b.open(sealed)
        b.open(sealed)

    rows = [
        ("per delivery: decrypt its secret", lambda: SecretBox([k1]).open(sealed)),
        ("per delivery in a grace period: decrypt two", grace),
        (
            "mid key rotation: secret under the second key",
            lambda: SecretBox([k1, k2]).open(under_old_key),
        ),
        ("encrypt one secret (create, rotate)", lambda: box.seal(plain)),
    ]
    for name, fn in rows:
        print(f"{name:<50} {per_call_us(fn):8.1f} us")


if __name__ == "__main__":
    main()
