"""RLSC: reinforcement learning via self-confidence (Li et al. 2025)."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class RLSCConfig(BaseModel):
    """RLSC options (confidence-weighted likelihood on the policy's own samples)."""

    model_config = ConfigDict(extra="forbid")
    alpha: Annotated[float, Field(ge=0.0)] = Field(0.1, description="Smoothing added to p_old(y|x).")
    steps: Annotated[int, Field(ge=1)] = Field(10, description="Optimizer steps per iteration (the paper: 10-20).")
