"""Training items: examples turned into token ids, truncated, with their stored reference log-probs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch

T = TypeVar("T")


class LogpFn(Protocol):
    """The policy in training: policy(prompts, completions) -> per-token log-probs, one tensor per row (gradients
    flow); `with_hidden` also gives each row's last-token hidden state (an algorithm that contrasts representations:
    CoIN); `entropies` gives the next-token distribution's entropy at each completion position instead (EM-FT). A
    loss test may pass a plain function where its algorithm asks for neither."""

    def __call__(self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], /) -> list[torch.Tensor]: ...

    def with_hidden(self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], /
                    ) -> tuple[list[torch.Tensor], torch.Tensor]: ...

    def entropies(self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], /,
                  temperature: float = 1.0) -> list[torch.Tensor]: ...


def known(value: T | None, what: str) -> T:
    """A field of a training item that its algorithm's selection always sets (a reward, a weight, the rejected
    completion of a pair): a missing one is a broken example, said in one line."""
    if value is None:
        raise ValueError(f"a training item lacks its {what}")
    return value


@dataclass
class TrainItem:
    example_id: int
    prompt_id: int
    prompt: list[int]
    completion: list[int]  # the trained completion (a pair's chosen)
    rejected: list[int] | None = None
    reward: float | None = None
    weight: float | None = None  # advantage or loss weight
    ref_logp: float | None = None  # reference log-prob of the completion
    ref_rejected_logp: float | None = None
    ref_token_logps: list[float] | None = None
    sampling_logp: float | None = None  # the completion's log-prob as sampled (RLSC's p_old)
    candidates: list[list[int]] | None = None  # a ranked example's candidates, best first (the first is `completion`)
    candidate_scores: list[float | None] | None = None  # the scores they were ranked by
    judge: bool = False  # an EFT example: trained by its mean token NLL beside the algorithm's loss, no reference
    data: Any = None  # the algorithm's own data on the example (its spec's data model), validated
    # Second prompts for `completion`, by the data field that holds them (CUT: `context`, the prompt with the
    # judgment; CoIN: the paraphrase), tokenised as the prompt is
    prompts: dict[str, list[int]] = field(default_factory=dict)


REFERENCE = ("ref_logp", "ref_rejected_logp", "ref_token_logps")


def lacks_reference(item: TrainItem) -> bool:
    if item.judge:
        return False
    return item.ref_logp is None or item.ref_token_logps is None or (item.rejected is not None and item.ref_rejected_logp is None)


def reference_rows(items: Sequence[TrainItem]) -> list[dict[str, Any]]:
    """Items' reference log-probs as JSON-ready rows keyed by example id (what training processes exchange)."""
    return [{"example_id": it.example_id, **{k: getattr(it, k) for k in REFERENCE}} for it in items]


def set_reference(items: Sequence[TrainItem], rows: Sequence[dict[str, Any]]) -> None:
    by_id = {r["example_id"]: r for r in rows}
    for it in items:
        for k in REFERENCE:
            setattr(it, k, by_id[it.example_id][k])


def truncate(prompt: list[int], completions: list[list[int]], max_length: int) -> tuple[list[int], list[list[int]]]:
    """Fit the prompt and each completion in max_length: the shared prompt loses its oldest tokens
    first (enough for the longest completion), then completions lose their ends."""
    longest = max(len(c) for c in completions)
    if len(prompt) + longest > max_length:
        prompt = prompt[-max(1, max_length - longest):]
    return prompt, [c[: max_length - len(prompt)] for c in completions]


def fit(item: TrainItem, max_length: int) -> TrainItem:
    completions = [item.completion] + ([item.rejected] if item.rejected is not None else []) + (item.candidates or [])
    for name, other in item.prompts.items():  # the same completions follow every prompt: the longest decides what fits
        item.prompts[name], completions = truncate(other, completions, max_length)
    item.prompt, fitted = truncate(item.prompt, completions, max_length)
    item.completion = fitted[0]
    item.rejected = fitted[1] if item.rejected is not None else None
    if item.candidates is not None:
        item.candidates = fitted[len(fitted) - len(item.candidates):]
    return item


def stack(values: Sequence[float | None], device: torch.device) -> torch.Tensor:
    """Stored per-item figures (reference log-probs, rewards) as one tensor: each must be known by now."""
    if any(v is None for v in values):
        raise ValueError("a training item lacks a stored value (reference log-prob or reward)")
    return torch.tensor([float(v) for v in values if v is not None], dtype=torch.float32, device=device)


def sums(token_logps: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.sum() for t in token_logps])


def means(token_logps: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.sum() / max(1, t.numel()) for t in token_logps])
