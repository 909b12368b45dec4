"""The label-free signals of 2025 research (judging/intrinsic.py): each formula against hand-computed values, the
hf engine's per-token statistics recorded while sampling against the same computed teacher-forced, and each signal
as the reward of a tiny loop."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from selfloop.judging import intrinsic
from selfloop.models.logprobs import distribution_stats


def test_distribution_stats_by_hand() -> None:
    """Logits (0, ln 3): p = (1/4, 3/4). H = -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.5623. Self-certainty as Intuitor's code
    computes it, logsumexp(z) - mean(z) = ln 4 - ln 3 / 2 = 0.8370 = KL(U || p) + ln 2, where
    KL(U || p) = 1/2 ln(1/2 / 1/4) + 1/2 ln(1/2 / 3/4) = 0.1438. A uniform distribution: H = ln V, SC = 0 + ln V."""
    entropy, certainty = distribution_stats(torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0]]))
    assert entropy.tolist() == pytest.approx([0.5623351, math.log(2)], abs=1e-6)
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert certainty.tolist() == pytest.approx([kl + math.log(2), math.log(2)], abs=1e-6)


def test_the_scores_by_hand() -> None:
    assert intrinsic.self_certainty([1.0, 2.0, 3.0]) == 2.0 and intrinsic.self_certainty([]) is None
    assert intrinsic.negative_entropy([0.5, 1.5]) == -1.0
    # EMPO: answers (5, 5, 7, None): clusters {5: 2, 7: 1, none: 1} of 4: probabilities 1/2, 1/2, 1/4 and 0 for the
    # sample without an answer (the official rule); H = -(1/2 ln 1/2 + 2 * 1/4 ln 1/4) = 1.0397.
    probs, entropy = intrinsic.semantic_clusters(["5", "5", "7", None])
    assert probs == [0.5, 0.5, 0.25, 0.0] and entropy == pytest.approx(1.0397208)
    assert intrinsic.in_band(entropy, 4, 0.0, 1.0)  # below ln 4 = 1.386: trained on
    assert not intrinsic.in_band(math.log(4), 4, 0.0, 1.0)  # every answer different: dropped (the official rule)
    assert not intrinsic.in_band(0.0, 4, 0.1, 1.0) and intrinsic.in_band(0.0, 4, 0.0, 1.0)  # a band's lower end
    # Co-rewarding: the other view's majority (7, 7, 5) is 7: samples agreeing get 1.
    assert intrinsic.cross_view(["7", "5", None], ["7", "7", "5"]) == ([1.0, 0.0, 0.0], "7")
    assert intrinsic.cross_view(["7"], [None, None]) == ([0.0], None)
    assert intrinsic.per_prompt_unit([2.0, None, 4.0, 3.0]) == [0.0, None, 1.0, 0.5]
    assert intrinsic.per_prompt_unit([1.0, 1.0]) == [0.5, 0.5]


def test_recorded_statistics_equal_teacher_forced_ones(tiny_model) -> None:
    """What the hf engine records from the logits it sampled with is what a forward pass over the finished sample
    computes: the signal needs no second model call, and the vLLM engines' fallback gives the same numbers."""
    from selfloop.engines.base import Sampling
    from selfloop.engines.hf import HFEngine

    engine = HFEngine(tiny_model.path, batch_size=4)
    chats = [[{"role": "user", "content": "What is 2 + 3?"}], [{"role": "user", "content": "Name a colour."}]]
    outs = engine.generate(chats, Sampling(n=2, temperature=1.0, max_new_tokens=6, token_stats=True), seeds=[[1, 2], [3, 4]])
    # Asked for nothing (evaluation, judging), it records nothing, and samples the same tokens.
    plain = engine.generate(chats, Sampling(n=2, temperature=1.0, max_new_tokens=6), seeds=[[1, 2], [3, 4]])
    assert [[c.token_ids for c in cs] for cs in plain] == [[c.token_ids for c in cs] for cs in outs]
    assert all(c.token_entropies is None and c.token_self_certainties is None for cs in plain for c in cs)
    flat = [(chat, c) for chat, cs in zip(chats, outs) for c in cs]
    forced = engine.token_stats([chat for chat, _ in flat], [c.token_ids for _, c in flat])
    for (_, c), (entropies, certainties) in zip(flat, forced):
        assert len(c.token_entropies) == len(c.token_ids) == len(entropies)
        assert c.token_entropies == pytest.approx(entropies, abs=2e-4)
        assert c.token_self_certainties == pytest.approx(certainties, abs=2e-4)
    engine.close()


@pytest.mark.integration
@pytest.mark.parametrize("signal", intrinsic.INTRINSIC)
def test_each_signal_is_the_reward_a_loop_trains_on(signal: str, tmp_path: Path) -> None:
    """One iteration of the tiny loop, TTRL trained on the signal: every sample has the signal's judgment, and the
    vote score TTRL reads is that signal's reward (the judged value kept in the details)."""
    from sqlalchemy import create_engine, text

    from tests.conftest import selfloop_cli, tiny_yaml

    url = f"sqlite:///{tmp_path / 's.db'}"
    config = tiny_yaml(tmp_path, url, loop__max_iterations=1, train__algorithm="ttrl",
                       judge__signals=["vote", "confidence", signal], judge__reward=signal,
                       generation__tasks={"kind": "arithmetic", "levels": [1], "phrasing": "seen"})
    out = selfloop_cli("run", "--config", str(config))
    assert out.returncode == 0, out.stderr[-3000:]
    engine = create_engine(url)
    with engine.connect() as conn:
        samples = conn.execute(text("SELECT count(*), count(token_entropies) FROM samples")).one()
        signals = conn.execute(text(f"SELECT sample_id, score, parse_ok FROM judgments WHERE kind = '{signal}'")).all()
        votes = conn.execute(text("SELECT sample_id, reward, reward_mode, score FROM judgments WHERE kind = 'vote'")).all()
    engine.dispose()
    assert samples[0] == samples[1] == len(signals) > 0  # recorded at rollout for every sample
    mine = {sid: (score if ok else None) for sid, score, ok in signals}
    for sample_id, score, mode, judged in votes:  # the signal's reward beside the vote's judged score
        assert mode == signal and judged in (0.0, 1.0)
        if signal in ("semantic_entropy", "cross_view"):
            assert score == (None if mine[sample_id] is None else pytest.approx(mine[sample_id]))
        else:
            assert score is None or 0.0 <= score <= 1.0
