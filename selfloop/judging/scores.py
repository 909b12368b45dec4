"""Parsing the LLM judge's score (Self-Rewarding LMs' additive 5-point rubric).

The judge is told to end with a line `Score: <points>`. We take the last line that starts with
`Score:` (case-insensitive, optionally in markdown bold) outside quoted blocks, and accept only a
plain integer or decimal in 0..5, optionally followed by "points" and a full stop. Small judges
often put the verdict at the end of their last sentence ("... so it earns three points. Score: 3"):
a `Score:` that ends the last non-empty line counts too, and wins over earlier lines. Anything else
- out of range, a fraction like 4/5, "4 out of 5", a range, words, no score line - is unparsed
(None) rather than guessed at. A "Score:" quoted inside a sentence (e.g. repeating the judged
response) neither starts a line nor ends the judge's text, and so never counts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_LINE = re.compile(r"^\s*(?:[*_]{1,2})?score(?:[*_]{1,2})?\s*:(?:[*_]{1,2})?(?P<value>.*)$", re.IGNORECASE)
# "Score:" after a word boundary, with nothing but its value up to the end of the line.
_TAIL = re.compile(r"(?:^|[\s(*_])(?:[*_]{1,2})?score(?:[*_]{1,2})?\s*:(?:[*_]{1,2})?(?P<value>[^:]*)$", re.IGNORECASE)
_VALUE = re.compile(r"^\s*(?:[*_]{1,2})?(?P<num>\d+(?:\.\d+)?)(?:[*_]{1,2})?\s*(?:points?)?\s*\.?\s*$", re.IGNORECASE)


def parse_score(text: str | None) -> float | None:
    """The score in 0..5 from the judge's last `Score:` line, or None when it is absent or malformed."""
    if not text:
        return None
    lines = [line for line in text.splitlines() if not line.lstrip().startswith(">")]  # quoted blocks cite the response
    while lines and not lines[-1].strip():
        lines.pop()
    last = None
    for number, line in enumerate(lines):
        m = _LINE.match(line)
        if m is None and number == len(lines) - 1:
            m = _TAIL.search(line)
            m = m if m and _VALUE.match(m.group("value")) else None  # a mention mid-sentence is no verdict
        if m:
            last = m.group("value")
    if last is None:
        return None
    m = _VALUE.match(last)
    if not m:
        return None
    value = float(m.group("num"))
    return value if 0.0 <= value <= 5.0 else None


# Probability-weighted scoring (G-Eval, Liu et al. 2023): after the judge's justification the verdict
# line's prefix is given, and the score is the expectation of the points under the judge's own
# next-token distribution over the allowed values, renormalised over them. The mass those values hold
# says how much the judge meant a verdict at all.
POINTS = (0, 1, 2, 3, 4, 5)  # the additive rubric's totals
VERDICT_STOPS = ("Score:", "score:", "SCORE:")  # where generation of the justification stops


def justification(text: str) -> str:
    """The judge's text before its verdict: cut at the first `Score:` and stripped of the markdown
    and whitespace that led into it."""
    cut = min((i for i in (text.find(s) for s in VERDICT_STOPS) if i >= 0), default=len(text))
    return text[:cut].rstrip(" \t\n*_#>")


def verdict_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """(token ids of the verdict prefix, one token id per value of POINTS) such that the prefix's text
    followed by a value's text tokenises as the prefix ids plus exactly that token."""
    found = value_tokens(tokenizer, "Score:", POINTS)
    if found is None:
        raise ValueError("judge.llm_judge.scoring 'distribution': this tokenizer has no single token per score value "
                         "after 'Score:'; use scoring 'text'")
    return found


def value_tokens(tokenizer: PreTrainedTokenizerBase, label: str, values: Sequence[int]) -> tuple[list[int], list[int]] | None:
    """(token ids of `label`, one token id per value) such that the label's text followed by a value's text
    tokenises as the label's ids plus exactly that token; None where this tokenizer has no such form.
    Tokenisers differ: GPT-2's has ' 4' as one token, SmolLM2's splits it into ' ' and '4', so both forms are tried."""
    for prefix, sep in ((label, " "), (label + " ", "")):
        head = tokenizer.encode(prefix, add_special_tokens=False)
        ids_of = []
        for v in values:
            ids = tokenizer.encode(prefix + sep + str(v), add_special_tokens=False)
            if len(ids) != len(head) + 1 or ids[: len(head)] != head:
                break
            ids_of.append(ids[-1])
        if len(ids_of) == len(values) and len(set(ids_of)) == len(ids_of):
            return head, ids_of
    return None


def expected_score(logprobs: Sequence[float]) -> tuple[float | None, float, list[float]]:
    """(the expected points over POINTS, renormalised; the probability mass on POINTS; each value's
    probability) from each value's log-probability. No mass at all: no score."""
    probs = [math.exp(lp) for lp in logprobs]
    mass = sum(probs)
    if mass <= 0.0:
        return None, 0.0, probs
    return sum(v * p for v, p in zip(POINTS, probs, strict=True)) / mass, mass, probs
