"""Each loss against values computed by hand from its paper's formula (the maths is in each docstring)."""

from __future__ import annotations

import math

import pytest
import torch

from selfloop.algorithms import dpo, orpo, rest, rlsc, rrhf, spin, ttrl


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_dpo_forms_by_hand() -> None:
    """h = (pc - rc) - (pr - rr). Pair 1: (-1 + 1.5) - (-3 + 2.5) = 0.5 + 0.5 = 1. Pair 2: 0.
    sigmoid, beta 0.1: -log sigma(0.1) = log(1 + e^-0.1) = 0.644397; -log sigma(0) = log 2.
    ipo: (1 - 1/(2*0.1))^2 = (1 - 5)^2 = 16; (0 - 5)^2 = 25.   hinge: max(0, 1 - 0.1) = 0.9; 1."""
    args = (t(-1.0, -2.0), t(-3.0, -2.0), t(-1.5, -2.0), t(-2.5, -2.0))
    assert dpo.loss(*args, beta=0.1).tolist() == pytest.approx([math.log(1 + math.exp(-0.1)), math.log(2)], abs=1e-6)
    assert dpo.loss(*args, beta=0.1, kind="ipo").tolist() == pytest.approx([16.0, 25.0], abs=1e-5)
    assert dpo.loss(*args, beta=0.1, kind="hinge").tolist() == pytest.approx([0.9, 1.0], abs=1e-6)
    with pytest.raises(ValueError):
        dpo.loss(*args, kind="softmax")


def test_dpo_equal_logps_and_large_margins() -> None:
    """Equal log-probs give h = 0: log 2. h = +-1e4 with beta 1: about 0 and about 1e4, never inf or nan."""
    z = t(-5.0)
    assert dpo.loss(z, z, z, z).item() == pytest.approx(math.log(2))
    big = dpo.loss(t(0.0, -1e4), t(-1e4, 0.0), t(0.0, 0.0), t(0.0, 0.0), beta=1.0)
    assert torch.isfinite(big).all()
    assert big[0].item() == pytest.approx(0.0, abs=1e-6) and big[1].item() == pytest.approx(1e4, rel=1e-6)


def test_spin_is_dpo_with_real_as_chosen() -> None:
    """SPIN: -log sigma(beta * [(p_real - r_real) - (p_gen - r_gen)]). (-1 - -2) - (-4 - -3) = 2, beta 0.5:
    -log sigma(1) = log(1 + e^-1) = 0.313262."""
    assert spin.loss(t(-1.0), t(-4.0), t(-2.0), t(-3.0), beta=0.5).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert spin.loss(t(-1.0), t(-4.0), t(-2.0), t(-3.0), beta=0.5, kind="hinge").item() == pytest.approx(0.0)


def test_orpo_by_hand() -> None:
    """p_c = e^-0.5 = 0.606531, log odds = -0.5 - ln(0.393469) = 0.432752;
    p_r = e^-1 = 0.367879, log odds = -1 - ln(0.632121) = -0.541325; difference 0.974077.
    L = 0.5 - 0.1 * log sigma(0.974077) = 0.5 + 0.1 * ln(1 + e^-0.974077) = 0.532030."""
    lo_c = -0.5 - math.log(1 - math.exp(-0.5))
    lo_r = -1.0 - math.log(1 - math.exp(-1.0))
    expected = 0.5 + 0.1 * math.log(1 + math.exp(-(lo_c - lo_r)))
    assert expected == pytest.approx(0.532030, abs=1e-6)
    assert orpo.loss(t(-0.5), t(-1.0), lam=0.1).item() == pytest.approx(expected, abs=1e-5)


def test_orpo_edges_stay_finite() -> None:
    """A chosen mean log-prob of ~0 (p -> 1) makes log(1 - p) -> -inf: it is clamped, not nan."""
    out = orpo.loss(t(0.0, -1e-9, -50.0), t(-50.0, -1e-9, 0.0))
    assert torch.isfinite(out).all()
    assert orpo.loss(t(-2.0), t(-2.0), lam=1.0).item() == pytest.approx(2.0 + math.log(2), abs=1e-6)


def test_rlsc_by_hand_and_its_gradient() -> None:
    """-(e^old + alpha) * logp: old -1, logp -2: 2 * (0.367879 + 0.1) = 0.935759;
    old -20, logp -10: 10 * (2.06e-9 + 0.1) = 1.0000000206. d/dlogp = -(e^old + alpha); none to old."""
    logps, old = t(-2.0, -10.0).requires_grad_(), t(-1.0, -20.0).requires_grad_()
    out = rlsc.loss(logps, old, alpha=0.1)
    assert out.tolist() == pytest.approx([2 * (math.exp(-1) + 0.1), 10 * (math.exp(-20) + 0.1)], abs=1e-6)
    out.sum().backward()
    assert logps.grad.tolist() == pytest.approx([-(math.exp(-1) + 0.1), -(math.exp(-20) + 0.1)], abs=1e-6)
    assert old.grad is None or torch.all(old.grad == 0)


def test_ttrl_advantages_by_hand() -> None:
    """Group 0 rewards (1, 0, 0): mean 1/3, population std sqrt(2/9) = 0.471405 -> (1.414211, -0.707105, -0.707105).
    Group 1 (1, 1): all equal -> 0. Group 2 (1, 0): mean 0.5, std 0.5 -> (+-0.999998)."""
    adv = ttrl.advantages(t(1, 0, 0, 1, 1, 1, 0), torch.tensor([0, 0, 0, 1, 1, 2, 2]))
    s = math.sqrt(2 / 9)
    assert adv.tolist() == pytest.approx([(2 / 3) / (s + 1e-6), (-1 / 3) / (s + 1e-6), (-1 / 3) / (s + 1e-6), 0, 0,
                                          0.5 / (0.5 + 1e-6), -0.5 / (0.5 + 1e-6)], abs=1e-6)
    assert ttrl.advantages(t(0, 0, 0), torch.tensor([4, 4, 4])).tolist() == [0, 0, 0]


def test_ttrl_clipped_loss_by_hand() -> None:
    """ratio 1.5, A = +1: min(1.5, 1.2) = 1.2 -> -1.2;  A = -1: min(-1.5, -1.2) = -1.5 -> 1.5.
    ratio 0.5, A = +1: min(0.5, 0.8) = 0.5 -> -0.5;  A = -1: min(-0.5, -0.8) = -0.8 -> 0.8.
    ratio 1 (equal log-probs): -A."""
    old = t(-2.0, -2.0, -2.0, -2.0, -3.0)
    logps = old + t(math.log(1.5), math.log(1.5), math.log(0.5), math.log(0.5), 0.0)
    adv = t(1.0, -1.0, 1.0, -1.0, 0.7)
    assert ttrl.loss(logps, old, adv, clip_eps=0.2).tolist() == pytest.approx([-1.2, 1.5, -0.5, 0.8, -0.7], abs=1e-5)


def test_ttrl_kl_term() -> None:
    """k3 estimator exp(ref - logp) - (ref - logp) - 1: 0 at logp = ref; ref - logp = 1: e - 2 = 0.718282."""
    logps, ref = t(-1.0, -2.0), t(-1.0, -1.0)
    out = ttrl.loss(logps, logps, torch.zeros(2), ref_logps=ref, kl_coef=0.5)
    assert out.tolist() == pytest.approx([0.0, 0.5 * (math.e - 2)], abs=1e-6)


def test_rest_loss_by_hand() -> None:
    """-logp / |y|: (-6, 3 tokens) -> 2; (-1, 4 tokens) -> 0.25."""
    assert rest.loss(t(-6.0, -1.0), t(3.0, 4.0)).tolist() == pytest.approx([2.0, 0.25])


def test_rrhf_by_hand() -> None:
    """Three candidates, judge rewards r = (3, 1, 2), token log-probs of lengths 2, 1, 4:
    p = (-2/2, -0.5/1, -8/4) = (-1, -0.5, -2). Pairs by reward (better, worse): (0,1): max(0, -0.5 + 1) = 0.5;
    (0,2): max(0, -2 + 1) = 0; (2,1): max(0, -0.5 + 2) = 1.5 -> L_rank = 2.0. The best (r = 3) is candidate 0:
    L_sft = 2/2 = 1.0. w = 1: L = 3.0; w = 100: 201.0."""
    logps = [torch.tensor([-1.5, -0.5]), torch.tensor([-0.5]), torch.tensor([-2.0, -2.0, -2.0, -2.0])]
    rewards = torch.tensor([3.0, 1.0, 2.0])
    total, ranking, sft = rrhf.loss(logps, rewards, weight=1.0)
    assert ranking.item() == pytest.approx(2.0) and sft.item() == pytest.approx(1.0) and total.item() == pytest.approx(3.0)
    assert rrhf.loss(logps, rewards, weight=100.0)[0].item() == pytest.approx(201.0)
    # length_penalty 0: summed log-probs (-2, -0.5, -8): (0,1) 1.5, (0,2) 0, (2,1) 7.5 -> 9.0
    assert rrhf.loss(logps, rewards, length_penalty=0.0)[1].item() == pytest.approx(9.0)
    # equal rewards make no pair; a ranking already right costs nothing but the SFT term
    assert rrhf.rank_loss(torch.tensor([-1.0, -0.5]), torch.tensor([2.0, 2.0])).item() == 0.0
    assert rrhf.loss([torch.tensor([-0.2]), torch.tensor([-3.0])], torch.tensor([2.0, 1.0]))[1].item() == 0.0


def test_rrhf_gradient_pushes_the_better_candidate_up() -> None:
    better, worse = torch.tensor([-2.0], requires_grad=True), torch.tensor([-1.0], requires_grad=True)
    total, _, _ = rrhf.loss([better, worse], torch.tensor([5.0, 1.0]))
    total.backward()
    assert better.grad.item() == pytest.approx(-2.0)  # ranking (-1) and SFT (-1) both raise it
    assert worse.grad.item() == pytest.approx(1.0)  # the hinge lowers the worse one


def test_rso_loss_is_dpos_normalised_hinge_with_gamma() -> None:
    from selfloop.algorithms import rso
    from selfloop.algorithms.items import TrainItem
    from selfloop.algorithms.rso_config import RSOConfig

    # D = (-1 - -2) - (-3 - -2) = 2; hinge-norm max(0, 1 - 0.05 * 2) = 0.9; sigmoid-norm -log sigma(0.1) = 0.64440
    item = TrainItem(example_id=1, prompt_id=1, prompt=[1], completion=[2], rejected=[3], ref_logp=-2.0,
                     ref_rejected_logp=-2.0)
    logps = {2: -1.0, 3: -3.0}

    def policy(prompts, completions):
        return [torch.tensor([logps[c[0]]]) for c in completions]

    assert rso.batch_loss([item], policy, RSOConfig())[0].item() == pytest.approx(0.9)
    assert rso.batch_loss([item], policy, RSOConfig(loss="sigmoid"))[0].item() == pytest.approx(math.log1p(math.exp(-0.1)))
    assert rso.batch_loss([item], policy, RSOConfig(gamma=1.0))[0].item() == pytest.approx(0.0)  # 1 - 2 < 0


def test_raft_loss_is_the_token_mean_nll() -> None:
    from selfloop.algorithms import raft
    from selfloop.algorithms.items import TrainItem
    from selfloop.algorithms.raft_config import RAFTConfig

    items = [TrainItem(example_id=1, prompt_id=1, prompt=[1], completion=[2, 3]),
             TrainItem(example_id=2, prompt_id=1, prompt=[1], completion=[4])]

    def policy(prompts, completions):
        return [torch.tensor([-1.0, -3.0]), torch.tensor([-0.5])]

    assert raft.batch_loss(items, policy, RAFTConfig())[0].item() == pytest.approx((2.0 + 0.5) / 2)  # (4/2 + 0.5/1) / 2


def test_rtuning_target_entropy_and_loss_by_hand() -> None:
    from selfloop.algorithms import rtuning
    from selfloop.algorithms.items import TrainItem
    from selfloop.algorithms.rtuning_config import RTuningConfig
    from selfloop.judging.vote import answer_entropy

    cfg = RTuningConfig()
    assert rtuning.target("42", True, cfg) == ("42. Are you sure you accurately answered the question based on your "
                                               "internal knowledge? I am sure.")
    assert rtuning.target("42", False, cfg).endswith("knowledge? I am unsure.")
    # counts {a: 2, b: 1, None: 1}: -(0.5 ln 0.5 + 2 * 0.25 ln 0.25) = 1.0397
    assert answer_entropy(["a", "a", "b", None]) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(4))
    assert answer_entropy(["a"] * 5) == 0.0
    assert rtuning.lower_half([0.3, 0.1, 0.3, 0.9, 0.0]) == [False, True, False, False, True]  # floor(5/2) = 2
    assert rtuning.lower_half([0.5, 0.5, 0.5, 0.5]) == [True, True, False, False]  # ties: in order
    items = [TrainItem(example_id=1, prompt_id=1, prompt=[1], completion=[2, 3], reward=1.0),
             TrainItem(example_id=2, prompt_id=2, prompt=[1], completion=[4], reward=0.0)]

    def policy(prompts, completions):
        return [torch.tensor([-1.0, -3.0]), torch.tensor([-0.5])]

    loss, metrics = rtuning.batch_loss(items, policy, cfg)
    assert loss.item() == pytest.approx((2.0 + 0.5) / 2) and metrics["sure_share"] == 0.5


def test_rtuning_confidence_and_average_precision_by_hand() -> None:
    from selfloop.algorithms import rtuning

    # P(sure) / (P(sure) + P(unsure)) from log-probs: e^-1 / (e^-1 + e^-2) = 1 / (1 + e^-1)
    assert rtuning.confidences([-1.0], [-2.0])[0] == pytest.approx(1 / (1 + math.exp(-1)))
    assert rtuning.confidences([-1.0], [-1.0])[0] == pytest.approx(0.5)
    # Ranked 0.9 (right), 0.8 (wrong), 0.7 (right), 0.6 (wrong): P@1 = 1 at recall 1/2, P@3 = 2/3 at recall 1.
    assert rtuning.average_precision([0.9, 0.8, 0.7, 0.6], [True, False, True, False]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # A tie is one threshold: both items at once, precision 1/2 at recall 1.
    assert rtuning.average_precision([0.5, 0.5], [True, False]) == pytest.approx(0.5)
    assert rtuning.average_precision([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert rtuning.average_precision([0.2, 0.3], [False, False]) is None  # no right answer: undefined
    assert rtuning.average_precision([0.9, 0.1], [True, False]) == 1.0


def test_rtuning_held_out_reads_sure_and_unsure_after_the_response(tiny_model) -> None:
    """On the tiny model through the HF engine: the confidence equals one computed by hand from the model's
    log-probabilities after '{response}. {question} I am' of the first tokens of ' sure' and ' unsure' (the paper's
    reading), or of the whole words where their first tokens are the same."""
    from selfloop.algorithms import rtuning
    from selfloop.algorithms.rtuning_config import RTuningConfig
    from selfloop.engines.chat import user_chat
    from selfloop.engines.hf import HFEngine

    engine = HFEngine(tiny_model.path, batch_size=4)
    tok = engine.tokenizer
    chats = [user_chat("What is 2 + 3?"), user_chat("What is 7 + 1?")]
    responses, correct = ["5", "It is 9."], [True, False]
    for cfg, first in ((RTuningConfig(), True), (RTuningConfig(unsure="surely"), False)):
        words = [tok(f" {w}", add_special_tokens=False)["input_ids"] for w in (cfg.sure, cfg.unsure)]
        assert (words[0][0] != words[1][0]) == first
        out = rtuning.held_out_metrics(engine, chats, responses, correct, None, cfg)
        by_hand = []
        for chat, response in zip(chats, responses):
            prefix = tok(f"{response.rstrip('.')}. {cfg.question} I am", add_special_tokens=False)["input_ids"]
            logps = []
            for ids in words:
                ids = ids[:1] if first else ids
                logps.append(sum(engine.score([chat], [prefix + ids])[0][-len(ids):]))
            by_hand.append(math.exp(logps[0]) / (math.exp(logps[0]) + math.exp(logps[1])))
        assert out["mean_sure"] == pytest.approx(sum(by_hand) / 2, rel=1e-4)
        assert out["sure_ap"] == (1.0 if by_hand[0] > by_hand[1] else 0.5)
    engine.close()


def test_cut_loss_by_hand() -> None:
    """One negative (tokens p(.|x,j) = .5, .2; p(.|x) = .4, .3) and one positive (p = .8): the first token's ratio
    .5/.4 = 1.25 > 1.1 is flagged, the second's .2/.3 is not.
    A = -(ln .5 + ln .2 + ln .8)/3; B = (-ln(1 - .4) - ln .3)/2; L = (A + B)/2."""
    from selfloop.algorithms import cut

    ln = math.log
    judged = [torch.tensor([ln(0.5), ln(0.2)]), torch.tensor([ln(0.8)])]
    plain = [torch.tensor([ln(0.4), ln(0.3)], requires_grad=True)]
    a = -(ln(0.5) + ln(0.2) + ln(0.8)) / 3
    b = (-ln(0.6) - ln(0.3)) / 2
    value, metrics = cut.loss(judged, plain, [True, False], 1.1, 1.0)
    assert value.item() == pytest.approx((a + b) / 2) and metrics["flagged_share"] == 0.5
    value.backward()
    # d/dlp of -log(1 - e^lp) is e^lp / (1 - e^lp) > 0: descending lowers the flagged token's probability;
    # the unflagged one is plain cross-entropy (gradient -1), each scaled by 1/2 (the mean) and 1/2 (L's mean).
    assert plain[0].grad.tolist() == pytest.approx([0.25 * 0.4 / 0.6, -0.25])
    assert cut.loss(judged, [plain[0].detach()], [True, False], 1.1, 2.0)[0].item() == pytest.approx(
        (a + (-2 * ln(0.6) - ln(0.3)) / 2) / 2)
    assert cut.loss(judged, [plain[0].detach()], [True, False], 1.3, 1.0)[1]["flagged_share"] == 0.0
    only_positive, m = cut.loss([torch.tensor([ln(0.8)])], [], [False], 1.1, 1.0)
    assert only_positive.item() == pytest.approx(-ln(0.8)) and m["unlikelihood"] == 0.0
    # p(.|x) = 1 on a flagged token: 1 - p = 0 becomes 1e-5, as the official code does
    edge = cut.loss([torch.tensor([0.0])], [torch.tensor([-1.0])], [True], 1.1, 1.0)
    assert math.isfinite(edge[0].item())


def test_cut_justification_and_positive_draw() -> None:
    import random

    from selfloop.algorithms import cut

    assert cut.justification("The answer ignores the question.\nScore: 1") == "The answer ignores the question."
    assert cut.justification("Too short. Score: 2/5.") == "Too short."
    assert cut.justification("Off topic.\nScore:") == "Off topic."
    assert cut.justification("Score: 0") is None and cut.justification(None) is None
    assert cut.justification("It gets the score right.") == "It gets the score right."
    kept = cut.keep_positives(list(range(10)), 8, 0.25, random.Random(0))  # int(8 * .25) = 2 of 10, in order
    assert len(kept) == 2 and kept == sorted(kept)
    assert cut.keep_positives([1, 2], 8, 0.25, random.Random(0)) == [1, 2]


def test_cut_flags_the_tokens_a_judgment_makes_likelier_on_the_tiny_model(tiny_model) -> None:
    """batch_loss on the tiny model with a fixed judgment: its flagged share is the share of the response's tokens
    whose probability after the judged prompt exceeds 1.1 times that after the plain prompt, computed here apart."""
    from selfloop.algorithms import cut
    from selfloop.algorithms.cut_config import CUTConfig
    from selfloop.algorithms.items import TrainItem, fit
    from selfloop.engines.chat import completion_ids, prompt_ids, user_chat
    from selfloop.models.loading import load_causal_lm, load_tokenizer
    from selfloop.training.loop import policy_logps

    tok = load_tokenizer(tiny_model.path)
    model = load_causal_lm(tiny_model.path, torch.device("cpu"), torch.float32).eval()
    cfg = CUTConfig()
    x, y = "Name a colour.", "Blue is a colour and so is the sky at noon."
    judged_prompt = cfg.template.format(instruction=x, judgment="It names a colour but then rambles about the sky.")
    item = fit(TrainItem(example_id=1, prompt_id=1, prompt=prompt_ids(tok, user_chat(x)),
                         completion=completion_ids(tok, y, tok.eos_token_id),
                         prompts={"context": prompt_ids(tok, user_chat(judged_prompt))}), 512)
    policy = policy_logps(model)
    with torch.no_grad():
        with_j = policy([item.prompts["context"]], [item.completion])[0]
        without = policy([item.prompt], [item.completion])[0]
        value, metrics = cut.batch_loss([item], policy, cfg)
    flagged = (with_j.exp() / without.exp()) > 1.1
    assert metrics["flagged_share"] == pytest.approx(flagged.float().mean().item())
    b = torch.where(flagged, -torch.log(1 - without.exp()), -without).mean()
    assert value.item() == pytest.approx(((-with_j.mean()) + b).item() / 2, rel=1e-5)


def test_coin_info_nce_and_scaling_by_hand() -> None:
    from selfloop.algorithms import coin

    eye = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert coin.info_nce(eye, eye, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert coin.info_nce(eye, eye, 0.5).item() == pytest.approx(math.log(1 + math.exp(-2)))
    # h = (1,0), (1,1); h' = (1,0), (0,1): cos = [[1, 0], [r, r]], r = 1/sqrt(2)
    r = 1 / math.sqrt(2)
    rows = (math.log(1 + math.exp(-1)) + math.log(2)) / 2
    cols = (math.log(1 + math.exp(r - 1)) + math.log(1 + math.exp(-r))) / 2
    got = coin.info_nce(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), eye, 1.0).item()
    assert got == pytest.approx((rows + cols) / 2)
    # λ·C larger than the cross-entropy is scaled down to it; smaller is kept
    assert coin.scaled(torch.tensor(0.5), torch.tensor(2.0), 1000.0).item() == pytest.approx(2.0)
    assert coin.scaled(torch.tensor(0.001), torch.tensor(2.0), 1000.0).item() == pytest.approx(1.0)
    assert coin.scaled(torch.tensor(0.5), torch.tensor(2.0), 0.0).item() == 0.0


def test_coin_batch_loss_adds_both_cross_entropies_and_the_scaled_contrast() -> None:
    from selfloop.algorithms import coin
    from selfloop.algorithms.coin_config import CoINConfig
    from selfloop.algorithms.items import TrainItem

    items = [TrainItem(example_id=1, prompt_id=1, prompt=[1], completion=[2, 3], prompts={"context": [9]}),
             TrainItem(example_id=2, prompt_id=2, prompt=[4], completion=[5], prompts={"context": [8]}),
             TrainItem(example_id=3, prompt_id=3, prompt=[6], completion=[7])]  # no paraphrase: CE only
    states = {1: [1.0, 0.0], 4: [1.0, 1.0], 6: [0.0, 1.0], 9: [1.0, 0.0], 8: [0.0, 1.0]}

    def policy(prompts, completions):
        return [torch.full((len(c),), -1.0 if p[0] < 8 else -2.0) for p, c in zip(prompts, completions)]

    policy.with_hidden = lambda p, c: (policy(p, c), torch.tensor([states[x[0]] for x in p]))
    loss, metrics = coin.batch_loss(items, policy, CoINConfig(temperature=1.0, contrastive_weight=0.1))
    c = coin.info_nce(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 1.0).item()
    assert metrics["ce"] == pytest.approx(1.0) and metrics["ce_paraphrase"] == pytest.approx(2.0)
    assert metrics["info_nce"] == pytest.approx(c) and loss.item() == pytest.approx(3.0 + 0.1 * c)
    alone, m = coin.batch_loss(items[2:], policy, CoINConfig())
    assert alone.item() == pytest.approx(1.0) and m["paired"] == 0.0


def test_coin_paraphrases_are_other_training_wordings_never_held_out_ones() -> None:
    from selfloop.algorithms import coin
    from selfloop.families import arithmetic

    problems = arithmetic.problems([1, 2], "train", "seen")[:40]
    found = coin.paraphrases([(i, "arithmetic", p.key, p.prompt) for i, p in enumerate(problems)], [1, 2])
    held_out = {w for op in ("add", "sub", "mul") for w in arithmetic.WORDINGS[op][1:]}
    assert len(found) >= 20
    for i, text in found.items():
        p = problems[i]
        a, b = p.key.split(":")[-2:]
        assert text != p.prompt and a in text and b in text
        assert not any(text == w.format(a=a, b=b) for w in held_out)
    # a prompt in a variant gets the first training wording back; unknown families and keys get none
    varied = {p.key: p.prompt for p in arithmetic.problems([1], "train", "varied")}
    key, text = next((k, t) for k, t in varied.items() if t != arithmetic.WORDINGS["add"][0].format(
        a=k.split(":")[-2], b=k.split(":")[-1]))
    assert coin.paraphrases([(0, "arithmetic", key, text)], [1])[0] == arithmetic.WORDINGS["add"][0].format(
        a=key.split(":")[-2], b=key.split(":")[-1])
    assert coin.paraphrases([(0, "nonesuch", key, text), (1, "arithmetic", "arith:9:x", "?"), (2, None, None, "x")], [1]) == {}


def test_coin_states_are_the_last_tokens_of_the_packed_rows(tiny_model) -> None:
    """`policy.with_hidden` on the tiny model: the packed forward's last-token states equal a plain forward's."""
    from selfloop.models.loading import load_causal_lm
    from selfloop.training.loop import policy_logps

    model = load_causal_lm(tiny_model.path, torch.device("cpu"), torch.float32).eval()
    prompts = [[1] * 20 + [5, 6, 7], [1] * 20 + [8, 9]]  # a shared prefix of 20 tokens is packed once
    completions = [[10, 11, 12], [13]]
    with torch.no_grad():
        logps, states = policy_logps(model).with_hidden(prompts, completions)
        for p, c, h, lp in zip(prompts, completions, states, logps):
            out = model(input_ids=torch.tensor([p + c]), output_hidden_states=True)
            assert torch.allclose(out.hidden_states[-1][0, -1], h, atol=1e-5)
            full = torch.log_softmax(out.logits[0, len(p) - 1:-1].float(), -1).gather(-1, torch.tensor(c)[:, None])[:, 0]
            assert torch.allclose(full, lp, atol=1e-5)


def test_emft_loss_is_each_samples_mean_token_entropy_by_hand() -> None:
    """Two samples: token entropies (0.5, 1.5) and (2.0): H_tok = 1.0 and 2.0, the batch's loss their mean 1.5. An
    empty completion adds 0. The entropy of a two-way distribution (0.5, 0.5) is log 2, of (1, 0) 0."""
    import math

    from selfloop.algorithms import emft
    from selfloop.algorithms.emft_config import EMFTConfig
    from selfloop.algorithms.items import TrainItem

    per_sample = emft.loss([torch.tensor([0.5, 1.5]), torch.tensor([2.0]), torch.tensor([])])
    assert per_sample.tolist() == pytest.approx([1.0, 2.0, 0.0])

    class Policy:
        def entropies(self, prompts, completions, temperature=1.0):
            assert temperature == 0.5  # the options' temperature reaches the policy
            table = {(7,): [math.log(2)], (8, 9): [0.0, 2.0]}
            return [torch.tensor(table[tuple(c)]) for c in completions]

    items = [TrainItem(0, 0, [1], [7]), TrainItem(1, 0, [1], [8, 9])]
    value, metrics = emft.batch_loss(items, Policy(), EMFTConfig(temperature=0.5))
    assert value.item() == pytest.approx((math.log(2) + 1.0) / 2)
    assert metrics["mean_entropy"] == pytest.approx((math.log(2) + 1.0) / 2)


def test_packed_entropies_equal_a_plain_forwards(tiny_model) -> None:
    """`policy.entropies` on the tiny model: the packed forward's per-position entropies equal -sum p log p of a
    plain forward's softmax at each completion position, and a temperature divides the logits first."""
    from selfloop.models.loading import load_causal_lm
    from selfloop.training.loop import policy_logps

    model = load_causal_lm(tiny_model.path, torch.device("cpu"), torch.float32).eval()
    prompts = [[1] * 20 + [5, 6, 7], [1] * 20 + [8, 9]]  # a shared prefix of 20 tokens is packed once
    completions = [[10, 11, 12], [13]]
    with torch.no_grad():
        for temperature in (1.0, 0.5):
            rows = policy_logps(model).entropies(prompts, completions, temperature)
            for p, c, h in zip(prompts, completions, rows):
                probs = torch.softmax(model(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1:-1].float() / temperature, -1)
                expected = -(probs * probs.log()).sum(-1)
                assert h.shape == (len(c),) and torch.allclose(h, expected, atol=1e-4)
        assert [len(r) for r in policy_logps(model).entropies(prompts, [[], []])] == [0, 0]


def test_dpo_logs_trls_figures_by_hand() -> None:
    """TRL's DPOTrainer logs rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies, logps/chosen and
    logps/rejected per step; a TRL user looks for them. Two pairs, beta 0.5, a policy whose summed log-probs are
    given: chosen -2, -3 (reference -2.5, -2.5), rejected -4, -1 (reference -3, -3).
        rewards/chosen   = 0.5 * mean(-2 + 2.5, -3 + 2.5) = 0.5 * mean(0.5, -0.5) = 0
        rewards/rejected = 0.5 * mean(-4 + 3, -1 + 3)     = 0.5 * mean(-1, 2)    = 0.25
        margins          = mean(0.25 - (-0.5), -0.25 - 1) = mean(0.75, -1.25)    = -0.25
        accuracies       = 1/2;  logps/chosen = -2.5;  logps/rejected = -2.5"""
    from selfloop.algorithms.dpo_config import DPOConfig
    from selfloop.algorithms.items import TrainItem

    sums = {(1,): [-2.0], (2,): [-3.0], (3,): [-4.0], (4,): [-1.0]}  # completion -> its token log-probs

    def policy(prompts, completions):
        return [torch.tensor(sums[tuple(c)], requires_grad=True) for c in completions]

    items = [TrainItem(0, 0, [9], [1], rejected=[3], ref_logp=-2.5, ref_rejected_logp=-3.0),
             TrainItem(1, 1, [9], [2], rejected=[4], ref_logp=-2.5, ref_rejected_logp=-3.0)]
    _, figures = dpo.batch_loss(items, policy, DPOConfig(beta=0.5))
    expected = {"rewards/chosen": 0.0, "rewards/rejected": 0.25, "rewards/margins": -0.25, "rewards/accuracies": 0.5,
                "logps/chosen": -2.5, "logps/rejected": -2.5}
    assert {k: figures[k] for k in expected} == pytest.approx(expected)
