"""iteration_summary gains the LLM judge's calibration against verified correctness: judge_auc
(the mean score as a detector of correct samples) and judge_pair_accuracy (within a prompt, how often
the correct sample of a (correct, wrong) pair scores higher), both from the judge phase's metrics.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _metric(name: str, column: str) -> str:
    return f"(SELECT m.value FROM metrics m WHERE m.iteration_id = i.id AND m.name = '{name}') AS {column}"


def _summary(calibration: str) -> str:
    return f"""
    SELECT l.name AS loop, i.number AS iteration, i.status AS status, i.phase AS phase,
           (SELECT count(*) FROM prompts p WHERE p.iteration_id = i.id) AS prompts,
           (SELECT count(*) FROM samples s WHERE s.iteration_id = i.id) AS samples,
           {_metric('judge.mean_score', 'mean_judge_score')},{calibration}
           {_metric('judge.vote_share', 'vote_share')},
           {_metric('judge.label_accuracy', 'label_accuracy')},
           {_metric('drift.mean_response_tokens', 'mean_response_tokens')},
           {_metric('drift.mean_token_logprob', 'mean_token_logprob')},
           {_metric('train.last_loss', 'train_loss')},
           (SELECT e.value FROM evals e WHERE e.iteration_id = i.id AND e.role = 'baseline'
             AND e.suite || '/' || e.metric = l.main_metric) AS baseline_metric,
           (SELECT e.value FROM evals e WHERE e.iteration_id = i.id AND e.role = 'candidate'
             AND e.suite || '/' || e.metric = l.main_metric) AS main_metric,
           i.promoted AS promoted,
           (SELECT count(*) FROM events v WHERE v.iteration_id = i.id AND v.level <> 'info') AS warnings,
           c.path AS checkpoint, i.started_at AS started_at, i.finished_at AS finished_at
    FROM iterations i JOIN loops l ON l.id = i.loop_id
    LEFT JOIN checkpoints c ON c.id = i.output_checkpoint_id"""


SUMMARY = _summary(f"""
           {_metric('judge.llm_auc', 'judge_auc')},
           {_metric('judge.llm_pair_accuracy', 'judge_pair_accuracy')},""")
PREVIOUS = _summary("")  # the 0005 definition, restored on downgrade


def upgrade() -> None:
    op.execute("DROP VIEW iteration_summary")
    op.execute(f"CREATE VIEW iteration_summary AS {SUMMARY}")


def downgrade() -> None:
    op.execute("DROP VIEW iteration_summary")
    op.execute(f"CREATE VIEW iteration_summary AS {PREVIOUS}")
