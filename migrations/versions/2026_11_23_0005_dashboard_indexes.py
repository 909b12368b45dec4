"""The dashboard's reads stay fast on a store of millions of samples:
examples.prompt_id is indexed (a prompt's training examples), and iteration_summary takes the mean
judge score from the judge phase's stored `judge.mean_score` instead of averaging every judgment of
the iteration on each read (the same figure; null until the judge phase ends, like vote_share).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _metric(name: str, column: str) -> str:
    return f"(SELECT m.value FROM metrics m WHERE m.iteration_id = i.id AND m.name = '{name}') AS {column}"


def _summary(judge_score: str) -> str:
    return f"""
    SELECT l.name AS loop, i.number AS iteration, i.status AS status, i.phase AS phase,
           (SELECT count(*) FROM prompts p WHERE p.iteration_id = i.id) AS prompts,
           (SELECT count(*) FROM samples s WHERE s.iteration_id = i.id) AS samples,
           {judge_score},
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


SUMMARY = _summary(_metric("judge.mean_score", "mean_judge_score"))
# The 0002 definition, restored on downgrade.
PREVIOUS = _summary("""(SELECT avg(j.score) FROM judgments j JOIN samples s ON s.id = j.sample_id
             WHERE s.iteration_id = i.id AND j.kind = 'llm_judge' AND j.parse_ok) AS mean_judge_score""")


def upgrade() -> None:
    op.create_index("ix_examples_prompt_id", "examples", ["prompt_id"])
    op.execute("DROP VIEW iteration_summary")
    op.execute(f"CREATE VIEW iteration_summary AS {SUMMARY}")


def downgrade() -> None:
    op.execute("DROP VIEW iteration_summary")
    op.execute(f"CREATE VIEW iteration_summary AS {PREVIOUS}")
    op.drop_index("ix_examples_prompt_id", table_name="examples")
