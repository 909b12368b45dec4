"""Taking a loop's data elsewhere: `selfloop export` and `selfloop merge`.

export writes rows in the forms TRL's trainers read as they are (conversational):
- pairs: `prompt` (the user turn, and the system turn if the loop had one), `chosen`, `rejected` (one
  assistant turn each), for DPOTrainer / ORPOTrainer; with the judge signals as extra columns;
- samples: every sample as `prompt` / `completion`, with its judge score, vote answer and reward, and its
  correctness as the judge phase graded it (null where the prompt has no known answer);
- examples: the rewarded examples an algorithm trained on (TTRL, RLSC, ReST-EM, RAFT, R-Tuning, CUT) as `prompt` /
  `completion` with `reward` and `weight`, and the algorithm's own fields (its spec's data model), a field that holds
  a second prompt as a chat (CUT's and CoIN's `context`: the judged prompt, the paraphrase), else null;
- ranked: a list-wise method's rankings as RRHF's trainer reads them: `query` (the prompt text), `responses`
  (best first) and `scores` (higher is better), with `prompt` in the chat form beside them;
- evals: held-out items with the response, prediction and correctness.
Every row also names its loop and iteration. JSON Lines by default; Parquet needs pyarrow.

merge writes the base model with a checkpoint's adapter folded into its weights (after the checkpoint is
verified against its manifest), as safetensors with the tokenizer and chat template: a plain model that
transformers loads and vLLM serves.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterator
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sqlalchemy.orm import Session

from selfloop.config import stored_config
from selfloop.db import history
from selfloop.db.models import Loop
from selfloop.db.queries import loop_by_name, no_loop, row
from selfloop.errors import SelfloopError

if TYPE_CHECKING:
    from selfloop.config import Config

WHAT = ("pairs", "samples", "examples", "ranked", "evals")


def _chat_prompt(text: str, system: str | None, messages: list[dict[str, str]] | None = None) -> list[dict[str, str]]:
    """The prompt as the policy was asked it (TRL's conversational form): its stored conversation, or the user turn
    after the config's system turn."""
    from selfloop.engines.chat import prompt_chat

    return prompt_chat(text, system, messages)


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _loop(session: Session, loop_name: str) -> Loop:
    loop = loop_by_name(session, loop_name)
    if loop is None:
        raise SelfloopError(no_loop(session, loop_name))
    return loop


def _iterations(session: Session, loop: Loop, iteration: int | None) -> dict[int, int]:
    found = history.iteration_numbers(session, loop.id, iteration)
    if iteration is not None and not found:
        raise SelfloopError(f"loop {loop.name!r} has no iteration {iteration}")
    return found


def rows(session: Session, loop_name: str, what: str, iteration: int | None = None) -> Iterator[dict[str, Any]]:
    """The rows of one export, in iteration then item order."""
    if what not in WHAT:
        raise SelfloopError(f"--what {what!r}: one of {', '.join(WHAT)}")
    loop = _loop(session, loop_name)
    system = stored_config(loop.config, loop.name).generation.system_prompt
    its = _iterations(session, loop, iteration)
    base = {"loop": loop.name}
    if what == "evals":
        for item in history.eval_items_of(session, list(its)):
            yield {**base, "iteration": its[item.iteration_id], "role": item.role, "suite": item.suite,
                   "prompt": _chat_prompt(item.prompt, system), "completion": _assistant(item.response),
                   "answer": item.answer, "predicted": item.predicted, "correct": item.correct,
                   "majority_correct": item.majority_correct}
    elif what == "samples":
        found = history.samples_of(session, list(its))
        scores = history.mean_judge_scores(session, {s.id for s, *_ in found})
        votes = history.votes_of(session, [s.id for s, *_ in found])
        for sample, prompt, answer, messages in found:
            vote_answer, reward = votes.get(sample.id, (None, None))
            yield {**base, "iteration": its[sample.iteration_id], "prompt": _chat_prompt(prompt, system, messages),
                   "completion": _assistant(sample.text), "sample_index": sample.sample_index,
                   "judge_score": scores.get(sample.id), "vote_answer": vote_answer,
                   "vote_reward": reward, "known_answer": answer, "correct": sample.correct,
                   "num_tokens": sample.num_tokens, "mean_logprob": sample.mean_logprob}
    elif what == "ranked":
        for _, group in groupby(history.rankings_of(session, list(its)), key=lambda r: r[0]):
            candidates = list(group)
            _, iteration_id, algorithm, prompt, *_ = candidates[0]
            yield {**base, "iteration": its[iteration_id], "algorithm": algorithm, "query": prompt,
                   "prompt": _chat_prompt(prompt, system), "responses": [r[4] for r in candidates],
                   "scores": [r[5] for r in candidates]}
    else:
        yield from _examples(session, its, base, system, pairs=what == "pairs")


def _examples(session: Session, its: dict[int, int], base: dict[str, Any], system: str | None,
              pairs: bool) -> Iterator[dict[str, Any]]:
    found = history.examples_of(session, list(its))
    scores = history.mean_judge_scores(session, {e.sample_id for e, *_ in found if e.sample_id} |
                                       {e.rejected_sample_id for e, *_ in found if e.rejected_sample_id})
    for example, prompt, chosen_text, rejected_text, ranked, messages in found:
        if (example.rejected_sample_id is not None) != pairs or ranked:
            continue
        completion = chosen_text if chosen_text is not None else example.text
        row = {**base, "iteration": its[example.iteration_id], "algorithm": example.algorithm,
               "prompt": _chat_prompt(prompt, system, messages)}
        if pairs:
            row |= {"chosen": _assistant(completion), "rejected": _assistant(rejected_text),
                    "chosen_score": scores.get(example.sample_id), "rejected_score": scores.get(example.rejected_sample_id)}
        else:
            row |= {"completion": _assistant(completion), "reward": example.reward, "weight": example.weight,
                    **_own_data(example.algorithm, example.data, system)}
        yield row


def _own_data(algorithm: str, data: dict[str, Any] | None, system: str | None) -> dict[str, Any]:
    """The algorithm's own fields of an example (its spec's data model), each a column of every row the algorithm
    exports (null where an example has none); the fields that hold a second prompt as a chat, as `prompt` is. An
    algorithm no longer installed exports its data as stored, under `data`."""
    from selfloop.algorithms import specs

    contract = specs().get(algorithm)
    if contract is None:
        return {"data": data} if data is not None else {}
    if contract.data is None:
        return {}
    data = data or {}
    return {name: (_chat_prompt(data[name], system) if name in contract.prompts and data.get(name) is not None
                   else data.get(name)) for name in contract.data.model_fields}


def nothing_to_export(session: Session, loop_name: str, what: str, iteration: int | None) -> str:
    """Why an export found no rows, with what the loop has instead (an empty file would only fail later, in
    `load_dataset`)."""
    loop = _loop(session, loop_name)
    has = history.export_counts(session, list(_iterations(session, loop, iteration)))
    where = f"iteration {iteration} of loop {loop_name!r}" if iteration is not None else f"loop {loop_name!r}"
    others = [f"{n} {k}" for k, n in has.items() if n and k != what]
    if not others:
        return f"{where} has nothing to export yet"
    algorithm = stored_config(loop.config, loop.name).train.algorithm
    trains_on = "pairs" if has["pairs"] else "rankings" if has["ranked"] else "rewarded examples"
    return (f"{where} has no {what} (its algorithm, {algorithm}, trains on "
            f"{trains_on}); it has {', '.join(others)}: use --what "
            f"{next(k for k, n in has.items() if n and k != what)}")


def write(records: Iterator[dict[str, Any]], out: Path | None, fmt: str) -> int:
    """Write to `out` (None: JSON Lines on stdout); return the number of rows.

    The rows go to a temporary sibling renamed over `out` only when complete, so a failure (an unknown loop or
    iteration, raised by the first row; a full disk) leaves an existing `out` as it was and no half-written
    file; `out` is never a symbolic link (no write lands where the link points)."""
    if out is None:
        import sys

        n = _write_jsonl(records, sys.stdout)
        sys.stdout.flush()
        return n
    out = Path(out)
    if out.is_symlink():
        raise SelfloopError(f"--out {out}: a symbolic link; give the path of the file itself (export does not write through links)")
    if out.exists() and not out.is_file():
        raise SelfloopError(f"--out {out}: exists and is not a regular file")
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise SelfloopError("--format parquet needs pyarrow: pip install pyarrow (or use --format jsonl)") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        if fmt == "jsonl":
            with open(tmp, "x", encoding="utf-8") as stream:
                n = _write_jsonl(records, stream)
        else:
            table = pa.Table.from_pylist(list(records))
            pq.write_table(table, tmp)
            n = table.num_rows
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def _write_jsonl(records: Iterator[dict[str, Any]], stream: TextIO) -> int:
    n = 0
    for n, record in enumerate(records, start=1):  # noqa: B007 - n is the count written, read after the loop
        stream.write(json.dumps(_finite(record), ensure_ascii=False, allow_nan=False) + "\n")
    return n


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities as null: JSON has no such numbers (Python writes `-Infinity`, which no JSON
    reader takes; a store written before replies were bounded may hold -inf log-prob sums)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def merge(session: Session, loop_name: str, iteration: int | None, out: Path, config: Config) -> tuple[Path, int]:
    """Fold a checkpoint's adapter (iteration N's, or the loop's current policy) into the base model at `out`."""
    from selfloop.adapters import verify_checkpoint
    from selfloop.db.models import Checkpoint
    from selfloop.models.resolve import resolve_model

    loop = _loop(session, loop_name)
    if iteration is None:
        checkpoint_id, which = loop.current_checkpoint_id, "its current policy"
        if checkpoint_id is None:
            raise SelfloopError(f"loop {loop_name!r} has no promoted checkpoint yet: give --iteration N")
    else:
        checkpoint_id = history.output_checkpoint(session, loop.id, iteration)
        which = f"iteration {iteration}"
        if checkpoint_id is None:
            raise SelfloopError(f"iteration {iteration} of {loop_name!r} has no checkpoint")
    ckpt = row(session, Checkpoint, checkpoint_id)
    if ckpt.status != "ok":
        raise SelfloopError(f"the checkpoint of {which} of {loop_name!r} was deleted by retention")
    if out.exists() and any(out.iterdir()):
        raise SelfloopError(f"--out {out}: not empty; give a new directory")
    adapter = config.checkpoint_dir(ckpt.path)
    verify_checkpoint(adapter, ckpt.sha256)
    base = resolve_model(ckpt.base_model, config.cache_dir())
    _fold(base.path, adapter, out)
    return out, ckpt.id


def _fold(base_dir: Path, adapter_dir: Path, out: Path) -> None:
    import torch
    from peft import PeftModel

    from selfloop.manifest import atomic_directory
    from selfloop.models.loading import load_causal_lm, load_tokenizer

    model = load_causal_lm(base_dir, torch.device("cpu"), torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    tokenizer = load_tokenizer(base_dir)
    with atomic_directory(out, private=False) as tmp:  # made to share: the user's umask decides
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
