"""RAFT options: the config section `train.raft`, apart from the training code so that loading a config needs no
torch, and its SPEC: what the rest of selfloop needs to know about the algorithm."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from selfloop.algorithms.spec import AlgorithmSpec


class RAFTConfig(BaseModel):
    """RAFT options (the best-rewarded samples, by the LLM judge, fine-tuned on; the policy keeps training)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    mode: Literal["local", "top"] = Field(
        "local", description="'local': each prompt's best-scored sample (LMFlow's default); 'top': the highest-scored "
        "top_fraction of all the iteration's samples.")
    top_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.2, description="mode 'top': the share of all the iteration's samples kept, best first (LMFlow's top_reward_percentage).")
    discard_patterns: Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(max_length=32)] = Field(
        [], description="Regular expressions: a sample whose text matches one gets reward minus infinity and is never "
        "kept (LMFlow's discard filter: reward hacking snowballed when a stray character the reward ignored spread).")
    discard_truncated: bool = Field(False, description="Never keep a sample cut off at generation.max_new_tokens.")

    @field_validator("discard_patterns")
    @classmethod
    def _patterns_compile(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return v


SPEC = AlgorithmSpec(
    name="raft",
    options=RAFTConfig,
    trainer="selfloop.algorithms.raft",
    summary="RAFT: the LLM judge's best sample of each prompt (or the top share of all), fine-tuned on; the policy "
    "keeps training (ReST-EM restarts from the base)",
    shape="rewarded",
    signal="llm_judge",
)
