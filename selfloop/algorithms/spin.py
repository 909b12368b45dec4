"""SPIN: self-play fine-tuning (Chen et al. 2024)."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class SPINConfig(BaseModel):
    """SPIN options (pairs: ground-truth response vs the policy's sample)."""

    model_config = ConfigDict(extra="forbid")
    beta: Annotated[float, Field(gt=0.0)] = Field(0.1, description="Regularisation strength (the paper's lambda).")
    kind: Literal["sigmoid", "ipo", "hinge"] = Field("sigmoid", description="Loss form: sigmoid (logistic), ipo or hinge.")
    mix_previous: bool = Field(False, description="Also train on the previous iteration's pairs.")
