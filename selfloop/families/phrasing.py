"""Seen and held-out wordings of a generated problem.

Every built-in family lists its wordings per problem type with the training wordings first and the
held-out ones last. A problem's wording is picked by a hash of its key, so it never depends on a
seed, and the held-out wordings never reach a training prompt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def stable_index(key: str, n: int) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % n


def pick(wordings: Sequence[str], key: str, phrasing: str, seen: int = 1) -> str:
    """One of the first `seen` wordings for 'seen', one of the rest for 'unseen'."""
    if phrasing == "seen":
        return wordings[stable_index(key, seen)] if seen > 1 else wordings[0]
    if phrasing == "unseen":
        return wordings[seen + stable_index(key, len(wordings) - seen)]
    raise ValueError(f"phrasing must be 'seen' or 'unseen', not {phrasing!r}")
