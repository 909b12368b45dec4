"""The toy hint algorithm's selection and loss: each prompt's best-voted sample, with the hinted prompt and the
prompt's difficulty as its own data; the loss is the completion's mean NLL after both prompts, weighted by
(1 + difficulty)."""

from sqlalchemy import select as sql_select

from selfloop.algorithms.items import means
from selfloop.db.models import Judgment, Prompt, Sample, Vote


def select(session, iteration_id, config):
    options = config.train.options()
    rows = session.execute(
        sql_select(Sample.prompt_id, Sample.id, Judgment.trained_score, Prompt.text, Vote.share)
        .join(Judgment, Judgment.sample_id == Sample.id).join(Prompt, Prompt.id == Sample.prompt_id)
        .join(Vote, Vote.prompt_id == Prompt.id)
        .where(Sample.iteration_id == iteration_id, Judgment.kind == "vote")
        .order_by(Sample.prompt_id, Judgment.trained_score.desc(), Sample.sample_index)
    ).all()
    out, seen = [], set()
    for prompt_id, sample_id, score, text, share in rows:
        if prompt_id not in seen:
            seen.add(prompt_id)
            out.append({"prompt_id": prompt_id, "sample_id": sample_id, "reward": score,
                        "hinted": f"{text} {options.hint}", "difficulty": round(1.0 - share, 6)})
    return out


def batch_loss(items, policy, options):
    import torch

    plain = means(policy([it.prompt for it in items], [it.completion for it in items]))
    hinted = means(policy([it.prompts["hinted"] for it in items], [it.completion for it in items]))
    weight = torch.tensor([1.0 + it.data.difficulty for it in items], device=plain.device)
    loss = -(weight * (plain + hinted) / 2).mean()
    return loss, {"difficulty": sum(it.data.difficulty for it in items) / len(items), "hinted": float(len(items))}
