"""A toy curate filter from outside selfloop (tests/test_plugins.py installs it from a temporary directory): its
options and its spec. A user's package names SPEC in its entry points:

    [project.entry-points."selfloop.filters"]
    toy_shortest = "toy_filter_config:SPEC"
"""

from pydantic import BaseModel, ConfigDict, Field

from selfloop.curation.spec import FilterSpec


class ShortestOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keep: int = Field(2, ge=1, description="Prompts kept: those with the shortest samples on average.")


SPEC = FilterSpec(
    name="toy_shortest",
    options=ShortestOptions,
    module="toy_filter",
    summary="Toy: the prompts whose samples are shortest",
    signal="vote",  # it reads nothing of the vote; declared so the config's check can be seen to run
)
