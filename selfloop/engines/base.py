"""The engine protocol every generation back end implements, and the types it speaks.

An engine turns chats into completions and scores given completions. Log-probabilities:
- `generate` reports each sampled token's log-probability under the distribution it was sampled
  from (temperature, top-k and top-p applied and renormalised); greedy decoding reports the
  model's own distribution (temperature 1).
- `score` reports each given token's log-probability under the model at temperature 1
  (what training, judging confidence and reference log-probs use);
- `next_token_logprobs` reports the model's full next-token distribution (temperature 1) at one
  point, read at given candidate tokens (probability-weighted judge scores).
`token_ids` include the end-of-turn token when the completion stopped on it; `text` does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from selfloop.adapters import Adapter

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Chat = list[dict[str, str]]


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    # Record each token's entropy and self-certainty (Completion.token_entropies...): the rollout's samples keep them
    # for the label-free signals; evaluation and judging read none, and skip the vocabulary-wide sums.
    token_stats: bool = False


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    token_logprobs: list[float]
    finish_reason: str  # stop | length
    seed: int | None = None  # the seed this completion was sampled with; None: not seeded
    # The same tokens' log-probs under the policy itself (temperature 1, no top-k/top-p), where the
    # engine has them for free; training uses them as the starting policy's reference log-probs.
    policy_logprobs: list[float] | None = None
    # Each step's next-token distribution under the policy (temperature 1, unfiltered), where the engine has the
    # logits at no extra cost: its entropy and its self-certainty (judging/intrinsic.py; None: not recorded).
    token_entropies: list[float] | None = None
    token_self_certainties: list[float] | None = None
    # With a FollowUp (generate_and_score): the next-token log-probs (temperature 1) at its candidates after the chat
    # and the follow-up's tokens for this completion.
    follow_logprobs: list[float] | None = None

    def __post_init__(self) -> None:
        # A model can emit NUL bytes; no text column (PostgreSQL's least of all) should store them.
        # The token ids keep the exact output.
        self.text = self.text.replace("\x00", "\ufffd")

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def sum_logprob(self) -> float:
        return float(sum(self.token_logprobs))

    @property
    def mean_logprob(self) -> float:
        return self.sum_logprob / max(1, len(self.token_logprobs))


@dataclass(frozen=True)
class FollowUp:
    """What to read after each completion (a judge's verdict): `tokens(completion)` are the token ids that stand
    after the chat in the completion's place (its justification, cut and tidied, then the verdict line's prefix), and
    the model's next-token log-probs there are read at `candidates` (one token per score value)."""

    tokens: Callable[[Completion], list[int]]
    candidates: tuple[int, ...]


@dataclass
class GenerationStats:
    """What the last generate call did, for progress and benchmarks."""

    sequences: int = 0
    tokens: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


ProgressFn = Callable[[int, int], None]  # (sequences finished, tokens generated) since the last call


class Engine(Protocol):
    name: str
    tokenizer: PreTrainedTokenizerBase

    def generate(
        self,
        chats: Sequence[Chat],
        sampling: Sampling,
        *,
        seeds: Sequence[Sequence[int]] | None = None,
        adapter: Adapter | None = None,
        progress: ProgressFn | None = None,
    ) -> list[list[Completion]]:
        """n completions per chat. seeds[i][j] seeds completion j of chat i where the engine can."""
        ...

    def generate_and_score(
        self,
        chats: Sequence[Chat],
        sampling: Sampling,
        follow: FollowUp,
        *,
        seeds: Sequence[Sequence[int]] | None = None,
        adapter: Adapter | None = None,
        progress: ProgressFn | None = None,
    ) -> list[list[Completion]]:
        """`generate`, and each completion's `follow_logprobs` under the same policy (what `next_token_logprobs` gives
        for the chat and `follow.tokens(completion)`; an engine may take them from the decoding's own KV cache)."""
        ...

    def score(
        self, chats: Sequence[Chat], completions: Sequence[Sequence[int]], *, adapter: Adapter | None = None
    ) -> list[list[float]]:
        """Per-token log-probabilities (temperature 1) of each completion's token ids after its chat."""
        ...

    def next_token_logprobs(
        self, chats: Sequence[Chat], prefixes: Sequence[Sequence[int]], candidates: Sequence[int], *,
        adapter: Adapter | None = None,
    ) -> list[list[float]]:
        """Log-probabilities (temperature 1) of each candidate token right after a chat and the start of
        the assistant's answer given as token ids (the judge's distribution over score values)."""
        ...

    def embed(self, chats: Sequence[Chat], *, adapter: Adapter | None = None) -> list[list[float]]:
        """The last layer's hidden state at the last token of each chat rendered for the assistant's turn (the
        curate phase's prompt embedding)."""
        ...

    def token_stats(
        self, chats: Sequence[Chat], completions: Sequence[Sequence[int]], *, adapter: Adapter | None = None
    ) -> list[tuple[list[float], list[float]]]:
        """Per completion token, the entropy and the self-certainty of the next-token distribution (temperature 1)
        after its chat, teacher-forced: the intrinsic signals of samples whose engine did not record them."""
        ...

    def sleep(self) -> None:
        """Free accelerator memory while another step (training) needs it."""
        ...

    def wake(self) -> None: ...

    def close(self) -> None: ...


def generate_then_score(engine: Engine, chats: Sequence[Chat], sampling: Sampling, follow: FollowUp, *,
                        seeds: Sequence[Sequence[int]] | None = None, adapter: Adapter | None = None,
                        progress: ProgressFn | None = None) -> list[list[Completion]]:
    """`Engine.generate_and_score` for an engine without a cache to continue from (a vLLM engine: its prefix cache
    finds the chats again): generate, then one `next_token_logprobs` call over every completion."""
    results = engine.generate(chats, sampling, seeds=seeds, adapter=adapter, progress=progress)
    flat = [(chat, c) for chat, row in zip(chats, results, strict=True) for c in row]
    if flat:
        read = engine.next_token_logprobs([chat for chat, _ in flat], [follow.tokens(c) for _, c in flat],
                                          follow.candidates, adapter=adapter)
        for (_, c), logprobs in zip(flat, read, strict=True):
            c.follow_logprobs = logprobs
    return results
