"""CoIN options: the config section `train.coin`, apart from the training code so that loading a config needs no
torch, and its SPEC."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from selfloop.algorithms.spec import AlgorithmSpec


class CoINConfig(BaseModel):
    """CoIN options (ReST-EM's kept samples, each trained after its prompt and after a paraphrase of it, the two
    sequences' last-token states pulled together against the batch's others)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_per_prompt: Annotated[int, Field(ge=1, le=1024)] = Field(2, description="Rewarded samples kept per prompt.")
    reward: Literal["auto", "majority", "ground_truth"] = Field(
        "auto", description="Which samples are kept (reward 1), as ReST-EM: agreement with the majority, with the "
        "known answer, or 'auto' (the known answer where present).")
    temperature: Annotated[float, Field(gt=0.0, le=10.0)] = Field(
        0.05, description="InfoNCE temperature on cosine similarities (the paper's 0.05).")
    contrastive_weight: Annotated[float, Field(ge=0.0, le=1e6)] = Field(
        1000.0, description="λ, the contrastive term's weight before it is scaled down to at most the cross-entropy "
        "(the paper's 1000).")


class CoINData(BaseModel):
    """What a CoIN example keeps beyond the shared columns (examples.data)."""

    model_config = ConfigDict(extra="forbid")
    context: str | None = Field(None, description="The paraphrase: the same problem in another training wording, a "
                                "second prompt for the same completion.")


SPEC = AlgorithmSpec(
    name="coin",
    options=CoINConfig,
    trainer="selfloop.algorithms.coin",
    summary="CoIN: contrastive instruction tuning; ReST-EM's kept samples trained after their prompt and a paraphrase "
    "(another training wording of the same problem), plus a symmetric InfoNCE between the two sequences' states",
    shape="rewarded",
    signal="vote",
    data=CoINData,
    prompts=("context",),
)
