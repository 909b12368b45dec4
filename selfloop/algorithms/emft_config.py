"""EM-FT options: the config section `train.emft`, apart from the training code so that loading a config needs no
torch, and its SPEC."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from selfloop.algorithms.spec import AlgorithmSpec


class EMFTConfig(BaseModel):
    """EM-FT options (the policy's own samples, trained to lower the entropy of its next-token distributions)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_per_prompt: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        None, description="Samples trained per prompt, the first in sample order (null: every sample).")
    temperature: Annotated[float, Field(gt=0.0, le=10.0)] = Field(
        1.0, description="Divides the logits before the entropy is taken (1: the policy's own distribution; "
        "one-shot EM, arXiv 2505.20282, uses 0.5).")


SPEC = AlgorithmSpec(
    name="emft",
    options=EMFTConfig,
    trainer="selfloop.algorithms.emft",
    summary="EM-FT: the mean next-token entropy of the policy's own samples as the loss, no reward and no label",
    shape="rewarded",
)
