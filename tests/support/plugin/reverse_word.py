"""A task family from outside selfloop: reverse a word. The whole family, as docs/extending.md shows it.

    [project.entry-points."selfloop.families"]
    reverse_word = "reverse_word:SPEC"
"""

import hashlib

from selfloop.families.spec import FamilySpec, Grade, Problem

WORDS = ["apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "candle", "garden", "rocket",
         "silver", "window", "forest", "planet", "bridge", "pencil", "castle", "orange", "mirror", "jacket"]
WORDINGS = ("Reverse the word '{w}'.", "Write '{w}' backwards.")  # the second is held out (phrasing 'unseen')


def split_of(key: str) -> str:
    """A fixed split by a hash of the key: a quarter of the words are held out, whatever the seed."""
    return "eval" if hashlib.sha256(key.encode()).digest()[0] % 4 == 0 else "train"


def problems(levels, split, phrasing):
    wording = WORDINGS[1] if phrasing == "unseen" else WORDINGS[0]
    return [Problem(f"reverse:{w}", wording.format(w=w), w[::-1]) for w in WORDS if split_of(f"reverse:{w}") == split]


def grade(response, answer, extractors=()):
    """Right when the last word of the response, stripped of quotes and punctuation, is the reversed word."""
    words = (response or "").split()
    said = words[-1].strip("'\".,!?").lower() if words else None
    return Grade(said, said == answer)


SPEC = FamilySpec(
    name="reverse_word",
    summary="Reverse a word; the answer is the reversed word",
    problems=problems,
    grade=grade,
    phrasings=("seen", "unseen"),
    votable=False,
)
