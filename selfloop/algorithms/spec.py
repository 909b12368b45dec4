"""What an algorithm tells the rest of selfloop about itself, in one declaration beside its options.

`selfloop.config` derives the allowed `train.algorithm` names, the `train.<name>` option sections and the
cross-section checks from these; the train phase reads how to start and what to compute before the first step.
Torch-free: a config loads without importing any trainer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

Signal = Literal["llm_judge", "vote", "confidence"]
# The shape of one training example: a chosen and a rejected sample of a prompt, one rewarded (or weighted)
# sample, or K ranked candidates of a prompt (rows of `example_candidates`).
Shape = Literal["pair", "rewarded", "ranked"]


@dataclass(frozen=True)
class AlgorithmSpec:
    name: str  # `train.algorithm` and the options section `train.<name>`
    options: type[BaseModel]  # the section's pydantic model (extra="forbid")
    trainer: str  # dotted module with `select(session, iteration_id, config)` and `batch_loss(items, policy, options)`
    summary: str  # one line: the paper and what it trains on (the reference docs and `--help` show it)
    shape: Shape
    signal: Signal | None = None  # the self-judging signal its selection reads (None: the samples alone)
    needs_reference: bool = False  # reference log-probs of each completion before the first step
    restart_from_base: bool = False  # a fresh adapter from the base model each iteration (ReST-EM)
    fixed_steps: str | None = None  # an options field holding a fixed optimizer step count (RLSC's `steps`)
    # Its trainer module has `held_out_metrics(engine, chats, responses, correct, adapter, options) -> dict[str, float]`:
    # figures the evaluate phase adds for each suite and policy (R-Tuning's average precision of P(sure)).
    held_out: bool = False
    # A check of the whole validated config when this algorithm is chosen: a problem in one line, or None (TTRL:
    # n_train within samples_per_prompt).
    check: Callable[[Any], str | None] | None = None
    # Old keys of its section moved elsewhere: the raw config mapping in, the mapping with today's keys out.
    moved: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", self.name):
            raise ValueError(f"algorithm name {self.name!r}: 1-40 lower-case letters, digits or '_', starting with a letter")
        if not (isinstance(self.options, type) and issubclass(self.options, BaseModel)):
            raise ValueError(f"algorithm {self.name!r}: options must be a pydantic model class")
        if self.fixed_steps is not None and self.fixed_steps not in self.options.model_fields:
            raise ValueError(f"algorithm {self.name!r}: fixed_steps names {self.fixed_steps!r}, not a field of its options")
        if self.shape not in ("pair", "rewarded", "ranked"):
            raise ValueError(f"algorithm {self.name!r}: shape {self.shape!r} is not pair, rewarded or ranked")
        if self.shape == "ranked" and self.needs_reference:
            raise ValueError(f"algorithm {self.name!r}: ranked examples carry no reference log-probs yet "
                             "(needs_reference with shape 'ranked')")
        if self.signal not in (None, "llm_judge", "vote", "confidence"):
            raise ValueError(f"algorithm {self.name!r}: signal {self.signal!r} is not llm_judge, vote or confidence")
