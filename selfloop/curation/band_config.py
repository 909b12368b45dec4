"""The vote-share band's options: the config section `curate.band`, apart from the filter's code so that loading a
config needs no torch, and its SPEC."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from selfloop.curation.spec import FilterSpec


class BandOptions(BaseModel):
    """A difficulty band on the vote share (TTRL practice): drop prompts everyone agrees on (nothing to learn) and
    prompts without a majority (the label is noise)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    above: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.5, description="Keep a prompt whose majority answer's share of its samples is above this.")
    below: Annotated[float, Field(gt=0.0, le=1.0)] = Field(1.0, description="... and below this.")
    shift: Annotated[float, Field(ge=-1.0, le=1.0)] = Field(
        0.0, description="Move both bounds by this much each iteration after the first (a curriculum; negative: "
        "towards harder prompts), kept within 0..1.")

    @model_validator(mode="after")
    def _a_band(self) -> BandOptions:
        if self.above >= self.below:
            raise ValueError(f"above ({self.above}) must be below below ({self.below})")
        return self


SPEC = FilterSpec(
    name="band",
    options=BandOptions,
    module="selfloop.curation.band",
    summary="A band on the vote share (TTRL practice): prompts with a clear but not unanimous majority",
    signal="vote",
)
