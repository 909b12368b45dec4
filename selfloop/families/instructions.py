"""Instruction following with checkable constraints (after IFEval, Zhou et al. 2023).

A base instruction (a writing task about a topic) carries one constraint (level 1) or two
compatible ones (level 2): lowercase only, at most / at least N words, include or avoid a word,
exactly N bullet points, the whole answer as JSON, end with a given phrase, no commas, wrapped in
double quotes. Each constraint has a verifier, a pure function of the response text, and several
phrasings; the last phrasing of each kind is held out (`phrasing="unseen"`) and never appears in a
training prompt, so a suite can tell a constraint learned from a wording learned.

Like the arithmetic family, the universe is fixed and split once by a hash of each problem's canonical form (task,
topic and constraint kinds: not the wording, not a constraint's value): an eval problem never shows up as a
training prompt, nor does one that differs from it only in a value. The 'novel' suite holds tasks, topics and five
constraint kinds (uppercase, a title, paragraphs, the first word, placeholders) that no training prompt has.
A problem's answer is its constraint list as JSON (`{"follow": [...]}`); a response is correct when it follows
every constraint (IFEval's strict accuracy), and each constraint's verdict is kept (instruction-level accuracy).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import combinations
from typing import Any

from selfloop.families.phrasing import pick, stable_index
from selfloop.families.spec import FamilySpec, Grade, Problem

TASKS = [
    "Write a short paragraph about {topic}.",
    "Describe {topic} in a few sentences.",
    "Explain why {topic} matters to people.",
    "Write a very short story that involves {topic}.",
    "Give advice to someone who is new to {topic}.",
    "Write a short note to a friend about {topic}.",
    "Tell me some facts about {topic}.",
    "Write a short poem about {topic}.",
]
TOPICS = [
    "the ocean", "coffee", "a rainy day", "learning to cook", "bicycles", "the moon", "recycling", "a city park",
    "friendship", "winter", "trains", "gardening", "music practice", "a school library", "honey bees", "volcanoes",
    "public transport", "board games", "a mountain hike", "baking bread", "sleep", "rivers", "museums", "chess",
    "lighthouses", "the desert", "kites", "tea", "birds", "the night sky",
]
INCLUDE_WORDS = ["because", "together", "simple", "bright", "history", "important"]
AVOID_WORDS = ["very", "really", "good", "thing"]
END_PHRASES = ["Is there anything else I can help with?", "Thank you for reading.", "That is all."]


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*", text)


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", text, re.IGNORECASE) is not None


def _bullets(text: str) -> int:
    return len(re.findall(r"^\s*[*\-•]\s+\S", text, re.MULTILINE))


def _json(text: str) -> bool:
    body = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, re.DOTALL | re.IGNORECASE)  # IFEval allows a fence
    try:
        json.loads(fenced.group(1) if fenced else body)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Kind:
    name: str
    values: tuple[Any, ...]  # the parameter values the generator uses (empty: no parameter)
    phrasings: tuple[str, ...]  # the last one is held out from training prompts
    check: Callable[[str, Any], bool]  # (response, value) -> followed


KINDS = {k.name: k for k in [
    Kind("lowercase", (), (
        "Your entire response must be in lowercase letters; no capital letters are allowed.",
        "Write everything in lowercase, with no capital letters at all.",
        "Do not use a single uppercase letter anywhere in your answer.",
    ), lambda r, _: any(c.isalpha() for c in r) and r == r.lower()),
    Kind("max_words", (20, 40, 60), (
        "Answer in at most {value} words.",
        "Use no more than {value} words.",
        "Your reply must not be longer than {value} words.",
    ), lambda r, n: 0 < len(_words(r)) <= n),
    Kind("min_words", (50, 80), (
        "Write at least {value} words.",
        "Your response should contain {value} words or more.",
        "Make sure the answer is no shorter than {value} words.",
    ), lambda r, n: len(_words(r)) >= n),
    Kind("include", tuple(INCLUDE_WORDS), (
        "Include the word '{value}' in your response.",
        "Make sure to use the word '{value}' somewhere.",
        "The word '{value}' has to appear in what you write.",
    ), lambda r, w: _has_word(r, w)),
    Kind("avoid", tuple(AVOID_WORDS), (
        "Do not use the word '{value}'.",
        "Never use the word '{value}' in your answer.",
        "The word '{value}' is forbidden: leave it out entirely.",
    ), lambda r, w: bool(r.strip()) and not _has_word(r, w)),
    Kind("bullets", (2, 3, 4), (
        "Your answer must contain exactly {value} bullet points, using markdown bullets such as '* item'.",
        "Format the answer as exactly {value} bullet points ('* ' at the start of each).",
        "Give precisely {value} points as a markdown list, one '* ' bullet per point, and nothing else as bullets.",
    ), lambda r, n: _bullets(r) == n),
    Kind("json", (), (
        "Wrap your entire response in JSON format.",
        "Your whole answer must be valid JSON.",
        "Reply with a JSON object and nothing outside it.",
    ), lambda r, _: _json(r)),
    Kind("end_with", tuple(END_PHRASES), (
        "Finish your response with the exact phrase '{value}'. No other words should follow it.",
        "End your answer with these exact words: '{value}'",
        "The very last words of your reply must be '{value}', with nothing after them.",
    ), lambda r, p: r.strip().endswith(p)),
    Kind("no_commas", (), (
        "Do not use any commas in your response.",
        "Write the answer without a single comma.",
        "Commas are not allowed anywhere in your reply.",
    ), lambda r, _: bool(r.strip()) and "," not in r),
    Kind("quotation", (), (
        "Wrap your entire response in double quotation marks.",
        "Put the whole answer inside double quotes.",
        "Your reply must begin and end with a double quotation mark.",
    ), lambda r, _: len(r.strip()) > 1 and r.strip()[0] == '"' and r.strip()[-1] == '"'),
]}

# Pairs no response could satisfy together (or whose checks fight over the same characters).
CONFLICTS = {frozenset(p) for p in [
    ("max_words", "min_words"), ("json", "bullets"), ("json", "end_with"), ("json", "quotation"), ("json", "min_words"),
    ("bullets", "quotation"), ("end_with", "quotation"), ("lowercase", "end_with"), ("bullets", "max_words"),
]}


def compatible(kinds: list[str] | tuple[str, ...]) -> bool:
    """No kind twice and no conflicting pair: a response could follow them all."""
    return len(set(kinds)) == len(kinds) and not any(frozenset(pair) in CONFLICTS for pair in combinations(kinds, 2))


def followed(response: str, constraints: list[list]) -> list[bool]:
    """Per constraint `[kind, value]` (value null for kinds without one), whether the response follows it."""
    return [bool(GRADED[kind].check(response, value)) for kind, value in constraints]


def parse_answer(answer: str | None) -> list[list] | None:
    """The constraint list of an instruction-following answer, or None for any other answer."""
    if not answer or not answer.startswith('{"follow"'):
        return None
    try:
        spec = json.loads(answer)["follow"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(spec, list) or not spec:
        return None
    for entry in spec:
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] in GRADED):
            return None
    return spec


def _options(kind: Kind) -> list[tuple[str, object]]:
    return [(kind.name, v) for v in kind.values] if kind.values else [(kind.name, None)]


@cache
def universe(level: int, phrasing: str = "seen") -> tuple[Problem, ...]:
    """Every problem of a level; 'seen' words each constraint with one of the training phrasings
    (picked by the key), 'unseen' with the held-out one."""
    if level not in (1, 2):
        raise ValueError(f"no instruction-following level {level} (1: one constraint, 2: two)")
    singles = [opt for kind in KINDS.values() for opt in _options(kind)]
    sets: list[tuple[tuple[str, Any], ...]]
    if level == 1:
        sets = [(opt,) for opt in singles]
    else:
        sets = [(a, b) for a, b in combinations(singles, 2) if compatible((a[0], b[0]))]
        sets = [s for s in sets if stable_index(repr(s), 4) == 0]  # a quarter of the pairs keeps the universe small
    out = []
    for t, task in enumerate(TASKS):
        for topic in TOPICS:
            for chosen in sets:
                key = f"if:{level}:{t}:{topic}:" + "+".join(f"{k}={v}" for k, v in chosen)
                texts = []
                for kind, value in chosen:
                    wordings = KINDS[kind].phrasings
                    texts.append(pick(wordings, key + kind, phrasing, seen=len(wordings) - 1).format(value=value))
                answer = json.dumps({"follow": [[k, v] for k, v in chosen]})
                out.append(Problem(key, " ".join([task.format(topic=topic), *texts]), answer, level,
                                   group=canonical(t, topic, [k for k, _ in chosen])))
    return tuple(out)


def canonical(task: int | str, topic: str, kinds: Sequence[str]) -> str:
    """A problem's canonical form: its task, its topic and its constraints' kinds, not their values: two problems
    that differ only in a word count or the word to include are one question, on one side of the split."""
    return f"if:{task}:{topic}:" + "+".join(sorted(kinds))


def split_of(key: str) -> str:
    """'eval' for about a third of the canonical forms, 'train' for the rest (the arithmetic family's rule)."""
    return "eval" if stable_index(key, 3) == 0 else "train"


# The novel suite (phrasing 'novel'): tasks, topics and constraint kinds no training prompt has, held out whole.
NOVEL_TASKS = [
    "Write a product description for {topic}.",
    "Draft a short speech about {topic} for a school assembly.",
    "Write a review of {topic}.",
    "Compose a short dialogue between two people about {topic}.",
]
NOVEL_TOPICS = ["electric cars", "a farmers market", "solar panels", "a thunderstorm", "origami", "a marathon",
                "penguins", "a street festival"]


def _paragraphs(text: str) -> int:
    return len([p for p in re.split(r"\n\s*\*\*\*\s*\n|\n\s*\n", text.strip()) if p.strip()])


NOVEL_KINDS = {k.name: k for k in [
    Kind("uppercase", (), (
        "Your entire response must be in English capital letters only.",
    ), lambda r, _: any(c.isalpha() for c in r) and r == r.upper()),
    Kind("title", (), (
        "Give your answer a title wrapped in double angular brackets, such as <<my title>>.",
    ), lambda r, _: re.search(r"<<[^<>\n]+>>", r) is not None),
    Kind("paragraphs", (2, 3), (
        "Write exactly {value} paragraphs, separated from each other by the markdown divider ***.",
    ), lambda r, n: _paragraphs(r) == n and r.count("***") == n - 1),
    Kind("start_with", ("Today", "Imagine"), (
        "The first word of your response must be '{value}'.",
    ), lambda r, w: (_words(r) or [""])[0].lower() == str(w).lower()),
    Kind("placeholders", (2, 3), (
        "Include at least {value} placeholders in square brackets, such as [name].",
    ), lambda r, n: len(re.findall(r"\[[^\[\]\n]+\]", r)) >= n),
]}
GRADED = {**KINDS, **NOVEL_KINDS}  # what grading knows; training prompts use KINDS only
# Novel kinds beside which no known kind can be followed.
NOVEL_CONFLICTS = {frozenset(p) for p in [("uppercase", "lowercase"), ("uppercase", "start_with"), ("paragraphs", "json"),
                                          ("paragraphs", "bullets"), ("title", "json"), ("start_with", "json"),
                                          ("start_with", "quotation"), ("placeholders", "json"), ("paragraphs", "max_words")]}


@cache
def novel_universe(level: int) -> tuple[Problem, ...]:
    """Novel tasks x novel topics, with one novel constraint (level 1) or a novel one and a known one (level 2),
    each worded once (novel kinds have no training wording to hold out)."""
    novel = [opt for kind in NOVEL_KINDS.values() for opt in _options(kind)]
    known = [opt for kind in KINDS.values() for opt in _options(kind)]
    sets: list[tuple[tuple[str, Any], ...]]
    if level == 1:
        sets = [(opt,) for opt in novel]
    else:
        sets = [(a, b) for a in novel for b in known if frozenset((a[0], b[0])) not in NOVEL_CONFLICTS
                and compatible((b[0],))]
        sets = [s for s in sets if stable_index(repr(s), 6) == 0]
    out = []
    for t, task in enumerate(NOVEL_TASKS):
        for topic in NOVEL_TOPICS:
            for chosen in sets:
                key = f"if:{level}:novel{t}:{topic}:" + "+".join(f"{k}={v}" for k, v in chosen)
                texts = [pick(GRADED[k].phrasings, key + k, "unseen", seen=len(GRADED[k].phrasings) - 1).format(value=v) if k in KINDS else
                         GRADED[k].phrasings[0].format(value=v) for k, v in chosen]
                answer = json.dumps({"follow": [[k, v] for k, v in chosen]})
                out.append(Problem(key, " ".join([task.format(topic=topic), *texts]), answer, level,
                                   group=canonical(f"novel{t}", topic, [k for k, _ in chosen])))
    return tuple(out)


def problems(levels: Sequence[int], split: str, phrasing: str = "seen") -> list[Problem]:
    if phrasing == "novel":  # held out whole: every problem is held out
        return [p for level in sorted(set(levels)) for p in novel_universe(level)] if split == "eval" else []
    return [p for level in sorted(set(levels)) for p in universe(level, phrasing) if split_of(p.canonical) == split]


def sample_constraints(rng: random.Random, count: int) -> tuple[str, str]:
    """`count` compatible constraints drawn with `rng`, in training wordings: (their text, the answer
    that checks them). Self-instruct appends them to synthesized prompts to make those checkable."""
    while True:
        kinds = rng.sample(sorted(KINDS), count)
        if compatible(kinds):
            break
    chosen = [rng.choice(_options(KINDS[k])) for k in kinds]
    texts = [rng.choice(KINDS[k].phrasings[:-1]).format(value=v) for k, v in chosen]
    return " ".join(texts), json.dumps({"follow": [[k, v] for k, v in chosen]})


def grade(response: str | None, answer: str, extractors: Sequence[str] = ()) -> Grade:
    """Every constraint's verifier on the response; correct when all pass."""
    constraints = parse_answer(answer)
    if constraints is None:
        raise ValueError(f"not an instruction-following answer (a {{\"follow\": [[kind, value], ...]}} list): {answer[:80]!r}")
    results = tuple(followed(response or "", constraints))
    return Grade(f"{sum(results)}/{len(results)} followed", all(results), results)


SPEC = FamilySpec(
    name="instructions",
    summary="Writing tasks with checkable constraints (IFEval-style); correct when every constraint is followed",
    problems=problems,
    grade=grade,
    levels=(1, 2),
    phrasings=("seen", "unseen", "novel"),
    votable=False,
    part_metric="constraint_accuracy",
)
