"""MoDS options: the config section `curate.mods`, apart from the filter's code so that loading a
config needs no torch, and its SPEC."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from selfloop.curation.spec import FilterSpec


class ModsOptions(BaseModel):
    """MoDS (Du et al. 2023): coverage by k-center greedy over the prompts' embeddings, plus necessity: the
    prompts whose own answers the LLM judge scored low."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    centers: Annotated[int, Field(ge=1, le=1_000_000)] = Field(8, description="Prompts kept for coverage (k of k-center greedy).")
    necessity_below: Annotated[float, Field(ge=0.0, le=5.0)] | None = Field(
        2.5, description="Also keep every prompt whose samples' mean LLM-judge score is below this (null: coverage "
        "only; needs 'llm_judge' in judge.signals).")


SPEC = FilterSpec(
    name="mods",
    options=ModsOptions,
    module="selfloop.curation.mods",
    summary="MoDS (Du et al. 2023): k-center coverage of the prompts' embeddings, plus the prompts the judge scored low",
    uses_policy=True,
    signal="llm_judge",
    signal_when="necessity_below",
)
