"""A toy list-wise algorithm from outside selfloop (tests/test_plugins.py): ranked examples end to end."""

from pydantic import BaseModel, ConfigDict, Field

from selfloop.algorithms.spec import AlgorithmSpec


class ToyRankOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    margin: float = Field(0.0, ge=0.0, description="Hinge margin between neighbouring ranks.")


SPEC = AlgorithmSpec(
    name="toy_rank",
    options=ToyRankOptions,
    trainer="toy_rank",
    summary="Toy: every prompt's samples ranked by their mean token log-prob, a hinge between neighbours",
    shape="ranked",
)
