"""TTRL options: the config section `train.ttrl`, apart from the training code so that
loading a config needs no torch (TRL keeps `dpo_config.py` beside `dpo_trainer.py` the same way),
and its SPEC: what the rest of selfloop needs to know about the algorithm."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from selfloop.algorithms.spec import AlgorithmSpec


class TTRLConfig(BaseModel):
    """TTRL options (majority-vote rewards, clipped policy gradient)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    n_train: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        None, description="Samples per prompt trained on (the first n_train; null: all). The label is the judge "
        "phase's majority vote (judge.vote.voters), the same one its calibration measures.")
    clip_eps: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(0.2, description="PPO clip range of the ratio.")
    kl_coef: Annotated[float, Field(ge=0.0)] = Field(0.0, description="Weight of the KL penalty to the reference.")


def _check(config: Any) -> str | None:
    n_train, n = config.train.ttrl.n_train, config.generation.samples_per_prompt
    if n_train is not None and n_train > n:
        return f"train.ttrl.n_train ({n_train}) is above generation.samples_per_prompt ({n})"
    return None


def _moved(data: dict[str, Any]) -> dict[str, Any]:
    """train.ttrl.n_vote (before 2026-11-22) is judge.vote.voters now: the judge's vote is TTRL's label."""
    train = data.get("train")
    ttrl = train.get("ttrl") if isinstance(train, dict) else None  # on assignment, sections are models already
    if isinstance(ttrl, dict) and "n_vote" in ttrl:
        ttrl = dict(ttrl)
        voters = ttrl.pop("n_vote")
        judge = dict(data.get("judge") or {})
        judge["vote"] = {"voters": voters, **(judge.get("vote") or {})}
        data = {**data, "train": {**data["train"], "ttrl": ttrl}, "judge": judge}
    return data


SPEC = AlgorithmSpec(
    name="ttrl",
    options=TTRLConfig,
    trainer="selfloop.algorithms.ttrl",
    summary="TTRL: clipped policy gradient with majority-vote rewards and group advantages",
    shape="rewarded",
    signal="vote",
    needs_reference=True,
    check=_check,
    moved=_moved,
)
