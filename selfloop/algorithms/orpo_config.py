"""ORPO options: the config section `train.orpo`, apart from the training code so that
loading a config needs no torch (TRL keeps `dpo_config.py` beside `dpo_trainer.py` the same way),
and its SPEC: what the rest of selfloop needs to know about the algorithm."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from selfloop.algorithms.spec import AlgorithmSpec


class ORPOConfig(BaseModel):
    """ORPO options (pairs as for DPO, no reference model)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    lam: Annotated[float, Field(gt=0.0)] = Field(0.1, description="Weight of the odds-ratio term (the paper's lambda).")
    min_score_gap: Annotated[float, Field(ge=0.0)] = Field(
        0.0, description="Keep a pair only when best minus worst mean judge score exceeds this."
    )


SPEC = AlgorithmSpec(
    name="orpo",
    options=ORPOConfig,
    trainer="selfloop.algorithms.orpo",
    summary="ORPO: odds-ratio preference on DPO's self-judged pairs, no reference model",
    shape="pair",
    signal="llm_judge",
)
