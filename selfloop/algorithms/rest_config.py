"""ReST-EM options: the config section `train.rest`, apart from the training code so that
loading a config needs no torch (TRL keeps `dpo_config.py` beside `dpo_trainer.py` the same way),
and its SPEC: what the rest of selfloop needs to know about the algorithm."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from selfloop.algorithms.spec import AlgorithmSpec


class RestConfig(BaseModel):
    """ReST-EM options (binary-rewarded samples, fresh adapter from the base each iteration)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_per_prompt: Annotated[int, Field(ge=1, le=1024)] = Field(10, description="Rewarded samples kept per prompt (the paper's K).")
    reward: Literal["auto", "majority", "ground_truth"] = Field(
        "auto", description="Binary reward: agreement with the majority, with the known answer, or 'auto' (known answer where present)."
    )


SPEC = AlgorithmSpec(
    name="rest",
    options=RestConfig,
    trainer="selfloop.algorithms.rest",
    summary="ReST-EM: likelihood of the samples with reward 1, a fresh adapter from the base each iteration",
    shape="rewarded",
    signal="vote",
    restart_from_base=True,
)
