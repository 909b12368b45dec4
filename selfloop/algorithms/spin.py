"""SPIN: self-play fine-tuning (Chen et al. 2024).

Selection: prompts that carry a ground-truth response (a seed task's or a user dataset's). The
ground truth is chosen; a sample of the policy the iteration starts from (its first sample) is
rejected. With mix_previous, the previous iteration's pairs are trained on again.

Loss: the same form as DPO (so the same function), with the real response as chosen, the generated
one as rejected, and the iteration's starting checkpoint as reference:
    -log sigma(beta * [(log p(y_real|x) - log ref(y_real|x)) - (log p(y_gen|x) - log ref(y_gen|x))])
(`kind` ipo and hinge as in dpo.py; the paper's logistic loss is the sigmoid form.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from sqlalchemy.orm import Session

from selfloop.algorithms import dpo
from selfloop.algorithms.items import LogpFn, TrainItem
from selfloop.algorithms.spec import chosen_options
from selfloop.algorithms.spin_config import SPINConfig
from selfloop.db import selection

if TYPE_CHECKING:
    from selfloop.config import Config



def loss(
    policy_real: torch.Tensor,
    policy_generated: torch.Tensor,
    ref_real: torch.Tensor,
    ref_generated: torch.Tensor,
    beta: float = 0.1,
    kind: str = "sigmoid",
) -> torch.Tensor:
    """Per-pair SPIN loss: DPO's with (real, generated) as (chosen, rejected)."""
    return dpo.loss(policy_real, policy_generated, ref_real, ref_generated, beta=beta, kind=kind)


def select(session: Session, iteration_id: int, config: Config) -> list[dict]:
    rows = selection.reference_pairs(session, iteration_id)
    out = [{"prompt_id": p, "text": ref, "rejected_sample_id": s} for p, ref, s in rows]
    if chosen_options(config, SPINConfig).mix_previous:
        previous = selection.previous_iteration(session, iteration_id)
        if previous is not None:
            out += [
                {"prompt_id": e.prompt_id, "text": e.text, "rejected_sample_id": e.rejected_sample_id}
                for e in selection.examples(session, previous)
                if e.text is not None
            ]
    return out


def batch_loss(items: list[TrainItem], policy: LogpFn, cfg: SPINConfig) -> tuple[torch.Tensor, dict[str, float]]:
    # Same computation as dpo.batch_loss with SPIN's options; kept here so this file reads alone.
    return dpo.batch_loss(items, policy, cfg)  # type: ignore[arg-type]  # SPINConfig has every field DPO's loss reads
