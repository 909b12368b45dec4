"""How a candidate is measured and kept: held-out evaluation, drift monitors, the collapse guard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from selfloop.config.base import Probability, Section, upto
from selfloop.config.data import SuiteConfig


class DriftConfig(Section):
    """Warning thresholds of the drift monitors (stored as events)."""

    max_length_growth: Annotated[float, Field(gt=0.0)] = Field(
        1.5, description="Warn when mean response length exceeds this multiple of the first iteration's."
    )
    judge_inflation: Annotated[float, Field(gt=0.0)] = Field(
        0.5, description="Warn when the mean judge score rose this much since the first iteration while the main metric did not."
    )
    min_mean_logprob: float = Field(
        -0.02, description="Warn when the mean token log-prob rises above this (sharpening collapse, TTRL/RLSC)."
    )
    max_vote_share: Probability = Field(0.98, description="Warn when the mean vote share reaches this.")
    kl_samples: Annotated[int, upto(100_000, 0)] = Field(
        64, description="Rollouts scored under the loop's starting model each iteration to estimate "
        "drift.kl_from_start, KL(current policy || start) per token (0: not measured).")


class EvalConfig(Section):
    """Held-out evaluation and the promotion gate."""

    suites: list[SuiteConfig] = Field(
        default_factory=lambda: [
            SuiteConfig(name="arithmetic", kind="arithmetic"),
            SuiteConfig(name="units", kind="units", size=100),
        ],
        description="Held-out verifiable suites, never trained on.",
    )
    main_metric: str = Field("arithmetic/greedy_accuracy", description="'<suite>/<metric>' the promotion gate compares: "
                             "greedy_accuracy, majority_accuracy, or the label-free self_consistency (the share of "
                             "problems whose greedy answer agrees with the majority of k samples: a gate for users "
                             "without labels, on a suite with majority_k >= 2, labelled or not).")
    tolerance: Annotated[float, Field(ge=0.0)] = Field(
        0.02, description="Promote unless the candidate is worse than the current policy by more than this."
    )
    max_rejections: Annotated[int, upto(1_000_000)] = Field(3, description="Pause the loop after this many rejections in a row.")
    drift: DriftConfig = Field(default_factory=DriftConfig)
    reuse_from_store: bool = Field(
        False, description="Take a policy's greedy answers to a suite from any loop in the store that evaluated the "
        "same policy (checkpoint, or the same base model) on the same problems with the same settings (suite, system "
        "prompt, extractors, engine, dtype) instead of answering again: a lab's arms evaluate their common start once. "
        "Suites with majority_k > 0 (seeded sampling) are always answered again.")
    cache_dir: Path | None = Field(
        None, description="Keep each policy's greedy answers to a suite in this directory, keyed by their content (the "
        "weights' and adapter's sha256, the problems, system prompt, token budget, dtype and the torch, transformers "
        "and peft versions), and take them from there in any store on this machine instead of answering again: every "
        "lab store evaluates a common start once (`selfloop lab` sets <lab dir>/.lab/eval-cache). The hf engine and "
        "greedy suites (majority_k 0) only; null: off.")

    @model_validator(mode="after")
    def _main_metric_names_a_suite(self) -> EvalConfig:
        suite = self.main_metric.split("/", 1)[0]
        names = [s.name for s in self.suites]
        if len(set(names)) != len(names):
            raise ValueError("two suites share a name")
        if self.suites and suite not in names:
            raise ValueError(f"main_metric {self.main_metric!r} names no suite (suites: {', '.join(names)})")
        if any(s.name == suite and s.split == "test" for s in self.suites):
            raise ValueError(f"main_metric {self.main_metric!r}: suite {suite!r} is a test split, which no decision "
                             "may use; let the gate decide on a validation (or eval) suite")
        if any(s.name == suite and s.when == "ends" for s in self.suites):
            raise ValueError(f"main_metric {self.main_metric!r}: the gate decides every iteration, so suite {suite!r} "
                             "is answered every iteration (when: every)")
        metric = self.main_metric.partition("/")[2]
        if metric not in ("greedy_accuracy", "majority_accuracy", "self_consistency"):
            raise ValueError(f"main_metric {self.main_metric!r}: the metric must be greedy_accuracy, majority_accuracy or "
                             "the label-free self_consistency")
        chosen = next((s for s in self.suites if s.name == suite), None)
        if chosen is not None and metric in ("majority_accuracy", "self_consistency") and chosen.majority_k < 2:
            raise ValueError(f"main_metric {self.main_metric!r} needs majority_k >= 2 on suite {suite!r}")
        if chosen is not None and not chosen.labelled and metric != "self_consistency":
            raise ValueError(f"main_metric {self.main_metric!r}: suite {suite!r} has no labels; the gate can decide on "
                             "its self_consistency only")
        return self


class GuardConfig(Section):
    """A guard against the collapse of label-free training (selfloop/guard.py): after each iteration's evaluation it
    reads monitors that need no labels and, on the first rule that holds, rolls back, pauses or stops the loop."""

    enabled: bool = Field(False, description="Run the guard after every iteration's promotion decision.")
    action: Literal["rollback", "pause", "stop"] = Field(
        "rollback", description="'rollback': the loop's policy becomes the last good iteration's checkpoint and the loop "
        "pauses; 'pause': it pauses where it is; 'stop': it finishes.")
    monitor: Literal["drift.vote_share", "drift.self_certainty", "drift.judge_score"] = Field(
        "drift.vote_share", description="The label-free reward whose rise, then fall, the 'fall' rule watches (the vote's "
        "share for TTRL-like loops, self-certainty for Intuitor's).")
    fall: Annotated[float, Field(gt=0.0, le=10.0)] = Field(
        0.1, description="The 'fall' rule: the monitor more than this below its peak (after rising above its first "
        "iteration's value)...")
    patience: Annotated[int, upto(100)] = Field(1, description="... for this many iterations in a row.")
    entropy_floor: Annotated[float, Field(ge=0.0)] = Field(
        0.05, description="'collapse': the mean answer entropy (nats) at or below this.")
    duplicate_ceiling: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.9, description="'collapse': the share of samples repeating an earlier one of their prompt at or above this.")
    diversity_floor: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.5, description="'collapse': distinct-2 below this share of its first iteration's value.")
    max_kl: Annotated[float, Field(gt=0.0)] | None = Field(
        None, description="'drift': the KL from the starting model per token above this (null: off).")
