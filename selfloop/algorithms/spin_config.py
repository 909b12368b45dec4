"""SPIN options: the config section `train.spin`, apart from the training code so that
loading a config needs no torch (TRL keeps `dpo_config.py` beside `dpo_trainer.py` the same way),
and its SPEC: what the rest of selfloop needs to know about the algorithm."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from selfloop.algorithms.spec import AlgorithmSpec


class SPINConfig(BaseModel):
    """SPIN options (pairs: ground-truth response vs the policy's sample)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    beta: Annotated[float, Field(gt=0.0)] = Field(0.1, description="Regularisation strength (the paper's lambda).")
    kind: Literal["sigmoid", "ipo", "hinge"] = Field("sigmoid", description="Loss form: sigmoid (logistic), ipo or hinge.")
    mix_previous: bool = Field(False, description="Also train on the previous iteration's pairs.")


SPEC = AlgorithmSpec(
    name="spin",
    options=SPINConfig,
    trainer="selfloop.algorithms.spin",
    summary="SPIN: DPO-form loss, a prompt's ground-truth response chosen over the policy's own sample",
    shape="pair",
    needs_reference=True,
)
