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

# The same algorithm under a name of the registry's greatest length (40 characters), which every column that
# stores an algorithm's name must hold (examples.algorithm held 20 and failed on PostgreSQL).
LONG_NAME = "toy_sft_with_a_name_of_forty_characters_"[:40]
LONG_SPEC = AlgorithmSpec(
    name=LONG_NAME,
    options=ToySFTOptions,
    trainer="toy_sft",
    summary="Toy: toy_sft under a 40-character name",
    shape="rewarded",
    signal="vote",
)
