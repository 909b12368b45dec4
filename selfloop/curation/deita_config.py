"""DEITA options: the config section `curate.deita`, apart from the filter's code so that loading a
config needs no torch, and its SPEC."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from selfloop.curation.spec import FilterSpec


class DeitaOptions(BaseModel):
    """DEITA (Liu et al. 2024): complexity x quality, each the expected score over 1..6 under the policy's own
    next-token distribution, then a greedy pass in that order that keeps a prompt only if its embedding's cosine
    similarity to every prompt kept so far is at most `threshold`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    threshold: Annotated[float, Field(ge=-1.0, le=1.0)] = Field(
        0.9, description="Largest cosine similarity to an already kept prompt (DEITA's tau).")
    keep: Annotated[int, Field(ge=1, le=1_000_000)] | None = Field(None, description="Stop after this many kept prompts (DEITA's data "
                                         "size; null: every prompt that passes the similarity cut).")
    samples: Annotated[int, Field(ge=1, le=64)] = Field(
        2, description="Samples of each prompt whose quality is scored (the mean is taken).")


SPEC = FilterSpec(
    name="deita",
    options=DeitaOptions,
    module="selfloop.curation.deita",
    summary="DEITA (Liu et al. 2024): complexity x quality under the policy, then a diversity cut on embeddings",
    uses_policy=True,
)
