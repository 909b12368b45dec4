"""iteration_summary shows the drift monitors and training loss (what `selfloop history` prints)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _metric(name: str, column: str) -> str:
    return f"(SELECT m.value FROM metrics m WHERE m.iteration_id = i.id AND m.name = '{name}') AS {column}"


SUMMARY = f"""
    SELECT l.name AS loop, i.number AS iteration, i.status AS status, i.phase AS phase,
           (SELECT count(*) FROM prompts p WHERE p.iteration_id = i.id) AS prompts,
           (SELECT count(*) FROM samples s WHERE s.iteration_id = i.id) AS samples,
           (SELECT avg(j.score) FROM judgments j JOIN samples s ON s.id = j.sample_id
             WHERE s.iteration_id = i.id AND j.kind = 'llm_judge' AND j.parse_ok) AS mean_judge_score,
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

# The 0001 definition, restored on downgrade.
PREVIOUS = """
    SELECT l.name AS loop, i.number AS iteration, i.status AS status, i.phase AS phase,
           (SELECT count(*) FROM prompts p WHERE p.iteration_id = i.id) AS prompts,
           (SELECT count(*) FROM samples s WHERE s.iteration_id = i.id) AS samples,
           (SELECT avg(j.score) FROM judgments j JOIN samples s ON s.id = j.sample_id
             WHERE s.iteration_id = i.id AND j.kind = 'llm_judge' AND j.parse_ok) AS mean_judge_score,
           (SELECT e.value FROM evals e WHERE e.iteration_id = i.id AND e.role = 'candidate'
             AND e.suite || '/' || e.metric = l.main_metric) AS main_metric,
           (SELECT e.value FROM evals e WHERE e.iteration_id = i.id AND e.role = 'baseline'
             AND e.suite || '/' || e.metric = l.main_metric) AS baseline_metric,
           i.promoted AS promoted, c.path AS checkpoint, i.started_at AS started_at, i.finished_at AS finished_at
    FROM iterations i JOIN loops l ON l.id = i.loop_id
    LEFT JOIN checkpoints c ON c.id = i.output_checkpoint_id"""


def upgrade() -> None:
    op.execute("DROP VIEW iteration_summary")
    op.execute(f"CREATE VIEW iteration_summary AS {SUMMARY}")


def downgrade() -> None:
    op.execute("DROP VIEW iteration_summary")
    op.execute(f"CREATE VIEW iteration_summary AS {PREVIOUS}")
