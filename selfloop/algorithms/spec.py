"""What an algorithm tells the rest of selfloop about itself, in one declaration beside its options.

`selfloop.config` derives the allowed `train.algorithm` names, the `train.<name>` option sections and the
cross-section checks from these; the train phase reads how to start and what to compute before the first step.
Torch-free: a config loads without importing any trainer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

Signal = Literal["llm_judge", "vote", "confidence"]
# The shape of one training example: a chosen and a rejected sample of a prompt, one rewarded (or weighted)
# sample, or K ranked candidates of a prompt (rows of `example_candidates`).
Shape = Literal["pair", "rewarded", "ranked"]
# The keys every algorithm's select() may return (the shared columns of `examples`, and a ranking's candidates);
# anything else is the algorithm's own data (AlgorithmSpec.data). Export's keys are kept free too.
SHARED = frozenset({"prompt_id", "sample_id", "text", "rejected_sample_id", "reward", "weight", "ref_logp",
                    "sampling_logp", "ref_rejected_logp", "ref_token_logps", "candidates", "algorithm", "prompt",
                    "completion", "chosen", "rejected", "iteration", "example_id", "data"})


Options = TypeVar("Options", bound=BaseModel)


def chosen_options(config: Any, kind: type[Options]) -> Options:
    """The config's `train.<algorithm>` section for the algorithm it chose, as that algorithm's options class: how a
    trainer reads its own options (the config names no algorithm's section)."""
    options = config.train.options()
    if not isinstance(options, kind):
        raise TypeError(f"train.algorithm {config.train.algorithm!r} has options {type(options).__name__}, "
                        f"not {kind.__name__}")
    return options


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
    # What its examples carry beyond the shared columns (SHARED): the keys its select() returns besides those, as a
    # pydantic model; stored as examples.data, validated when stored and when read, handed to its loss as
    # TrainItem.data. None: its select() returns shared keys only.
    data: type[BaseModel] | None = None
    # Fields of `data` that hold a second prompt for the same completion (a user turn): the train phase tokenises
    # each as the prompt is tokenised (TrainItem.prompts[field]) and export writes it as a chat.
    prompts: tuple[str, ...] = ()

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
        if self.data is not None and not (isinstance(self.data, type) and issubclass(self.data, BaseModel)):
            raise ValueError(f"algorithm {self.name!r}: data must be a pydantic model class")
        fields = set(self.data.model_fields) if self.data is not None else set()
        if fields & SHARED:
            raise ValueError(f"algorithm {self.name!r}: its data fields {sorted(fields & SHARED)} are shared columns of "
                             "every example; name them otherwise")
        if not set(self.prompts) <= fields:
            raise ValueError(f"algorithm {self.name!r}: prompts names {sorted(set(self.prompts) - fields)}, not fields of "
                             "its data")
        if self.signal not in (None, "llm_judge", "vote", "confidence"):
            raise ValueError(f"algorithm {self.name!r}: signal {self.signal!r} is not llm_judge, vote or confidence")
