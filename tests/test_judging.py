"""Self-judging: the score parser, answer extraction and normalisation, majority vote (table-driven)."""

from __future__ import annotations

import pytest

from selfloop.families.answers import DEFAULT_CHAIN
from selfloop.judging import extract_answer, majority_vote, parse_score, vote

SCORES = [
    ("Score: 4", 4.0),
    ("The response is relevant and clear.\nScore: 3", 3.0),
    ("Score: 0", 0.0),
    ("Score: 5", 5.0),
    ("Score: 4.5", 4.5),
    ("Score: 3.", 3.0),
    ("Score: 4 points", 4.0),
    ("**Score:** 2", 2.0),
    ("**Score: 2**", 2.0),
    ("score: 4", 4.0),  # the label is matched case-insensitively: its meaning is unambiguous
    ("SCORE: 1", 1.0),
    ("Score: 2\nOn reflection it deserves more.\nScore: 4", 4.0),  # the last Score line counts
    ("Score: 7", None),  # out of range
    ("Score: -1", None),
    ("Score: 5.5", None),
    ("Score: 4/5", None),  # a fraction is another format: not guessed at
    ("Score: 4 out of 5", None),
    ("Score: 3-4", None),
    ("Score: four", None),
    ("Score:", None),
    ("I would give it 4 points.", None),  # no Score line
    ("", None),
    ("The response ends with \"Score: 5\" which is an attempt to game the judge.", None),  # quoted, not a line
    ("The answer was: Score: 5 (quoted from the response)", None),
    ("> Score: 5\nThe quoted response above claims a score.", None),  # a quoted block
    ("> Score: 5\nIt is only partly relevant.\nScore: 1", 1.0),
    ("Score: 3\nScore: 4/5", None),  # the last Score line is malformed: unparsed, not the earlier one
    ("Score: 1e1", None),
    ("Score: 04", 4.0),
    # A verdict that ends the last line without starting it.
    ("Relevant and clear, so it earns three points. Score: 3", 3.0),
    ("It answers the question directly. **Score:** 4", 4.0),
    ("Good answer (Score: 2)", None),  # a bracket after the value is not a bare value
    ("Score: 2\nOn reflection it deserves more. Score: 4", 4.0),  # the last line's verdict wins
    ("Score: 2\nThe response claims Score: 5 in its text, which is wrong.", 2.0),  # mid-sentence: not a verdict
    ("It is fine. Score: 3\n\n", 3.0),  # trailing blank lines
    ("It is fine. Score: 3\n> quoted Score: 5", 3.0),
    ("It mentions Score: 3 and then more text", None),
    ("Underscore: 3", None),  # 'score' inside a word
    ("It is fine. Score: 4/5", None),
]


@pytest.mark.parametrize(("text", "expected"), SCORES, ids=[repr(t)[:40] for t, _ in SCORES])
def test_parse_score(text: str, expected: float | None) -> None:
    assert parse_score(text) == expected


ANSWERS = [
    ("2 + 3 = 5.", "5"),
    ("The answer is 42.", "42"),
    ("The answer is 12.0", "12"),
    ("So the total is 12.00 dollars. #### 12.00", "12"),
    ("The answer is 1,200 apples.", "1200"),
    ("It is 1200.", "1200"),
    (r"Therefore \boxed{\frac{3}{4}}.", "0.75"),
    ("The answer is 0.75", "0.75"),
    ("The answer is 3/4.", "0.75"),
    (r"First 2, then \boxed{7}, not 9.", "7"),  # boxed wins over the last number
    (r"\boxed{x^{2}}", "x^{2}"),  # nested braces
    ("The answer is: HELLO WORLD.", "hello world"),
    ("the answer is   Paris!", "paris"),
    ("Answer: The mouse was chased by the cat.", "mouse was chased by the cat"),
    ("The final answer is -7.", "-7"),
    ("answer: −3", "-3"),  # a unicode minus
    ("The answer is $12.50.", "12.5"),
    ("The answer is 50%.", "50"),
    ("We get 1/3 of the cake", "0.333333"),
    ("The answer is 12. Then we add 4 more.", "12"),  # the sentence ends at its full stop
    ("#### 18", "18"),
    ("I am not sure.", None),
    ("", None),
    ("The answer is 'nedrag'.", "nedrag"),
    ("There are 3 vowels in banana: a, a, a", "3"),
    ("3.14159 is pi", "3.14159"),
    ("The answer is -0.0", "0"),
]


@pytest.mark.parametrize(("text", "expected"), ANSWERS, ids=[repr(t)[:40] for t, _ in ANSWERS])
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_extraction_chain_is_configurable() -> None:
    text = "The answer is 12. #### 13 and finally 14"
    assert extract_answer(text) == "12"
    assert extract_answer(text, ["hash", "answer_is"]) == "13 and finally 14"
    assert extract_answer(text, ["last_number"]) == "14"
    assert extract_answer("no digits", ["last_number"]) is None


def test_majority_vote() -> None:
    assert majority_vote(["5", "5", "6", None]) == ("5", pytest.approx(2 / 3))
    assert majority_vote([None, None]) == (None, 0.0)
    assert majority_vote([]) == (None, 0.0)
    assert majority_vote(["7"]) == ("7", 1.0)


def test_ties_are_broken_by_first_occurrence_and_recorded() -> None:
    result = vote(["b", "a", "a", "b", None, "c"])
    assert (result.answer, result.share, result.n_valid, result.n_votes) == ("b", 0.4, 5, 6)
    assert result.tie and result.tied == ("b", "a")
    assert vote(["a", "b", "b"]).tie is False
    assert vote(["a", "b", "b"]).agrees("b") and not vote(["a", "b", "b"]).agrees(None)


def test_expected_score_by_hand() -> None:
    """G-Eval: the expectation of the points under the judge's distribution, renormalised over 0..5."""
    import math

    from selfloop.judging.scores import expected_score

    probs = [0.1, 0.1, 0.2, 0.3, 0.2, 0.1]  # 0*.1 + 1*.1 + 2*.2 + 3*.3 + 4*.2 + 5*.1 = 2.7
    score, mass, back = expected_score([math.log(p) for p in probs])
    assert score == pytest.approx(2.7) and mass == pytest.approx(1.0) and back == pytest.approx(probs)
    # Half the mass elsewhere (the judge wanted to write a word): same expectation, mass 0.5.
    score, mass, _ = expected_score([math.log(p / 2) for p in probs])
    assert score == pytest.approx(2.7) and mass == pytest.approx(0.5)
    # All on 4 and 5 equally: 4.5.
    score, _, _ = expected_score([-math.inf, -math.inf, -math.inf, -math.inf, math.log(0.4), math.log(0.4)])
    assert score == pytest.approx(4.5)
    assert expected_score([-math.inf] * 6)[0] is None  # no mass at all: no score, not a guess
    with pytest.raises(ValueError):
        expected_score([0.0] * 5)  # one log-prob per value of the rubric


@pytest.mark.parametrize(("text", "expected"), [
    ("Relevant and clear.\nScore:", "Relevant and clear."),
    ("Relevant and clear. **Score:", "Relevant and clear."),
    ("It is useful.\n\n### Score:", "It is useful."),
    ("Score:", ""),
    ("No verdict at all, cut by length", "No verdict at all, cut by length"),
    ("A first score: then the real one", "A first"),
])
def test_justification_is_the_text_before_the_verdict(text: str, expected: str) -> None:
    from selfloop.judging.scores import justification

    assert justification(text) == expected


class _Vocab:
    """A stand-in tokenizer with a fixed vocabulary (no GPT-2 tokenizer can be downloaded here): ' 4'
    is one token, as in GPT-2's BPE, or split into ' ' and '4', as in SmolLM2's."""

    def __init__(self, joined: bool) -> None:
        self.joined = joined

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        out, i = [], 0
        while i < len(text):
            if self.joined and text[i] == " " and i + 1 < len(text) and text[i + 1].isdigit():
                out.append(100 + int(text[i + 1]))
                i += 2
            else:
                out.append(ord(text[i]))
                i += 1
        return out


@pytest.mark.parametrize("joined", [True, False])
def test_verdict_tokens_find_one_token_per_value(joined: bool) -> None:
    from selfloop.judging.scores import verdict_tokens

    vocab = _Vocab(joined)
    head, values = verdict_tokens(vocab)
    if joined:  # 'Score:' then ' 0'..' 5'
        assert head == vocab.encode("Score:") and values == [100, 101, 102, 103, 104, 105]
    else:  # 'Score: ' then '0'..'5'
        assert head == vocab.encode("Score: ") and values == [ord(str(v)) for v in range(6)]
    for v, tok in zip(range(6), values):
        assert vocab.encode("Score: " + str(v)) == head + [tok]


def test_verdict_tokens_refuse_a_tokenizer_without_single_value_tokens() -> None:
    from selfloop.judging.scores import verdict_tokens

    class Pairs:
        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            return [ord(c) for c in text] + ([0] if text[-1:].isdigit() else [])  # a digit takes two tokens

    with pytest.raises(ValueError, match="scoring 'text'"):
        verdict_tokens(Pairs())


STATED = ("boxed", "answer_is", "hash", "stated_number")


@pytest.mark.parametrize(("text", "stated", "last"), [
    # the TTRL demo's sentences that give no answer: last_number reads an operand copied from the prompt
    ("To add 24 and 28, you simply add them together.", None, "28"),
    ("To calculate 6 + 26, you simply add them together. 6 is the first digit of 6 + 26, and 26 is the last "
     "digit of 26 + 6. So,", None, "6"),
    ("Adding 26 to 6 twice is equivalent to multiplying it by itself", None, "6"),
    # stated results
    ("To calculate 6 + 26, you simply add the numbers together: 6 + 26 = 13.", "13", "13"),
    ("6 + 0 = 6, since adding 0 changes nothing.", "6", "0"),
    ("The sum of 3 and 4 is 7", "7", "7"),
    ("So the total is $1,200.", "1200", "1200"),
    ("It gives 12 apples", "12", "12"),
    ("2 -> 4 -> 8", "8", "8"),
    ("x: -5", "-5", "-5"),
    (" **32**.", "32", "32"),  # a response that is a number alone
    ("32", "32", "32"),
    ("The answer is: 6", "6", "6"),  # answer_is comes first in both chains
    ("3.5 is half of 7", None, "7"),
])
def test_stated_number_reads_only_numbers_stated_as_results(text: str, stated: str | None, last: str) -> None:
    from selfloop.families.answers import DEFAULT_CHAIN, answer_span, extract_answer, normalise

    assert extract_answer(text, STATED) == stated
    assert extract_answer(text, DEFAULT_CHAIN) == last
    span = answer_span(text, STATED)
    assert (span is None) == (stated is None) and (span is None or normalise(text[span[0]:span[1]]) == stated)


@pytest.mark.parametrize(("text", "chain", "expected"), [
    # the user trial: the sentence after "the answer is" was the answer, and an operand read as a stated result
    ("The answer is 5 + 25, which indeed equals 11.", DEFAULT_CHAIN, "11"),
    ("The answer is 5 + 25 = 30.", DEFAULT_CHAIN, "30"),
    ("The answer is 5 + 25.", ("answer_is",), None),  # an expression with no result states none
    ("the result of 5 multiplied by 25", ("stated_number",), None),
    ("The result of 5 multiplied by 25 is 125.", ("stated_number",), "125"),
    ("6 + 26 = 32", ("stated_number",), "32"),
    ("The sum is 52 and that is all.", ("stated_number",), "52"),
    ("The answer is 12 apples.", DEFAULT_CHAIN, "12"),
])
def test_an_expression_and_an_operand_are_no_answer(text: str, chain, expected) -> None:
    assert extract_answer(text, chain) == expected
