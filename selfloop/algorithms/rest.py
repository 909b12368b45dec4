"""ReST-EM: expectation-maximisation with binary rewards (Singh et al. 2024)."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class RestConfig(BaseModel):
    """ReST-EM options (binary-rewarded samples, fresh adapter from the base each iteration)."""

    model_config = ConfigDict(extra="forbid")
    max_per_prompt: Annotated[int, Field(ge=1)] = Field(10, description="Rewarded samples kept per prompt (the paper's K).")
    reward: Literal["auto", "majority", "ground_truth"] = Field(
        "auto", description="Binary reward: agreement with the majority, with the known answer, or 'auto' (known answer where present)."
    )
