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

import re

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
