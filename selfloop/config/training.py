"""How the policy trains: LoRA, judge fine-tuning, the algorithm and its options (one section per
registered algorithm), the curate filters (one section per registered filter)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, create_model, field_validator, model_validator

from selfloop.algorithms import DEFAULT as DEFAULT_ALGORITHM
from selfloop.config.base import ALGORITHMS, FILTERS, Algorithm, CurateFilter, Section, upto


class LoraConfig(Section):
    """The LoRA adapter trained each iteration."""

    rank: Annotated[int, upto(1024)] = Field(16, description="LoRA rank; higher: more capacity, more memory.")
    alpha: Annotated[float, Field(gt=0)] = Field(32.0, description="LoRA scaling numerator (scale = alpha / rank).")
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(0.0, description="Dropout on the LoRA input.")
    target_modules: Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(min_length=1, max_length=64)] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names that get adapters.",
    )


class EFTConfig(Section):
    """Evaluation fine-tuning (Self-Rewarding LMs): the judge skill trained beside the policy's own data."""

    enabled: bool = Field(
        False, description="Also train on the iteration's own judgments that agree with the checked truth (prompts "
        "with a known answer only): the rubric prompt as the prompt, the justification and its verdict as the target.",
    )
    max_examples: Annotated[int, upto(100_000)] = Field(16, description="Judge examples per iteration, half on correct samples and half "
                                        "on wrong ones where there are enough.")
    threshold: Annotated[float, Field(ge=0.0, le=5.0)] = Field(
        2.5, description="A verdict agrees with the truth when it is above this for a correct sample, at or below it for a wrong one.")
    weight: Annotated[float, Field(gt=0.0)] = Field(1.0, description="Weight of each judge example's loss (mean token "
                                                    "negative log-likelihood) beside the algorithm's per-example loss.")


class _TrainOptions(Section):
    """The training phase: algorithm, optimiser and per-algorithm options."""

    algorithm: Algorithm = Field(DEFAULT_ALGORITHM, description="Training algorithm: " + ", ".join(ALGORITHMS) + ".")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    eft: EFTConfig = Field(default_factory=EFTConfig)
    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] = Field(5e-5, description="Peak AdamW learning rate.")
    weight_decay: Annotated[float, Field(ge=0.0)] = Field(0.0, description="AdamW weight decay.")
    epochs: Annotated[int, upto(1000)] = Field(1, description="Passes over the iteration's examples.")
    max_steps: Annotated[int, upto(10_000_000)] | None = Field(
        None, description="Stop after this many optimizer steps (null: epochs decide).")
    batch_size: Annotated[int, upto(4096)] = Field(4, description="Examples per forward pass.")
    grad_accum: Annotated[int, upto(4096)] = Field(1, description="Forward passes per optimizer step.")
    max_length: Annotated[int, upto(1_048_576)] = Field(1024, description="Prompt + completion tokens; longer examples are truncated.")
    max_grad_norm: Annotated[float, Field(gt=0.0)] = Field(1.0, description="Gradient clipping norm.")
    scheduler: Literal["constant", "linear", "cosine"] = Field("cosine", description="Learning rate schedule.")
    warmup_ratio: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(0.0, description="Share of steps spent warming up.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    processes: Annotated[int, upto(1024)] = Field(
        1, description="Training processes: 1 trains in the loop's process; N > 1 launches N data-parallel processes "
        "(accelerate DDP; one per GPU, or CPU processes over gloo), each taking batch_size / N of every batch."
    )

    @model_validator(mode="after")
    def _batch_splits_over_processes(self) -> _TrainOptions:
        if self.batch_size % self.processes:
            raise ValueError(f"batch_size {self.batch_size} does not split evenly over {self.processes} processes")
        return self

    def options(self) -> BaseModel:
        """The chosen algorithm's options section (train.<algorithm>)."""
        return getattr(self, self.algorithm)


# One options section per registered algorithm, train.<name>, described by the algorithm's summary.
TrainConfig = create_model(  # type: ignore[call-overload]  # fields made from the registry when it is read
    "TrainConfig", __base__=_TrainOptions, __module__=__name__, __doc__=_TrainOptions.__doc__,
    **{name: (spec.options, Field(default_factory=spec.options, description=spec.summary)) for name, spec in ALGORITHMS.items()},
)


class _CurateOptions(Section):
    """Data selection (the curate phase): filters, in order, decide which of the iteration's prompts select may
    train on; every score and decision is a row of `curations`."""

    filters: list[CurateFilter] = Field(
        [], description="Filters in the order they run, each on the prompts the one before kept: "
        + ", ".join(FILTERS) + " (empty: no curation, every prompt may be trained on).")
    budget: Annotated[int, upto(1_000_000)] | None = Field(
        None, description="Keep at most this many prompts after the filters, in the last ranking filter's order "
        "(null: no cap).")
    same_steps: bool = Field(
        False, description="LIMA as a policy: train as many optimizer steps as the uncurated examples would have "
        "taken, repeating the kept ones for more epochs.")

    @field_validator("filters")
    @classmethod
    def _once_each(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a filter is listed twice")
        return v

    def options(self, name: str) -> BaseModel:
        """A filter's options section (curate.<name>)."""
        return getattr(self, name)


# One options section per registered filter, curate.<name>, described by the filter's summary.
CurateConfig = create_model(  # type: ignore[call-overload]  # fields made from the registry when it is read
    "CurateConfig", __base__=_CurateOptions, __module__=__name__, __doc__=_CurateOptions.__doc__,
    **{name: (spec.options, Field(default_factory=spec.options, description=spec.summary)) for name, spec in FILTERS.items()},
)
