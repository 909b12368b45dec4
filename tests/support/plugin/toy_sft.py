"""The toy algorithm's selection and loss: every prompt's first `per_prompt` samples, those agreeing with the
majority first, trained by their mean token negative log-likelihood."""

from collections import defaultdict

from sqlalchemy import select as sql_select

from selfloop.algorithms.items import means
from selfloop.db.models import Judgment, Sample


def select(session, iteration_id, config):
    rows = session.execute(
        sql_select(Sample.prompt_id, Sample.id, Judgment.trained_score)
        .join(Judgment, Judgment.sample_id == Sample.id)
        .where(Sample.iteration_id == iteration_id, Judgment.kind == "vote")
        .order_by(Sample.prompt_id, Judgment.trained_score.desc(), Sample.sample_index)
    ).all()
    kept = defaultdict(list)
    for prompt_id, sample_id, score in rows:
        if len(kept[prompt_id]) < config.train.options().per_prompt:  # its options, under whatever name it has
            kept[prompt_id].append({"prompt_id": prompt_id, "sample_id": sample_id, "reward": score})
    return [row for group in kept.values() for row in group]


def batch_loss(items, policy, options):
    logps = means(policy([it.prompt for it in items], [it.completion for it in items]))
    return -logps.mean(), {"mean_logp": logps.mean().item()}
