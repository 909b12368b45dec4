"""Answer extraction and normalisation for majority voting (Self-Consistency; TTRL).

Extractors, tried in the configured order (the first that finds something wins):
  boxed        the last \\boxed{...} (nested braces allowed)
  answer_is    the last "the answer is ..." / "answer: ..." up to the end of its sentence; when that sentence is an
               expression ("5 + 25, which equals 30"), the result it states
  hash         the last "#### ..." line (GSM8K style)
  last_number  the last number in the text
  stated_number  the last number stated as a result: right after '=', ':', 'is', 'are', 'equals', 'makes', 'gives',
               'get(s)', 'got', 'total of', 'result of' or an arrow (markdown emphasis and '$' allowed between), or
               a response that is a number alone. A number merely mentioned ("To add 24 and 28, you simply add
               them together.") is no answer: last_number would read 28 there, an operand copied from the prompt;
               nor is one an operation follows ("the result of 5 multiplied by 25": 5 is an operand).
Normalisation makes equal answers equal strings: numbers become canonical decimals ("12", "12.0",
"12.00" -> "12"; "1,200" -> "1200"; "3/4" and "0.75" -> "0.75"; "-0" -> "0"); text is lower-cased,
whitespace collapsed, surrounding quotes, a leading article and trailing punctuation removed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from fractions import Fraction

DEFAULT_CHAIN = ("boxed", "answer_is", "hash", "last_number")
_NUM = r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|[-+−]?\.\d+"
_NUMBER = re.compile(rf"(?<![\w.])(?:{_NUM})(?![\w])")
_WHOLE_NUMBER = re.compile(rf"^\$?\s*({_NUM})\s*%?$")
_LEADING_NUMBER = re.compile(rf"^\$?\s*({_NUM})\s*(?:%|[A-Za-z][A-Za-z ]{{0,30}})?$")
_ANSWER_IS = re.compile(r"(?:the\s+(?:final\s+)?answer\s+is|answer\s*:)\s*:?\s*(.+)", re.IGNORECASE)


Span = tuple[int, int]  # where in the response an extractor found the raw answer: text[start:end]


def _stripped(text: str, start: int, end: int) -> Span | None:
    """The span without surrounding whitespace, None if nothing is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _boxed(text: str) -> Span | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    begin = i
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return (begin, i - 1) if depth == 0 else None


def _answer_is(text: str) -> Span | None:
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    tail = _stripped(text, *matches[-1].span(1))
    if tail is None:
        return None
    # The sentence ends at a newline or at a full stop followed by space (not a decimal point).
    end = re.search(r"\n|(?<=[.!?])\s", text[tail[0]:tail[1]])
    span = (tail[0], tail[0] + end.start()) if end else tail
    # "The answer is 5 + 25, which indeed equals 11.": an expression, then its result: the stated result is the
    # answer, not the sentence (nor 5, an operand).
    if _EXPRESSION.match(text[span[0]:span[1]]):
        stated = list(_STATED.finditer(text, span[0], span[1]))
        return stated[-1].span(1) if stated else None
    return span


def _hash(text: str) -> Span | None:
    found = list(re.finditer(r"####\s*(.+)", text))
    return _stripped(text, *found[-1].span(1)) if found else None


def _last_number(text: str) -> Span | None:
    found = list(_NUMBER.finditer(text))
    return found[-1].span() if found else None


# An operand, not a result: a number followed by an operator or an operation's word ("the result of 5 multiplied
# by 25" states no result; 5 is an operand).
_OPERATION = r"\s*(?:[-+*/×÷^]|x\s*\d|(?:plus|minus|times|multiplied|divided|added|subtracted|over)\b)"
_STATED = re.compile(rf"(?:=|:|→|->|\b(?:is|are|equals?|makes|gives|gets?|got|total of|result of))[\s*$]*"
                     rf"((?<![\w.])(?:{_NUM}))(?![\w])(?!{_OPERATION})", re.IGNORECASE)
# An expression of numbers (5 + 25, 3 × 4): what "the answer is" sometimes names before its result.
_EXPRESSION = re.compile(rf"^\s*(?:{_NUM}){_OPERATION}", re.IGNORECASE)
_ALONE = re.compile(rf"^[\s*$]*((?:{_NUM}))[\s*.]*$")


def _stated_number(text: str) -> Span | None:
    alone = _ALONE.match(text)
    if alone:
        return alone.span(1)
    found = list(_STATED.finditer(text))
    return found[-1].span(1) if found else None


EXTRACTORS = {"boxed": _boxed, "answer_is": _answer_is, "hash": _hash, "last_number": _last_number,
              "stated_number": _stated_number}


def normalise_number(raw: str) -> str | None:
    s = raw.replace("−", "-").replace(",", "").replace(" ", "")
    try:
        value = Fraction(s) if "/" in s else Fraction(Decimal(s))
    except (ValueError, ZeroDivisionError, InvalidOperation):
        return None
    if value.denominator == 1:
        return str(value.numerator)
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _unlatex(s: str) -> str:
    s = re.sub(r"\\d?frac\{([^{}]*)\}\{([^{}]*)\}", r"\1/\2", s)
    s = re.sub(r"^\\text\{(.*)\}$", r"\1", s)
    s = re.sub(r"\\[,!;]|\\left|\\right|\$", "", s)
    return s


def normalise(raw: str) -> str | None:
    s = _unlatex(raw.strip().strip("*`").strip())
    s = re.sub(r"[\s.!?;:,]+$", "", s)
    if (m := _WHOLE_NUMBER.match(s)) or (m := _LEADING_NUMBER.match(s)):
        number = normalise_number(m.group(1))
        if number is not None:
            return number
    s = s.strip("\"'“”‘’").strip()
    s = re.sub(r"[\s.,!?;:]+$", "", s)
    s = s.strip("\"'“”‘’").strip()
    s = re.sub(r"\s+", " ", s).lower()
    s = re.sub(r"^(?:a|an|the)\s+", "", s)
    return s or None


def answer_span(text: str | None, chain: Sequence[str] = DEFAULT_CHAIN) -> Span | None:
    """Where the first extractor of `chain` that finds an answer found it (the dashboard marks it)."""
    if not text:
        return None
    for name in chain:
        span = EXTRACTORS[name](text)
        if span is not None and normalise(text[span[0]:span[1]]) is not None:
            return span
    return None


def extract_answer(text: str | None, chain: Sequence[str] = DEFAULT_CHAIN) -> str | None:
    """The normalised answer found by the first extractor of `chain` that finds one, else None."""
    span = answer_span(text, chain)
    return normalise(text[span[0]:span[1]]) if span is not None and text is not None else None
