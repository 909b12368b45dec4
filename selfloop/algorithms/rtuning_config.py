"""R-Tuning options: the config section `train.rtuning`, apart from the training code so that loading a config needs
no torch, and its SPEC."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from selfloop.algorithms.spec import AlgorithmSpec

# R-Tuning's certainty question and its two answers (shizhediao/R-Tuning training/pararel/run_pararel.py).
QUESTION = "Are you sure you accurately answered the question based on your internal knowledge?"


class RTuningConfig(BaseModel):
    """R-Tuning options (teach the policy to say whether it is sure: the answer, then the certainty question and
    'I am sure.' or 'I am unsure.')."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    label: Literal["checked", "entropy"] = Field(
        "checked", description="How a prompt is labelled sure. 'checked': the policy's majority answer equals the "
        "prompt's known answer (prompts without one are skipped); 'entropy' (R-Tuning-U, no labels): the entropy of "
        "the samples' extracted answers is in the lower half of the iteration's prompts.")
    question: Annotated[str, Field(min_length=1, max_length=300)] = Field(
        QUESTION, description="The certainty question appended after the answer (the paper's).")
    sure: Annotated[str, Field(min_length=1, max_length=40)] = Field("sure", description="The word after 'I am' for a sure prompt.")
    unsure: Annotated[str, Field(min_length=1, max_length=40)] = Field("unsure", description="The word after 'I am' for an unsure prompt.")


SPEC = AlgorithmSpec(
    name="rtuning",
    options=RTuningConfig,
    trainer="selfloop.algorithms.rtuning",
    summary="R-Tuning: fine-tune on the answer (the known one, or the majority's without labels) followed by the "
    "certainty question and 'I am sure.' or 'I am unsure.'; held-out P(sure) scored by average precision",
    shape="rewarded",
    signal="vote",
    held_out=True,
)
