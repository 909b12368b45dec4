"""What the filters see (the iteration's prompts with their samples and judge signals), what they can ask the
policy, and what they return."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from selfloop.db.curation import Candidate, PooledSample
from selfloop.engines.chat import user_chat

__all__ = ["Candidate", "FilterContext", "PooledSample", "Verdicts"]


@dataclass
class Verdicts:
    """One filter's outcome: the prompt ids it keeps, best first for a ranking filter, and its rows."""

    kept: list[int]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def decide(self, prompt_id: int, score: float | None, kept: bool, reason: str) -> None:
        self.rows.append({"prompt_id": prompt_id, "sample_id": None, "score": score, "kept": kept, "reason": reason})

    def sample_score(self, prompt_id: int, sample_id: int, score: float | None) -> None:
        self.rows.append({"prompt_id": prompt_id, "sample_id": sample_id, "score": score, "kept": None, "reason": None})


@dataclass
class FilterContext:
    """The policy the filters score with (the iteration's starting policy, as the samples were drawn from it),
    the iteration's place in its lineage (a fork continues its parent's count) and a seed for any draw."""

    engine: Any  # selfloop.engines.base.Engine
    adapter: Any  # selfloop.adapters.Adapter | None
    system: str | None
    number: int
    seed: int

    def chat(self, text: str) -> list[dict[str, str]]:
        return user_chat(text, self.system)

    def embed(self, pool: Sequence[Candidate]) -> list[list[float]]:
        """Each prompt's embedding: the last layer's state at the last token of its chat, as the policy reads it."""
        return self.engine.embed([self.chat(c.text) for c in pool], adapter=self.adapter)
