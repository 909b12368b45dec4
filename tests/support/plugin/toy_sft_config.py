"""A toy algorithm from outside selfloop (tests/test_plugins.py installs it from a temporary directory):
its options and its spec. A user's package does the same and names SPEC in its entry points:

    [project.entry-points."selfloop.algorithms"]
    toy_sft = "toy_sft_config:SPEC"
"""

from pydantic import BaseModel, ConfigDict, Field

from selfloop.algorithms.spec import AlgorithmSpec


class ToySFTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    per_prompt: int = Field(1, ge=1, description="Samples kept per prompt: those agreeing with the majority first.")


SPEC = AlgorithmSpec(
    name="toy_sft",
    options=ToySFTOptions,
    trainer="toy_sft",
    summary="Toy: likelihood of each prompt's majority-agreeing samples",
    shape="rewarded",
    signal="vote",
)
