"""How samples are judged: the LLM judge, the vote, confidence, the label-free signals and the reward
training reads."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from selfloop.config.base import Section, upto


class LLMJudgeConfig(Section):
    """LLM-as-a-Judge with the additive 5-point rubric (Self-Rewarding LMs)."""

    k: Annotated[int, upto(32)] = Field(3, description="Judgments per sample; the valid scores are averaged.")
    temperature: Annotated[float, Field(ge=0.0, le=5.0)] = Field(0.7, description="Judge sampling temperature.")
    max_new_tokens: Annotated[int, upto(4096, 0)] = Field(
        192, description="Longest judge justification in tokens (0, with scoring 'distribution': no justification, the "
        "verdict's distribution right after the rubric prompt, one forward pass per judgment).")
    model: str | None = Field(
        None, description="A separate judge model (same forms as model.base); null: the policy judges itself."
    )
    template: str = Field("judge_additive.txt", description="Judge prompt template under prompts/ (or a path).")
    scoring: Literal["text", "distribution"] = Field(
        "text",
        description="'text': the score the judge writes on its 'Score:' line (unparsed text gives no score); "
        "'distribution': the judge writes its justification, then the score is the expectation of the points "
        "0-5 under its next-token probabilities after 'Score:' (G-Eval), so every judgment has one.",
    )

    @model_validator(mode="after")
    def _justification(self) -> LLMJudgeConfig:
        if self.max_new_tokens == 0 and self.scoring == "text":
            raise ValueError("max_new_tokens 0 leaves nothing to parse with scoring 'text' (use scoring 'distribution')")
        if self.max_new_tokens == 0 and self.k > 1:
            raise ValueError(f"k {self.k} with max_new_tokens 0: without a sampled justification every judgment is the same (use k 1)")
        return self


class VoteConfig(Section):
    """Majority vote over extracted answers (Self-Consistency, TTRL)."""

    voters: Annotated[int, upto(1024)] | None = Field(
        None, description="The first N samples of each prompt vote on its label (null: all samples); every sample's "
        "reward is its agreement with that label."
    )
    extractors: list[Literal["boxed", "answer_is", "hash", "last_number", "stated_number"]] = Field(
        ["boxed", "answer_is", "hash", "last_number"],
        description="The vote's answer extraction chain, tried in order; the first that finds an answer wins. "
        "'stated_number' in place of 'last_number' reads only a number stated as a result ('= 32', 'is 32', a bare "
        "'32'), so a number merely mentioned (an operand copied from the prompt) is no answer. It shapes the signal "
        "only: correctness (samples.correct, evaluations) is graded by each task family's own extractors.",
    )


class ConfidenceConfig(Section):
    """Sequence and token log-probabilities as confidence (RLSC)."""

    rescore: bool = Field(False, description="Also score every sample under the current policy (one forward pass).")


class SemanticEntropyConfig(Section):
    """EMPO's semantic entropy: a prompt is trained on only when its samples' answers are neither all alike nor too
    scattered."""

    band_low: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.0, description="Train on a prompt only when its semantic entropy is at least this share of log N (N samples; "
        "0: no lower end, as the official code).")
    band_high: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        1.0, description="... and below this share of log N (1: only prompts whose every answer differs are dropped, "
        "as the official code).")

    @model_validator(mode="after")
    def _a_band(self) -> SemanticEntropyConfig:
        if self.band_low >= self.band_high:
            raise ValueError(f"band_low ({self.band_low}) must be below band_high ({self.band_high})")
        return self


class CrossViewConfig(Section):
    """Co-rewarding's cross-view agreement: each prompt asked again in another training wording."""

    samples: Annotated[int, upto(64)] = Field(4, description="Samples drawn for each prompt's paraphrase (its majority is the label).")


class JudgeConfig(Section):
    """Self-judging: which signals are computed for every sample."""

    signals: list[Literal["llm_judge", "vote", "confidence", "self_certainty", "entropy", "semantic_entropy", "cross_view"]] = Field(
        ["llm_judge", "vote", "confidence"], description="Self-judging signals computed for every sample. The "
        "label-free signals of 2025 research (judging/intrinsic.py): 'self_certainty' (Intuitor: mean KL from uniform "
        "of the next-token distributions), 'entropy' (EM-RL: minus the mean token entropy), 'semantic_entropy' (EMPO: "
        "the probability of the sample's answer cluster), 'cross_view' (co-rewarding: agreement with the majority of "
        "a paraphrase's samples); judge.reward makes one of them the reward.")
    llm_judge: LLMJudgeConfig = Field(default_factory=LLMJudgeConfig)
    vote: VoteConfig = Field(default_factory=VoteConfig)
    confidence: ConfidenceConfig = Field(default_factory=ConfidenceConfig)
    semantic_entropy: SemanticEntropyConfig = Field(default_factory=lambda: SemanticEntropyConfig())
    cross_view: CrossViewConfig = Field(default_factory=lambda: CrossViewConfig())
    reward: Literal["judged", "verify", "shuffled", "function", "self_certainty", "entropy", "semantic_entropy",
                    "cross_view"] = Field(
        "judged", description="What the LLM-judge and vote scores that training reads are. 'judged': as judged; "
        "'verify' (the oracle ceiling): the task family's checker, 1 or 0 for a vote and 5 or 0 points for the judge, "
        "none where a prompt has no known answer; 'shuffled' (the spurious-reward control): the judged values "
        "permuted among the samples of each prompt, seeded (same statistics, no information); 'function': your own "
        "Python function (judge.reward_function) scores each sample from 0 to 1 (x1 for a vote, x5 points for the "
        "judge); a label-free signal's name (self_certainty, entropy, semantic_entropy, cross_view; it must be in "
        "judge.signals): its score, within each prompt put on 0 to 1 where it has no scale of its own. The judged "
        "value stays in the judgment's details; judge.* metrics describe the reward trained on.")
    reward_function: str | None = Field(
        None, description="With reward 'function': 'module:function', importable where the loop runs, called as "
        "TRL's reward functions are: function(prompts=[...], completions=[...], answers=[...]) -> a list of floats "
        "from 0 to 1, one per completion (answers: the known answers, None where a prompt has none).")

    @field_validator("reward_function")
    @classmethod
    def _a_function_path(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v):
            raise ValueError(f"{v!r} is not 'module:function' (e.g. 'my_rewards:exact_match')")
        return v

    @model_validator(mode="after")
    def _function_named(self) -> JudgeConfig:
        if self.reward in ("self_certainty", "entropy", "semantic_entropy", "cross_view") and self.reward not in self.signals:
            raise ValueError(f"reward {self.reward!r} is a signal's score: add {self.reward!r} to judge.signals")
        if self.reward == "function" and self.reward_function is None:
            raise ValueError("reward 'function' needs judge.reward_function: 'module:function'")
        if self.reward != "function" and self.reward_function is not None:
            raise ValueError("judge.reward_function is read only with judge.reward: function")
        return self

    @field_validator("signals")
    @classmethod
    def _some_signal(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("no signal given: name at least one of llm_judge, vote, confidence "
                             "(to judge nothing, remove 'judge' from loop.phases)")
        return v
