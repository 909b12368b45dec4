"""TTRL: test-time reinforcement learning with majority-vote rewards (Zuo et al. 2025)."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class TTRLConfig(BaseModel):
    """TTRL options (majority-vote rewards, clipped policy gradient)."""

    model_config = ConfigDict(extra="forbid")
    n_vote: Annotated[int, Field(ge=1)] = Field(64, description="Samples per prompt that vote on the label.")
    n_train: Annotated[int, Field(ge=1)] = Field(32, description="Samples per prompt trained on (the first n_train).")
    clip_eps: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(0.2, description="PPO clip range of the ratio.")
    kl_coef: Annotated[float, Field(ge=0.0)] = Field(0.0, description="Weight of the KL penalty to the reference.")
