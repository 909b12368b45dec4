"""RRHF options: the config section `train.rrhf`, apart from the training code so that loading a config needs no
torch, and its SPEC: what the rest of selfloop needs to know about the algorithm."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from selfloop.algorithms.spec import AlgorithmSpec


class RRHFConfig(BaseModel):
    """RRHF options (each prompt's samples ranked by their mean judge score; ranking hinge plus SFT on the best)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    weight: Annotated[float, Field(ge=0.0)] = Field(
        1.0, description="w, the ranking term's weight beside the best candidate's cross-entropy (the paper and its "
        "train.sh: 1; the official code's default: 100).")
    length_penalty: Annotated[float, Field(ge=0.0)] = Field(
        1.0, description="A candidate's score is its summed token log-prob over length**length_penalty (1: the mean).")
    min_score_gap: Annotated[float, Field(ge=0.0)] = Field(
        0.0, description="Keep a prompt only when its best and worst mean judge scores differ by more than this "
        "(0: a prompt whose candidates all tie has nothing to rank and is dropped).")


SPEC = AlgorithmSpec(
    name="rrhf",
    options=RRHFConfig,
    trainer="selfloop.algorithms.rrhf",
    summary="RRHF: each prompt's samples ranked by the LLM judge; ranking hinge on length-normalised log-probs plus "
    "cross-entropy on the best, no reference model",
    shape="ranked",
    signal="llm_judge",
)
