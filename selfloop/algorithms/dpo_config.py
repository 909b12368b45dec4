"""DPO options: the config section `train.dpo`, apart from the training code so that
loading a config needs no torch (TRL keeps `dpo_config.py` beside `dpo_trainer.py` the same way),
and its SPEC: what the rest of selfloop needs to know about the algorithm."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from selfloop.algorithms.spec import AlgorithmSpec


class DPOConfig(BaseModel):
    """DPO options (pairs: best vs worst mean judge score per prompt)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    beta: Annotated[float, Field(gt=0.0)] = Field(0.1, description="Strength of the implicit KL to the reference.")
    kind: Literal["sigmoid", "ipo", "hinge"] = Field("sigmoid", description="Loss form: sigmoid (DPO), ipo or hinge.")
    min_score_gap: Annotated[float, Field(ge=0.0)] = Field(
        0.0, description="Keep a pair only when best minus worst mean judge score exceeds this."
    )


SPEC = AlgorithmSpec(
    name="dpo",
    options=DPOConfig,
    trainer="selfloop.algorithms.dpo",
    summary="Self-Rewarding LMs: DPO on pairs of a prompt's best and worst self-judged samples",
    shape="pair",
    signal="llm_judge",
    needs_reference=True,
)
