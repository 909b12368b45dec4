"""RSO options: the config section `train.rso`, apart from the training code so that loading a config needs no
torch, and its SPEC: what the rest of selfloop needs to know about the algorithm."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from selfloop.algorithms.spec import AlgorithmSpec


class RSOConfig(BaseModel):
    """RSO options (statistical rejection sampling of the judged samples, then a normalised hinge or sigmoid loss)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    num_accept: Annotated[int, Field(ge=2, le=1024)] = Field(
        8, description="M, samples accepted per prompt by rejection sampling (the paper: 8 of 64), paired in order.")
    beta: Annotated[float, Field(gt=0.0)] = Field(
        0.5, description="The rejection sampler's temperature, in judge-score points (the 5-point rubric's units): a "
        "sample r below the best remaining is accepted with probability exp((r - r_max) / beta), so at 0.5 a one-point "
        "gap is accepted e^-2 = 14% of the time.")
    gamma: Annotated[float, Field(gt=0.0)] = Field(
        0.05, description="The loss's scale on the policy-to-reference log-ratio gap (the paper: 0.05; TRL's beta).")
    loss: Literal["hinge", "sigmoid"] = Field(
        "hinge", description="hinge-norm max(0, 1 - gamma * D) (the paper's choice) or sigmoid-norm -log sigma(gamma * D).")


SPEC = AlgorithmSpec(
    name="rso",
    options=RSOConfig,
    trainer="selfloop.algorithms.rso",
    summary="RSO: the judged samples drawn by statistical rejection sampling, paired in order, trained with a "
    "normalised hinge (or sigmoid) loss against the starting policy",
    shape="pair",
    signal="llm_judge",
    needs_reference=True,
)
