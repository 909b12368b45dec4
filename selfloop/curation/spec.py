"""What a curate filter tells the rest of selfloop about itself, in one declaration beside its options (as an
algorithm's AlgorithmSpec does).

`selfloop.config` derives the allowed `curate.filters` names, the `curate.<name>` option sections and the check that
the judgments a filter reads are produced from these; the curate phase reads whether to start the policy's engine.
Torch-free: a config loads without importing any filter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel


@dataclass(frozen=True)
class FilterSpec:
    name: str  # the name `curate.filters` lists and the options section `curate.<name>`
    options: type[BaseModel]  # the section's pydantic model (extra="forbid")
    module: str  # dotted module with `curate(pool, options, ctx) -> Verdicts`
    summary: str  # one line: the paper and what it keeps (the reference docs show it)
    uses_policy: bool = False  # it scores with the policy (the phase starts its engine: FilterContext.engine)
    signal: str | None = None  # the self-judging signal whose judgments it reads (judge.signals must hold it)
    # An options field that switches the signal on: the signal is read only while that field is not None
    # (MoDS reads LLM-judge scores only for its necessity part).
    signal_when: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", self.name):
            raise ValueError(f"filter name {self.name!r}: 1-40 lower-case letters, digits or '_', starting with a letter")
        if self.name == "budget":
            raise ValueError("filter name 'budget' is curate.budget's own")
        if not (isinstance(self.options, type) and issubclass(self.options, BaseModel)):
            raise ValueError(f"filter {self.name!r}: options must be a pydantic model class")
        if self.signal_when is not None and self.signal_when not in self.options.model_fields:
            raise ValueError(f"filter {self.name!r}: signal_when names {self.signal_when!r}, not a field of its options")

    def reads(self, options: BaseModel) -> str | None:
        """The signal whose judgments the filter reads under these options (None: none)."""
        if self.signal_when is not None and getattr(options, self.signal_when) is None:
            return None
        return self.signal
