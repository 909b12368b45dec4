"""Reward functions for tests (judge.reward: function): the random tiny model is never right and its votes rarely
agree, so the vote-trained algorithms get a reward that varies within a prompt's samples."""

from __future__ import annotations


def has_digit(prompts: list[str], completions: list[str], answers: list[str | None]) -> list[float]:
    """1 for a completion with a digit in it, else 0: binary, as TTRL's and ReST-EM's rewards are."""
    return [1.0 if any(ch.isdigit() for ch in c) else 0.0 for c in completions]
