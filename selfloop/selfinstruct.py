"""Self-instruct synthesis (Wang et al. 2023; as used by Self-Rewarding LMs): few-shot prompts from
the seed pool plus earlier generated prompts, parsing of the new instruction, and its filters.

Pure functions; the synthesize phase does the generating and the storing.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from importlib.resources import files

# Self-Instruct drops instructions a text model cannot serve: they ask for media or outside resources.
UNUSABLE = re.compile(
    r"\b(image|images|picture|pictures|photo|photos|graph|graphs|diagram|video|videos|map|maps|draw|plot|"
    r"file|files|url|link|links|attach|attachment|chart|sketch|go to|http|https|www)\b",
    re.IGNORECASE,
)
PREFIX = re.compile(r"^\s*(?:new\s+)?(?:task|instruction|question)\s*\d*\s*[:.)-]\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Example:
    # The new prompt's parents: "seed:12" (seed task), "prompt:3.5" (iteration 3's self-instruct prompt 5) or
    # "hard:3.arithmetic.7" (a hard prompt of iteration 3 mined as a seed: its source and place)
    key: str
    text: str


def template() -> str:
    return (files("selfloop.prompts") / "self_instruct.txt").read_text()


def few_shot_prompt(seeds: list[Example], generated: list[Example], n_seed: int, n_generated: int,
                    rng: random.Random) -> tuple[str, list[str]]:
    """The request for one new task, and the keys of the examples shown in it."""
    shown = rng.sample(seeds, min(n_seed, len(seeds))) + rng.sample(generated, min(n_generated, len(generated)))
    rng.shuffle(shown)
    examples = "\n".join(f"Task {i}: {ex.text}" for i, ex in enumerate(shown, start=1))
    return template().replace("{examples}", examples), [ex.key for ex in shown]


def parse_instruction(reply: str) -> str:
    """The task the model wrote: its first paragraph, without a 'Task N:' label or wrapping quotes."""
    text = reply.strip()
    text = PREFIX.sub("", text)
    text = re.split(r"\n\s*\n|\n\s*(?:task|instruction)\s*\d*\s*:", text, maxsplit=1, flags=re.IGNORECASE)[0]
    text = " ".join(text.split())
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def rouge_l(a: list[str], b: list[str]) -> float:
    """ROUGE-L F-measure of two token lists (longest common subsequence)."""
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


class Pool:
    """Prompts a candidate must differ from; keeps token lists so each check is cheap."""

    def __init__(self, texts: list[str]) -> None:
        self._items: list[tuple[list[str], Counter]] = []
        self._exact: set[str] = set()
        for text in texts:
            self.add(text)

    def add(self, text: str) -> None:
        toks = _tokens(text)
        self._items.append((toks, Counter(toks)))
        self._exact.add(" ".join(toks))

    def is_exact_duplicate(self, text: str) -> bool:
        return " ".join(_tokens(text)) in self._exact

    def max_rouge(self, text: str, threshold: float) -> float:
        """Highest ROUGE-L against the pool; stops early once `threshold` is reached.

        The LCS is at most the multiset overlap, so 2*overlap/(n+m) bounds the F-measure and most
        pool entries are skipped without the quadratic LCS.
        """
        toks = _tokens(text)
        counts = Counter(toks)
        best = 0.0
        for other, other_counts in self._items:
            bound = 2 * sum((counts & other_counts).values()) / max(1, len(toks) + len(other))
            if bound <= best:
                continue
            best = max(best, rouge_l(toks, other))
            if best >= threshold:
                break
        return best


def rejection_reason(text: str, min_words: int, max_words: int) -> str | None:
    """Why a parsed instruction is unusable on its own (before the pool checks), or None."""
    if not text:
        return "empty"
    words = text.split()
    if len(words) < min_words:
        return "too_short"
    if len(words) > max_words:
        return "too_long"
    if not text[0].isalnum() or sum(c.isascii() for c in text) < 0.9 * len(text) or not re.search(r"[A-Za-z]", text):
        return "not_text"
    if UNUSABLE.search(text):
        return "unusable"
    return None
