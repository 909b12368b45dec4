"""A toy algorithm from outside selfloop with data of its own (tests/test_plugins.py installs it): each example keeps
a hint, a second prompt for the same completion, and a difficulty no other algorithm has, in examples.data, without a
migration or an edit to selfloop. Its spec names the data model; its entry point:

    [project.entry-points."selfloop.algorithms"]
    toy_hint = "toy_hint_config:SPEC"
"""

from pydantic import BaseModel, ConfigDict, Field

from selfloop.algorithms.spec import AlgorithmSpec


class ToyHintOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hint: str = Field("Think step by step.", description="Appended to the prompt in the hinted view.")


class HintData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hinted: str = Field(description="The prompt with the hint: a second prompt for the same completion.")
    difficulty: float = Field(ge=0.0, le=1.0, description="1 - the prompt's vote share: how far its samples disagree.")


SPEC = AlgorithmSpec(
    name="toy_hint",
    options=ToyHintOptions,
    trainer="toy_hint",
    summary="Toy: each prompt's majority-agreeing sample, trained after its prompt and after a hinted prompt, "
    "weighted by the prompt's difficulty",
    shape="rewarded",
    signal="vote",
    data=HintData,
    prompts=("hinted",),
)
