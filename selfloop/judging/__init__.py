"""Self-judging signals: the LLM judge's score, majority vote over extracted answers, confidence.

The small public API: `parse_score`, `extract_answer`, `majority_vote`.
"""

from selfloop.families.answers import extract_answer
from selfloop.judging.scores import parse_score
from selfloop.judging.vote import majority_vote, vote

__all__ = ["extract_answer", "majority_vote", "parse_score", "vote"]
