"""Seeds derived from names, so a re-run after a crash draws exactly what the first run drew."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from (loop seed, iteration, purpose, item, ...): stable across processes and platforms."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
