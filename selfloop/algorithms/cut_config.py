"""CUT (Reasons to Reject) options: the config section `train.cut`, apart from the training code so that loading a
config needs no torch, and its SPEC."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from selfloop.algorithms.spec import AlgorithmSpec

# CUT's judged prompt (wwxu21/CUT templates/alpaca.json, prompt_no_input_judge), as one user message.
TEMPLATE = ("Write a response to the instruction; the response should match the corresponding judgment.\n\n"
            "Instruction:\n{instruction}\n\nJudgment:\n{judgment}")


class CUTConfig(BaseModel):
    """CUT options (responses the self-judge scored low, trained with its judgment: the tokens the judgment makes
    likelier are trained away)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    positive_from: Annotated[float, Field(ge=0.0, le=5.0)] = Field(
        3.5, description="In judge points (0-5): a sample whose mean LLM-judge score is at least this is a positive "
        "(plain cross-entropy); below it, a negative trained with its judgment (the paper: 7 of 10).")
    threshold: Annotated[float, Field(gt=1.0, le=100.0)] = Field(
        1.1, description="A negative's token is trained away (unlikelihood) when p(token | prompt, judgment) / "
        "p(token | prompt) exceeds this (the paper: 1.1 online, 1.2 offline).")
    alpha: Annotated[float, Field(gt=0.0, le=100.0)] = Field(1.0, description="Weight of the unlikelihood term -log(1 - p).")
    positive_ratio: Annotated[float, Field(ge=0.0, le=100.0)] = Field(
        0.25, description="Positives kept per negative (a seeded draw when there are more; the paper's 0.25).")
    template: Annotated[str, Field(min_length=1, max_length=2000)] = Field(
        TEMPLATE, description="The judged prompt, a user message with {instruction} and {judgment}.")

    @field_validator("template")
    @classmethod
    def _both_fields(cls, v: str) -> str:
        missing = [f for f in ("{instruction}", "{judgment}") if f not in v]
        if missing:
            raise ValueError(f"the template needs {' and '.join(missing)}")
        return v


class CUTData(BaseModel):
    """What a CUT example keeps beyond the shared columns (examples.data)."""

    model_config = ConfigDict(extra="forbid")
    context: str | None = Field(None, description="A negative's judged prompt: the instruction with the self-judge's "
                                "justification of its low score, a second prompt for the same completion.")


SPEC = AlgorithmSpec(
    name="cut",
    options=CUTConfig,
    trainer="selfloop.algorithms.cut",
    summary="CUT (Reasons to Reject): low-scored samples trained with the self-judge's own justification in context; "
    "tokens the judgment makes likelier are trained away by unlikelihood, the rest and the positives by cross-entropy",
    shape="rewarded",
    signal="llm_judge",
    data=CUTData,
    prompts=("context",),
)
