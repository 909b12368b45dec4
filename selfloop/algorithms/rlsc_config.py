"""RLSC options: the config section `train.rlsc`, apart from the training code so that
loading a config needs no torch (TRL keeps `dpo_config.py` beside `dpo_trainer.py` the same way),
and its SPEC: what the rest of selfloop needs to know about the algorithm."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from selfloop.algorithms.spec import AlgorithmSpec


class RLSCConfig(BaseModel):
    """RLSC options (confidence-weighted likelihood on the policy's own samples)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    alpha: Annotated[float, Field(ge=0.0)] = Field(0.1, description="Smoothing added to p_old(y|x).")
    steps: Annotated[int, Field(ge=1, le=1_000_000)] = Field(10, description="Optimizer steps per iteration (the paper: 10-20).")


SPEC = AlgorithmSpec(
    name="rlsc",
    options=RLSCConfig,
    trainer="selfloop.algorithms.rlsc",
    summary="RLSC: likelihood of every sample weighted by its sampling-time probability, a few steps",
    shape="rewarded",
    fixed_steps="steps",
)
