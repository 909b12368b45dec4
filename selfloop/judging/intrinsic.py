"""The label-free signals of 2025 research, as pure functions of what the store holds: each gives every sample a
score (a `judgments` row of its kind) that `judge.reward` can make the reward every algorithm trains on.

self_certainty (Intuitor: Zhao et al. 2025, "Learning to Reason without External Rewards", arXiv 2505.19590; its
    official code in the Intuitor repository's TRL and verl forks). A response's score is the mean over its tokens of
    KL(U || p(. | x, y<t)), how far each next-token distribution is from uniform:
        SC(y | x) = (1/|y|) sum_t KL(U || p_t) = (1/|y|) sum_t [ -log V - (1/V) sum_j log p_tj ]
    computed, as the official code does, as logsumexp(z_t) - mean_j z_tj (= KL + log V: the constant changes no
    advantage and no ranking). The distribution is the policy's at temperature 1, from the very logits each token
    was sampled with (`samples.token_self_certainties`).
entropy (entropy minimization: Agarwal et al. 2025, "The Unreasonable Effectiveness of Entropy Minimization in LLM
    Reasoning", arXiv 2505.15134: EM-RL's reward). The negative mean token entropy:
        R(y | x) = -(1/|y|) sum_t H(p_t),  H(p) = -sum_j p_j log p_j
    (EM-FT, the entropy itself as a loss on the samples' tokens, is the algorithm `emft`: no reward, no judge.)
semantic_entropy (EMPO: Zhang et al. 2025, "Right Question is Already Half the Answer: Fully Unsupervised LLM
    Reasoning Incentivization", arXiv 2504.05812; official code QingyangZhang/EMPO, trl/src/open_r1/rewards.py).
    A prompt's samples are clustered by meaning; for a family with value answers, by the answer the vote's extractor
    reads (as the official math reward clusters by the verified-equal final answer). A sample's reward is its
    cluster's probability p_c = |c| / N; a sample with no answer gets 0. The prompt's semantic entropy
    H = -sum_c p_c log p_c decides whether it is trained on at all: the official code gives every sample 0 when
    H >= log N (every answer different); the paper describes a band, both ends: prompts with H below
    `band_low * log N` or at or above `band_high * log N` get no reward here (defaults 0 and 1: the official code).
cross_view (Co-rewarding: "Co-rewarding: Stable Self-supervised RL for Eliciting Reasoning in LLMs", arXiv
    2508.00410, its data-side view). Each prompt is asked again in another training wording of its task family (the
    paraphrase CoIN uses); the majority answer of the paraphrase's own samples is the label of the original's
    samples, and a sample's reward is 1 when it agrees with it, else 0. One view's majority cannot reinforce itself:
    the other view has to agree. Departure: the paper rewards both views symmetrically and trains on both; here the
    paraphrase's samples are drawn to judge (seeded, stored in the judgment's details), not trained on.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

INTRINSIC = ("self_certainty", "entropy", "semantic_entropy", "cross_view")


def mean(values: Sequence[float] | None) -> float | None:
    return sum(values) / len(values) if values else None


def self_certainty(token_certainties: Sequence[float] | None) -> float | None:
    """Intuitor's score of one response: the mean of its tokens' self-certainty."""
    return mean(token_certainties)


def negative_entropy(token_entropies: Sequence[float] | None) -> float | None:
    """EM-RL's reward of one response: minus the mean of its tokens' entropy."""
    m = mean(token_entropies)
    return None if m is None else -m


def semantic_clusters(answers: Sequence[str | None]) -> tuple[list[float], float]:
    """Per sample, its cluster's probability (a sample without an answer: its own cluster, reward 0 by the official
    rule), and the prompt's semantic entropy over all N samples' clusters."""
    n = len(answers)
    if n == 0:
        return [], 0.0
    keys = [a if a is not None else f"\0none{i}" for i, a in enumerate(answers)]
    counts = Counter(keys)
    probs = [counts[k] / n for k in keys]
    entropy = -sum((c / n) * math.log(c / n) for c in counts.values())
    return [0.0 if a is None else p for a, p in zip(answers, probs)], entropy


def in_band(entropy: float, n: int, low: float, high: float) -> bool:
    """EMPO's filter: the prompt is trained on when low * log N <= H < high * log N."""
    top = math.log(n) if n > 1 else 0.0
    return low * top <= entropy < high * top if top > 0 else False


def cross_view(answers: Sequence[str | None], other_view: Sequence[str | None]) -> tuple[list[float], str | None]:
    """Each sample's agreement with the other view's majority answer (ties: the answer seen first; no answer in the
    other view: no label, every reward 0)."""
    counted = Counter(a for a in other_view if a is not None)
    if not counted:
        return [0.0 for _ in answers], None
    top = max(counted.values())
    label = next(a for a in other_view if a is not None and counted[a] == top)
    return [1.0 if a is not None and a == label else 0.0 for a in answers], label


def per_prompt_unit(scores: Sequence[float | None]) -> list[float | None]:
    """Scores of one prompt's samples mapped to [0, 1] (min-max within the prompt; all equal: 0.5), for signals
    without a natural scale (self-certainty, negative entropy) where a judge's points or a vote's 0/1 are read:
    ranking-based and group-normalised algorithms see the same order and the same advantages."""
    known = [s for s in scores if s is not None]
    if not known:
        return [None for _ in scores]
    lo, hi = min(known), max(known)
    return [None if s is None else (0.5 if hi == lo else (s - lo) / (hi - lo)) for s in scores]
