"""DPO on self-judged pairs (Self-Rewarding Language Models, Yuan et al. 2024)."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class DPOConfig(BaseModel):
    """DPO options (pairs: best vs worst mean judge score per prompt)."""

    model_config = ConfigDict(extra="forbid")
    beta: Annotated[float, Field(gt=0.0)] = Field(0.1, description="Strength of the implicit KL to the reference.")
    kind: Literal["sigmoid", "ipo", "hinge"] = Field("sigmoid", description="Loss form: sigmoid (DPO), ipo or hinge.")
    min_score_gap: Annotated[float, Field(ge=0.0)] = Field(
        0.0, description="Keep a pair only when best minus worst mean judge score exceeds this."
    )
