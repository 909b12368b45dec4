"""IFD options: the config section `curate.ifd`, apart from the filter's code so that loading a
config needs no torch, and its SPEC."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from selfloop.curation.spec import FilterSpec


class IFDOptions(BaseModel):
    """IFD (Cherry LLM, Li et al. 2024): the mean cross-entropy of an answer after its question divided by the mean
    cross-entropy of the same answer after an empty question, under the current policy; a prompt's IFD is the
    mean over its scored samples. High: the question matters to the answer."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    keep_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.5, description="Keep this top fraction of the prompts by IFD, among those at most 1 (Cherry's "
        "sample_rate; its 0.1 is for pools of 50k, a loop's iteration holds tens).")
    drop_above_one: bool = Field(True, description="Drop IFD > 1: the answer is likelier without the question.")
    samples: Annotated[int, Field(ge=1, le=64)] = Field(
        2, description="Samples of each prompt scored (the first ones in sample order). Each costs two forward "
        "passes: 4 made the TTRL demo's iteration 20-26 % slower on 2 CPU cores, 2 halves that.")


SPEC = FilterSpec(
    name="ifd",
    options=IFDOptions,
    module="selfloop.curation.ifd",
    summary="Cherry LLM's IFD (Li et al. 2024): keep the prompts whose answers depend most on the question",
    uses_policy=True,
)
