"""The toy ranking's selection and loss: all samples of a prompt, ranked by their rollout mean token log-prob
(highest first); a hinge keeps each candidate's mean log-prob above the next one's, plus the best one's NLL."""

from itertools import groupby

import torch
from sqlalchemy import select as sql_select

from selfloop.algorithms.items import means
from selfloop.db.models import Sample


def select(session, iteration_id, config):
    rows = session.execute(
        sql_select(Sample.prompt_id, Sample.id, Sample.mean_logprob).where(Sample.iteration_id == iteration_id)
        .order_by(Sample.prompt_id, Sample.mean_logprob.desc(), Sample.sample_index)
    ).all()
    return [{"prompt_id": prompt_id, "candidates": [{"sample_id": s, "score": lp} for _, s, lp in group]}
            for prompt_id, group in ((p, list(g)) for p, g in groupby(rows, key=lambda r: r[0])) if len(group) >= 2]


def batch_loss(items, policy, options):
    total = []
    for it in items:
        logps = means(policy([it.prompt] * len(it.candidates), it.candidates))
        hinge = torch.relu(options.margin + logps[1:] - logps[:-1]).sum()
        total.append(hinge - logps[0])
    return torch.stack(total).mean(), {"candidates": float(sum(len(it.candidates) for it in items) / len(items))}
