"""TTRL options: the config section `train.ttrl`, apart from the training code so that
loading a config needs no torch (TRL keeps `dpo_config.py` beside `dpo_trainer.py` the same way),
and its SPEC: what the rest of selfloop needs to know about the algorithm."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from selfloop.algorithms.spec import AlgorithmSpec


class TTRLConfig(BaseModel):
    """TTRL options (majority-vote rewards, clipped policy gradient)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    n_train: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        None, description="Samples per prompt trained on (the first n_train; null: all). The label is the judge "
        "phase's majority vote (judge.vote.voters), the same one its calibration measures.")
    clip_eps: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(0.2, description="PPO clip range of the ratio.")
    kl_coef: Annotated[float, Field(ge=0.0)] = Field(0.0, description="Weight of the KL penalty to the reference.")


SPEC = AlgorithmSpec(
    name="ttrl",
    options=TTRLConfig,
    trainer="selfloop.algorithms.ttrl",
    summary="TTRL: clipped policy gradient with majority-vote rewards and group advantages",
    shape="rewarded",
    signal="vote",
    needs_reference=True,
)
