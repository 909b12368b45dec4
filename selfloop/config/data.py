"""Where prompts and held-out problems come from: task pools, user files and their field maps,
self-instruct, mined hard prompts, held-out suites."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from selfloop.config.base import FAMILIES, FamilyName, PoolKind, Probability, Section, SuiteKind, upto


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
    when: Literal["every", "ends"] = Field(
        "every", description="'every': answered by both policies of every iteration; 'ends': only by the policies a "
        "loop's result reads, its start (iteration 1's baseline) and its final policy (in the last iteration, "
        "loop.max_iterations, the one the gate keeps, decided on the gate's suite before this one is answered). For "
        "suites no gate reads (test suites; a validation suite a lab reads of its final policies only): the same "
        "answers (the same weights, asked in the same batches) for one policy instead of every candidate, but the "
        "suite's per-iteration curve and the guard replay see the ends only, and `selfloop lab gates` cannot re-take "
        "a decision on it. Not for the gate's suite.")
    labelled: bool = Field(True, description="jsonl: false for held-out prompts without answers (a user with no labels): "
                           "only the label-free metrics are computed (self_consistency, with majority_k >= 2), and the "
                           "gate may decide on them (eval.main_metric: <suite>/self_consistency).")

    def answer_settings(self) -> dict[str, Any]:
        """What the suite's answers depend on: its definition without `when` (which iterations answer it)."""
        return SuiteConfig.answer_part(self.model_dump(mode="json"))

    @staticmethod
    def answer_part(dumped: dict[str, Any]) -> dict[str, Any]:
        """`answer_settings` of a suite as dumped (a loop's stored config): its keys but `when`."""
        return {k: v for k, v in dumped.items() if k != "when"}

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
