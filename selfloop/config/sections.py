"""The whole configuration as one tree of pydantic models, one class per YAML section.

Every field has a default where one makes sense, so a minimal YAML names only the loop. Unknown keys are errors.
The algorithm, task-family and filter registries decide the names `train.algorithm`, `generation.tasks.kind`,
`eval.suites[].kind` and `curate.filters` accept and the `train.<algorithm>` and `curate.<filter>` option sections.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from annotated_types import Interval
from pydantic import BaseModel, ConfigDict, Field, create_model, field_serializer, field_validator, model_validator

from selfloop.algorithms import DEFAULT as DEFAULT_ALGORITHM
from selfloop.algorithms import specs as algorithm_specs
from selfloop.curation import specs as filter_specs
from selfloop.families import specs as family_specs

Phase = Literal["synthesize", "rollout", "judge", "curate", "select", "train", "evaluate", "promote"]
PHASES: tuple[Phase, ...] = ("synthesize", "rollout", "judge", "curate", "select", "train", "evaluate", "promote")
# The phases a loop runs when loop.phases is not given: curate joins them when curate.filters names a filter.
DEFAULT_PHASES = tuple(p for p in PHASES if p != "curate")
# The registered algorithms (built-in and from installed plug-ins) decide the names and option sections.
ALGORITHMS = algorithm_specs()
# Registered task families (built-in and from plug-ins): those with a generator are kinds of task pools (with a
# training split) and of held-out suites (with an eval split); any family may grade a user file's answers.
FAMILIES = family_specs()
# Registered curate filters (built-in and from plug-ins): the names curate.filters accepts and their sections.
FILTERS = filter_specs()
# The names the registries hold, as Literal types pydantic checks; a type checker, which cannot know what is
# installed, reads them as str.
if TYPE_CHECKING:
    PoolKind: TypeAlias = str
    SuiteKind: TypeAlias = str
    FamilyName: TypeAlias = str
    Algorithm: TypeAlias = str
    CurateFilter: TypeAlias = str
else:
    PoolKind = Literal[("seed", "jsonl", *(n for n, f in FAMILIES.items() if f.problems and "train" in f.splits))]
    SuiteKind = Literal[(*(n for n, f in FAMILIES.items() if f.problems and "eval" in f.splits), "jsonl")]
    FamilyName = Literal[tuple(FAMILIES)]
    Algorithm = Literal[tuple(ALGORITHMS)]
    CurateFilter = Literal[tuple(FILTERS)]

PositiveInt = Annotated[int, Field(ge=1)]


def upto(limit: int, low: int = 1) -> Interval:
    """The bounds of an int from `low` to `limit` (`Annotated[int, Annotated[int, upto(N)]]`): every size in the config is bounded,
    so a typo such as 10**9 samples is refused at validation instead of running until killed or failing on a huge
    allocation."""
    return Interval(ge=low, le=limit)


Probability = Annotated[float, Field(gt=0.0, le=1.0)]


class Section(BaseModel):
    """Base of every section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class LoopConfig(Section):
    """The loop: name, seed, length, which phases run, where its state lives."""

    name: str = Field(description="Loop name, unique in the database; `selfloop run` creates or continues it.")
    seed: Annotated[int, upto(2**63 - 1, 0)] = Field(
        0, description="Loop seed (0 to 2^63-1); every sample, draw and training seed derives from it.")
    max_iterations: Annotated[int, upto(1_000_000)] | None = Field(
        None, description="Stop the loop after this many iterations in total (null: run forever)."
    )
    phases: list[Phase] = Field(
        list(DEFAULT_PHASES),
        description="Phases of an iteration, in this order; omit one to switch it off (e.g. synthesize). 'curate' "
        "runs between judge and select when curate.filters names a filter (it is added here if left out). "
        "[evaluate, promote]: a loop that only measures its policy (a lab's control, training off).",
    )
    state_dir: Path | None = Field(
        None,
        description="Database, checkpoints, backups and lock live here. Default: $SELFLOOP_STATE_DIR, "
        "systemd's $STATE_DIRECTORY, or ~/.local/share/selfloop.",
    )
    stall_timeout_s: Annotated[int, upto(7 * 24 * 3600)] = Field(
        900, description="The systemd watchdog stops being fed when no progress is made for this long."
    )

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", v):
            raise ValueError("must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return v

    @field_validator("phases")
    @classmethod
    def _phases_in_order(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a phase is listed twice")
        if [p for p in PHASES if p in v] != v:
            raise ValueError(f"phases must keep the order {', '.join(PHASES)}")
        readers = [p for p in ("judge", "curate", "select", "train") if p in v]
        if "rollout" not in v and readers:
            raise ValueError(f"rollout cannot be switched off while {', '.join(readers)} run(s): they read its samples "
                             "(a loop that only measures a policy lists [evaluate, promote])")
        if "train" in v and "select" not in v:
            raise ValueError("train needs select (it trains on the selected examples)")
        if "curate" in v and "select" not in v:
            raise ValueError("curate needs select (it decides which prompts select may train on)")
        return v


class ModelConfig(Section):
    """The base model the loop improves (LoRA adapters are trained on top of it)."""

    base: str = Field(
        "smollm2-135m-instruct",
        description="Base model: 'smollm2-135m-instruct' (packaged, CPU-friendly), 'tiny' (random, for tests), "
        "a local directory with safetensors weights, or a hub id.",
    )

    @field_validator("base")
    @classmethod
    def _not_a_url(cls, v: str) -> str:
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", v):
            raise ValueError("a URL is not a model: give a packaged name, a local directory or a hub id (org/name)")
        if not v.strip():
            raise ValueError("empty")
        return v
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for a hub id.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="'auto': float32 on CPU, bfloat16 on GPUs that support it."
    )
    cache_dir: Path | None = Field(
        None,
        description="Converted models (safetensors) are cached here. Default: $SELFLOOP_CACHE_DIR, "
        "systemd's $CACHE_DIRECTORY, or ~/.cache/selfloop.",
    )


class EngineConfig(Section):
    """The generation back end used for synthesis, rollouts, judging and evaluation."""

    kind: Literal["hf", "vllm", "vllm-server"] = Field(
        "hf", description="Generation back end: 'hf' (transformers, any device), 'vllm' (in-process) or 'vllm-server' "
        "(running `vllm serve` servers, listed in `servers`)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Device of the hf engine and of training.")
    batch_size: Annotated[int, upto(4096)] = Field(16, description="hf engine: sequences decoded together (n samples count each).")
    gpu_memory_utilization: Probability = Field(0.85, description="vllm: share of GPU memory vLLM may take.")
    tensor_parallel_size: Annotated[int, upto(64)] = Field(1, description="vllm: GPUs one model is split over.")
    enable_sleep_mode: bool = Field(
        False, description="vllm: free GPU memory while training on the same GPU (vLLM sleep mode)."
    )
    max_model_len: Annotated[int, upto(1_048_576)] = Field(2048, description="vllm: longest prompt + completion in tokens.")
    max_lora_rank: Annotated[int, upto(1024)] = Field(64, description="vllm: the largest LoRA rank it must serve.")
    enforce_eager: bool = Field(False, description="vllm: skip CUDA graph capture (slower, starts faster).")
    servers: list[str] = Field(
        [], description="vllm-server: base URLs of `vllm serve` servers of the same base model (http://host:port); "
        "requests are spread over them."
    )
    served_model: str | None = Field(None, description="vllm-server: the base model's name on the servers (default: the one they list).")
    api_key_env: str | None = Field(
        None, description="vllm-server: environment variable holding the servers' API key (`vllm serve --api-key`)."
    )
    max_in_flight: Annotated[int, upto(4096)] = Field(32, description="vllm-server: requests outstanding per server at a time.")
    request_timeout_s: Annotated[int, upto(86_400)] = Field(600, description="vllm-server: seconds one request may take.")
    retries: Annotated[int, upto(20, 0)] = Field(
        2, description="vllm-server: tries a failed request gets on other servers before the call fails.")
    max_adapters_loaded: Annotated[int, upto(64)] = Field(
        2, description="vllm-server: LoRA adapters kept loaded per server; older ones are unloaded."
    )

    @field_validator("servers")
    @classmethod
    def _server_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not re.fullmatch(r"https?://[^\s/]+(/v1)?/?", url.strip()):
                raise ValueError(f"{url!r} is not a server base URL such as http://10.0.0.5:8000")
        if len(v) > 256:
            raise ValueError("at most 256 servers")
        return v

    @model_validator(mode="after")
    def _servers_for_server_kind(self) -> EngineConfig:
        if self.kind == "vllm-server" and not self.servers:
            raise ValueError("kind 'vllm-server' needs servers: the base URLs of running `vllm serve` servers")
        return self


class FieldMap(Section):
    """Which keys of a user's rows hold the prompt, the answer and the reference response."""

    prompt: str = Field("prompt", description="The key of the prompt ('question', 'problem', ...), as text or as a "
                        "list of turns (TRL's conversational prompt). A row with a 'messages' list (role/content) and no "
                        "such key is that conversation: its turns up to the last user turn are what the policy is asked.")
    answer: str = Field("answer", description="The key of the checkable answer (optional in a task pool).")
    response: str = Field("response", description="The key of a reference response (SPIN's ground truth).")


def check_family(kind: str, levels: list[int], phrasing: str) -> None:
    """A generator family has the levels and the wording asked of it."""
    spec = FAMILIES.get(kind)
    if spec is None:  # seed or jsonl
        if phrasing != "seen":
            raise ValueError(f"phrasing {phrasing!r} applies to a task family's generator, not to kind {kind!r}")
        return
    missing = sorted(set(levels) - set(spec.levels))
    if missing:
        raise ValueError(f"levels: the {kind} family has levels {', '.join(map(str, spec.levels))}, not "
                         f"{', '.join(map(str, missing))}")
    if phrasing not in spec.phrasings:
        raise ValueError(f"phrasing {phrasing!r}: the {kind} family has {', '.join(spec.phrasings)}")


class _FileBacked(Section):
    """A section whose kind 'jsonl' reads a user file named by its `path` field: JSON Lines, a Parquet file
    (.parquet) or a local `datasets` directory (saved by `save_to_disk`)."""

    fields: FieldMap = Field(default_factory=FieldMap, description="The keys of a user file's rows; with keys other "
                             "than the defaults, the rows' other keys are ignored (with the defaults, they are errors).")
    answer_after: str | None = Field(
        None, description="Take the answer as the text after the last occurrence of this marker ('####' for "
        "GSM8K-style answers that end in '#### 42').")
    family: FamilyName = Field(
        "value", description="kind 'jsonl': the task family whose grader checks the file's answers ('value': the "
        "answer read from a response by the family's extractors (boxed, answer_is, hash, last_number) equals it; "
        "'instructions': a constraint list; or a plug-in's family).")

    def graded_by(self) -> str:
        """The family whose grader checks this source's answers: a generator's own, else `family`."""
        return self.kind if self.kind in FAMILIES else self.family  # type: ignore[attr-defined]  # the subclasses' fields

    @model_validator(mode="after")
    def _path_for_jsonl(self) -> _FileBacked:
        if self.kind == "jsonl" and self.path is None:  # type: ignore[attr-defined]  # the subclasses' fields
            raise ValueError("kind 'jsonl' needs a path")
        return self


class TaskSource(_FileBacked):
    """The task pool rollout prompts are drawn from."""

    kind: PoolKind = Field(
        "seed",
        description="Where rollout prompts come from: 'seed' (prompts/seed_tasks.jsonl), 'jsonl' (a user file: JSON "
        "Lines, Parquet or a `datasets` directory, with a prompt and optional answer/response per row, see `fields`), "
        "or a task family's training split: " + "; ".join(f"'{n}' ({f.summary})" for n, f in FAMILIES.items()
                                                           if f.problems and "train" in f.splits) + ".",
    )
    path: Path | None = Field(None, description="The user file, for kind 'jsonl' (.jsonl, .parquet, or a directory).")
    levels: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        [1], description="A family's difficulty levels. arithmetic: 1: a+b with a, b in 1..30; 2: a+b or a-b, two "
        "digits; 3: a*b up to 12x12 and word problems. instructions: 1: one constraint, 2: two."
    )
    phrasing: Literal["seen", "varied"] = Field(
        "seen", description="'seen' asks every training prompt in its family's training wording; 'varied' (families "
        "that have it, e.g. arithmetic) also uses a few training-only variants ('Compute a + b.', 'a + b = ?'), never "
        "a held-out wording.",
    )

    @model_validator(mode="after")
    def _fits_family(self) -> TaskSource:
        check_family(self.kind, self.levels, self.phrasing)
        return self


class GenerationConfig(Section):
    """Rollouts: prompts per iteration and N samples per prompt."""

    tasks: TaskSource = Field(default_factory=TaskSource, description="Pool the iteration's task prompts are drawn from.")
    prompts_per_iteration: Annotated[int, upto(100_000)] = Field(32, description="Task prompts drawn from the pool each iteration.")
    samples_per_prompt: Annotated[int, upto(1024)] = Field(4, description="N completions per prompt (N-sample rollouts).")
    temperature: Annotated[float, Field(ge=0.0, le=5.0)] = Field(0.8, description="Sampling temperature (0: greedy).")
    top_p: Probability = Field(1.0, description="Nucleus sampling mass (1: off).")
    top_k: Annotated[int, upto(1_000_000, 0)] = Field(0, description="Top-k sampling (0: off).")
    max_new_tokens: Annotated[int, upto(32_768)] = Field(256, description="Longest completion in tokens.")
    stop: Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(max_length=32)] = Field(
        [], description="Strings that end a completion (besides the end-of-turn token).")
    system_prompt: Annotated[str, Field(max_length=32_768)] | None = Field(
        None, description="System message put before every prompt (null: none).")


class MineHardConfig(Section):
    """Hard-prompt mining (Lion's discrimination step, without a teacher): self-instruct's few-shot seeds are the
    prompts the policy failed or disagreed on in the previous iteration."""

    enabled: bool = Field(False, description="Seed self-instruct with the previous iteration's hard prompts (the "
                          "seed tasks fill in while there are too few).")
    max_vote_share: Probability = Field(
        0.5, description="Hard: the majority answer of the prompt's samples has at most this share (disagreement).")
    max_judge_score: Annotated[float, Field(ge=0.0, le=5.0)] = Field(
        2.5, description="Hard: the mean LLM-judge score of the prompt's samples is at most this.")
    max_correct_share: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.5, description="Hard: at most this share of the prompt's checked samples is right (prompts with a known answer).")


class SelfInstructConfig(Section):
    """Self-instruct synthesis of new prompts (the synthesize phase)."""

    num_prompts: Annotated[int, upto(10_000, 0)] = Field(
        16, description="New prompts to accept per iteration (0: the synthesize phase adds nothing)."
    )
    seed_examples: Annotated[int, upto(64, 0)] = Field(6, description="Seed tasks shown in each few-shot prompt.")
    generated_examples: Annotated[int, upto(64, 0)] = Field(
        2, description="Earlier accepted generated prompts shown in each few-shot prompt."
    )
    rouge_threshold: Probability = Field(0.7, description="Reject a prompt whose ROUGE-L against the pool reaches this.")
    min_words: Annotated[int, upto(10_000)] = Field(3, description="Reject shorter instructions.")
    max_words: Annotated[int, upto(10_000)] = Field(150, description="Reject longer instructions.")
    temperature: Annotated[float, Field(gt=0.0, le=5.0)] = Field(1.0, description="Sampling temperature of synthesis.")
    top_p: Probability = Field(0.95, description="Nucleus mass of synthesis.")
    max_new_tokens: Annotated[int, upto(4096)] = Field(96, description="Longest generated instruction in tokens.")
    max_rounds: Annotated[int, upto(1000)] = Field(8, description="Give up after this many generate calls without enough prompts.")
    constraints: Annotated[int, upto(2, 0)] = Field(
        0, description="Checkable constraints from the instruction-following family appended to each accepted "
        "prompt (training wordings only), stored as its answer so its samples can be verified (0: none).",
    )
    mine_hard: MineHardConfig = Field(default_factory=MineHardConfig)

    @model_validator(mode="after")
    def _some_examples(self) -> SelfInstructConfig:
        if self.num_prompts and self.seed_examples + self.generated_examples == 0:
            raise ValueError("few-shot synthesis needs seed_examples + generated_examples >= 1")
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) is above max_words ({self.max_words})")
        return self


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


class SuiteConfig(_FileBacked):
    """A held-out verifiable suite."""

    name: str = Field(description="Suite name, used in metric names ('<name>/greedy_accuracy').")
    kind: SuiteKind = Field(
        description="A task family's held-out split (" + "; ".join(f"'{n}': {f.summary}" for n, f in FAMILIES.items()
                                                                if f.problems and "eval" in f.splits)
        + ") or 'jsonl', a user file graded by its `family`.")
    size: Annotated[int, upto(100_000)] = Field(200, description="Problems in the suite (generators); a JSONL file is used whole.")
    levels: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        [1], description="The family's difficulty levels (arithmetic: 1-3; instructions: 1 or 2 constraints).")
    phrasing: Literal["seen", "unseen", "transfer", "novel"] = Field(
        "seen", description="Generators: 'seen' words problems as training prompts are worded; 'unseen' uses wordings "
        "held out from every training prompt (a format learned is not a skill learned); 'transfer' (arithmetic) asks "
        "held-out problems in forms no training prompt has (word problems, other notations, subtraction); 'novel' "
        "(instruction following) new tasks and topics with constraint kinds never trained.")
    split: Literal["eval", "validation", "test"] = Field(
        "eval", description="Generators: the family's whole held-out split ('eval'), or one of its two fixed halves, "
        "by a hash of each problem's key: 'validation' (what the gate may decide on) or 'test' (reported, never "
        "used by a decision: it cannot be eval.main_metric's suite). A suite's unseen-wording twin of the same "
        "split holds the same problems.")
    path: Path | None = Field(None, description="jsonl: a user file with a prompt and an answer per row (.jsonl, "
                              ".parquet, or a `datasets` directory; see `fields`).")
    seed: Annotated[int, upto(2**63 - 1, 0)] = Field(
        1234, description="Generator seed (the split against training prompts is fixed, not seeded).")
    majority_k: Annotated[int, upto(1024, 0)] = Field(0, description="Also sample k answers per problem for majority@k (0: off), and "
                                      "the label-free self_consistency (the greedy answer agrees with the k samples' majority).")
    max_new_tokens: Annotated[int, upto(32_768)] = Field(64, description="Longest answer in tokens.")
    labelled: bool = Field(True, description="jsonl: false for held-out prompts without answers (a user with no labels): "
                           "only the label-free metrics are computed (self_consistency, with majority_k >= 2), and the "
                           "gate may decide on them (eval.main_metric: <suite>/self_consistency).")

    @model_validator(mode="after")
    def _fits_kind(self) -> SuiteConfig:
        if not self.labelled and (self.kind != "jsonl" or self.majority_k < 2):
            raise ValueError(f"eval suite {self.name!r}: labelled: false is for a jsonl file of prompts without answers, "
                             "with majority_k >= 2 (self_consistency needs a majority)")
        if self.kind == "jsonl" and self.phrasing != "seen":
            raise ValueError(f"eval suite {self.name!r}: phrasing applies to the built-in generators, not to a JSONL file")
        if self.kind == "jsonl" and self.split != "eval":
            raise ValueError(f"eval suite {self.name!r}: split applies to the built-in generators; a JSONL file is "
                             "used whole (keep validation and test items in two files)")
        try:
            check_family(self.kind, self.levels, self.phrasing)
        except ValueError as exc:
            raise ValueError(f"eval suite {self.name!r}: {exc}") from None
        return self


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


class ScheduleConfig(Section):
    """When the daemon starts iterations, and its maintenance jobs."""

    mode: Literal["continuous", "interval", "cron"] = Field(
        "continuous", description="When the daemon starts iterations: back to back, every N minutes, or in a cron window."
    )
    every_minutes: Annotated[int, upto(366 * 24 * 60)] = Field(60, description="interval: minutes between iteration starts.")
    cron: str = Field("0 1 * * *", description="cron: crontab expression (minute hour day month weekday) that starts iterations.")
    backup_every_minutes: Annotated[int, upto(366 * 24 * 60, 0)] = Field(360, description="SQLite backup period (0: off).")
    backups_keep: Annotated[int, upto(10_000)] = Field(5, description="Newest backups kept.")
    keep_checkpoints: Annotated[int, upto(1_000_000)] = Field(
        3, description="Retention: keep promoted checkpoints and the newest K others.")
    retention_every_minutes: Annotated[int, upto(366 * 24 * 60, 0)] = Field(60, description="Checkpoint retention period (0: off).")
    wal_checkpoint_every_minutes: Annotated[int, upto(366 * 24 * 60, 0)] = Field(30, description="SQLite WAL checkpoint period (0: off).")

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, v: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(v)
        except ValueError as exc:
            raise ValueError(f"not a crontab expression: {exc}") from None
        return v


class DatabaseConfig(Section):
    """Where the history is stored."""

    url: str | None = Field(
        None,
        description="SQLAlchemy URL: sqlite:///path.db or postgresql+psycopg://user@host/db. Null: <state_dir>/selfloop.db. "
        "A password written here is used but never stored, shown, sent to a tracker or logged: give it by "
        "database.password_file, PGPASSFILE (~/.pgpass) or PGPASSWORD instead, so a resumed loop finds it too.",
    )
    password_file: Path | None = Field(
        None, description="PostgreSQL: a file whose first line is the password of database.url's user (read when "
        "connecting; the password is never stored). Null: libpq's PGPASSWORD, PGPASSFILE or ~/.pgpass.",
    )
    reader_url: str | None = Field(
        None,
        description="PostgreSQL: URL of the read-only role that user SQL runs as (`selfloop sql`, the dashboard); "
        "`selfloop db create-reader` creates it and prints this URL (its password is never stored either).",
    )
    busy_timeout_ms: Annotated[int, upto(3_600_000)] = Field(30000, description="SQLite: wait this long for a lock before failing.")
    statement_timeout_ms: Annotated[int, upto(3_600_000)] = Field(30000, description="`selfloop sql`: time limit of one statement.")

    @field_validator("url", "reader_url")
    @classmethod
    def _url_is_supported(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from selfloop import credentials
        from selfloop.db.engine import check_url

        check_url(v)
        credentials.remember(v)
        return v

    @field_serializer("url", "reader_url")
    def _without_password(self, v: str | None) -> str | None:
        from selfloop import credentials

        return credentials.strip_optional(v)


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


class MetricsConfig(Section):
    """Prometheus `/metrics` and `/health`, served by the daemon (and by `selfloop run --metrics-port N`)."""

    enabled: bool = Field(False, description="Serve /metrics and /health while the loop runs.")
    host: str = Field("127.0.0.1", description="Address to bind; anything but loopback exposes the loop's figures to the network.")
    port: Annotated[int, upto(65535, 0)] = Field(9464, description="TCP port (0: any free port, logged at start).")


class WarningsConfig(Section):
    """Floors under which a quiet failure becomes a warning event, a log warning and a metric."""

    min_judge_parse_rate: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.2, description="Warn when fewer LLM-judge answers than this share carry a readable score."
    )
    min_examples: Annotated[int, upto(1_000_000, 0)] = Field(1, description="Warn when an iteration selects fewer training examples.")
    min_accuracy: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        0.0, description="Warn when a held-out suite's greedy accuracy is at or below this (0: only a suite at zero; "
        "null: never). The starting policy is warned about once, in the loop's first iteration."
    )


class MLflowTrackingConfig(Section):
    """An MLflow run per loop (install `selfloop[mlflow]`)."""

    enabled: bool = Field(False, description="Send the loop's history to MLflow.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI (a server, or sqlite:///PATH); null: sqlite:///<state_dir>/mlflow.db. "
        "Credentials written in it (http://user:TOKEN@host) are used but never stored, shown or logged: give them by "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) instead."
    )
    experiment: str = Field("selfloop", description="Experiment name; each loop is one run in it.")
    log_adapters: bool = Field(False, description="Also upload each iteration's adapter as an artifact.")
    system_metrics: bool = Field(False, description="MLflow's system metrics (CPU, memory, disk, network, GPU) on the "
                                 "loop's run while it runs, every 10 s (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL); "
                                 "needs psutil (and pynvml for GPUs).")
    timeout_s: Annotated[int, upto(600)] = Field(
        10, description="Each request to an MLflow server waits at most this long and is retried once, so an "
        "outage is recorded (a tracking.failed event) within about twice this, and `selfloop track` fails by then.")

    @field_validator("tracking_uri")
    @classmethod
    def _not_a_file_store(cls, v: str | None) -> str | None:
        if v is not None and (v.startswith("file:") or "://" not in v and not v.startswith(("databricks", "sqlite:"))):
            raise ValueError(f"{v!r} is a file store, which MLflow 3 refuses: use sqlite:///PATH/mlflow.db for a "
                             "local store (or null for <state_dir>/mlflow.db), or an http(s):// tracking server")
        from selfloop import credentials

        credentials.remember(v)
        return v

    @field_serializer("tracking_uri")
    def _without_credentials(self, v: str | None) -> str | None:
        from selfloop import credentials

        return credentials.strip_optional(v)


class WandbTrackingConfig(Section):
    """A Weights & Biases run per loop (install `selfloop[wandb]`; online mode needs WANDB_API_KEY)."""

    enabled: bool = Field(False, description="Send the loop's history to W&B.")
    project: str = Field("selfloop", description="W&B project.")
    entity: str | None = Field(None, description="W&B entity (team or user); null: the account's default.")
    mode: Literal["online", "offline"] = Field("online", description="offline: write run files to disk only (`wandb sync` uploads them).")
    dir: Path | None = Field(None, description="Where W&B writes its files; null: the state directory.")
    log_adapters: bool = Field(False, description="Also log each iteration's adapter as an artifact.")
    system_stats: bool = Field(True, description="W&B's system statistics (CPU, GPU, memory) beside the loop's figures.")


class TrackingConfig(Section):
    """Experiment trackers fed from the store; a failing tracker never stops the loop."""

    mlflow: MLflowTrackingConfig = Field(default_factory=MLflowTrackingConfig)
    wandb: WandbTrackingConfig = Field(default_factory=WandbTrackingConfig)
    retry_every_s: Annotated[int, upto(86_400)] = Field(60, description="A failed tracker is retried (and caught up) this often.")
    stream_every_s: Annotated[float, Field(ge=0.0, le=3600.0)] = Field(
        10.0, description="While a phase runs, what the store gained is sent this often: a running train phase's steps "
        "make a live curve (0: send only when a phase ends).")


class LoggingConfig(Section):
    """Log format and destinations."""

    level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    json_lines: bool = Field(False, description="Log JSON lines instead of human-readable text (same as --log-json).")
    file: Path | None = Field(None, description="Also log to this file, rotated.")
    rotation: str = Field("100 MB", description="Rotate the log file at this size or interval.")
    retention: Annotated[int, upto(10_000)] = Field(5, description="Rotated log files kept.")


class Config(Section):
    """The whole configuration; one field per YAML section."""

    loop: LoopConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    self_instruct: SelfInstructConfig = Field(default_factory=SelfInstructConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    warnings: WarningsConfig = Field(default_factory=WarningsConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)

    @model_validator(mode="after")
    def _cross_section(self) -> Config:
        # Each algorithm reads one self-judging signal; a config that switches it off would select nothing.
        signal = ALGORITHMS[self.train.algorithm].signal
        if "select" in self.loop.phases and signal and signal not in self.judge.signals:
            raise ValueError(f"train.algorithm {self.train.algorithm!r} needs judge.signals to include {signal!r}")
        if self.train.eft.enabled and "llm_judge" not in self.judge.signals:
            raise ValueError("train.eft.enabled: evaluation fine-tuning learns from the LLM judge's judgments; "
                             "add 'llm_judge' to judge.signals")
        if self.train.eft.enabled and self.train.processes > 1:
            raise ValueError("train.eft.enabled: judge examples are trained in one process for now (train.processes: 1)")
        if "evaluate" in self.loop.phases and not self.eval.suites:
            raise ValueError("eval.suites is empty, but the evaluate phase needs at least one held-out suite "
                             "(or remove 'evaluate' from loop.phases)")
        n, voters = self.generation.samples_per_prompt, self.judge.vote.voters
        if voters is not None and voters > n:
            raise ValueError(f"judge.vote.voters ({voters}) is above generation.samples_per_prompt ({n})")
        check = ALGORITHMS[self.train.algorithm].check
        problem = check(self) if check is not None else None
        if problem:
            raise ValueError(problem)
        if self.curate.filters and "select" in self.loop.phases and "curate" not in self.loop.phases:
            phases = list(self.loop.phases)
            phases.insert(phases.index("select"), "curate")
            self.loop.phases = phases
        if self.curate.filters and "curate" in self.loop.phases:
            for name in self.curate.filters:
                read = FILTERS[name].reads(self.curate.options(name))
                if read is not None and read not in self.judge.signals:
                    raise ValueError(f"curate.filters names {name!r}, which reads the {read!r} judgments: "
                                     f"add {read!r} to judge.signals")
        if self.self_instruct.mine_hard.enabled and "synthesize" not in self.loop.phases:
            raise ValueError("self_instruct.mine_hard.enabled: hard prompts seed the synthesize phase, which is "
                             "not in loop.phases")
        mlflow_uri = self.tracking.mlflow.tracking_uri
        if mlflow_uri and "://" in mlflow_uri and not mlflow_uri.startswith(("http:", "https:", "databricks")):
            from selfloop.db.engine import same_database

            if same_database(mlflow_uri, self.database.url or f"sqlite:///{self.state_dir() / 'selfloop.db'}"):
                raise ValueError("tracking.mlflow.tracking_uri is selfloop's own store (database.url): MLflow would "
                                 "create its tables inside it; give MLflow a database of its own")
        if self.engine.kind == "vllm-server" and self.judge.llm_judge.model is not None:
            raise ValueError("judge.llm_judge.model: a separate judge model is not served by engine.kind 'vllm-server' "
                             "(its servers serve the policy's base model); leave it null to judge with the policy")
        return self

    @model_validator(mode="before")
    @classmethod
    def _moved_fields(cls, data: Any) -> Any:
        """Keys an algorithm's section had once, moved where they live now (each algorithm's `moved`)."""
        if not isinstance(data, dict):
            return data
        for spec in ALGORITHMS.values():
            if spec.moved is not None:
                data = spec.moved(data)
        return data

    # Paths that depend on the environment, resolved once here so every module agrees.
    def state_dir(self) -> Path:
        if self.loop.state_dir is not None:
            return self.loop.state_dir.expanduser().resolve()
        env = os.environ.get("SELFLOOP_STATE_DIR") or os.environ.get("STATE_DIRECTORY")
        if env:
            return Path(env.split(":")[0]).expanduser().resolve()
        return Path("~/.local/share/selfloop").expanduser()

    def cache_dir(self) -> Path:
        if self.model.cache_dir is not None:
            return self.model.cache_dir.expanduser().resolve()
        return default_cache_dir()

    def database_url(self) -> str:
        """The store's URL as this process connects to it: with the password of `database.password_file` when the
        URL carries none."""
        url = self.database.url or f"sqlite:///{self.state_dir() / 'selfloop.db'}"
        if self.database.password_file is not None:
            from selfloop.credentials import with_password_file

            url = with_password_file(url, self.database.password_file)
        return url

    def stored_checkpoint(self, path: Path) -> str:
        """How a checkpoint directory is recorded: relative to the state directory when inside it, so that a
        moved state directory (or a copy on another machine) keeps working."""
        try:
            return Path(path).resolve().relative_to(self.state_dir()).as_posix()
        except ValueError:
            return str(Path(path).resolve())

    def checkpoint_dir(self, stored: str) -> Path:
        """A recorded checkpoint path on this machine: absolute as recorded; relative under the state
        directory, or else beside an SQLite database (whose default home is the state directory)."""
        path = Path(stored)
        if path.is_absolute():
            return path
        here = self.state_dir() / path
        if not here.exists():
            url = self.database_url()
            if url.startswith("sqlite:///") and (Path(url.removeprefix("sqlite:///")).parent / path).exists():
                return Path(url.removeprefix("sqlite:///")).parent / path
        return here

    def reader_url(self) -> str:
        """Where user SQL runs: the read-only role's URL, or the database itself (SQLite opens it read-only)."""
        return self.database.reader_url or self.database_url()


def default_cache_dir() -> Path:
    env = os.environ.get("SELFLOOP_CACHE_DIR") or os.environ.get("CACHE_DIRECTORY")
    if env:
        return Path(env.split(":")[0]).expanduser().resolve()
    return Path("~/.cache/selfloop").expanduser()


def section_type(ann: Any) -> type[BaseModel] | None:
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
