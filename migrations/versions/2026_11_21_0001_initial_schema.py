"""Initial schema: loops, iterations, phase runs, prompts, samples, judgments, votes, examples,
train steps, checkpoints, evals, eval items, metrics, events, daemons; and the views users query.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

# Views for the common questions. Plain SQL that SQLite and PostgreSQL both run; they are
# part of this revision (not imported from the package) so later code changes cannot alter it.
VIEWS = {
    "iteration_summary": """
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
        LEFT JOIN checkpoints c ON c.id = i.output_checkpoint_id""",
    "loop_lineage": """
        SELECT l.name AS loop, p.name AS parent_loop, l.parent_iteration AS parent_iteration,
               c.path AS start_checkpoint, c.sha256 AS start_checkpoint_sha256, l.status AS status,
               l.created_at AS created_at
        FROM loops l LEFT JOIN loops p ON p.id = l.parent_loop_id
        LEFT JOIN checkpoints c ON c.id = l.start_checkpoint_id""",
    "sample_signals": """
        SELECT s.id AS sample_id, l.name AS loop, i.number AS iteration, s.prompt_id AS prompt_id,
               s.sample_index AS sample_index, s.num_tokens AS num_tokens, s.sum_logprob AS sum_logprob,
               s.mean_logprob AS mean_logprob,
               (SELECT avg(j.score) FROM judgments j
                 WHERE j.sample_id = s.id AND j.kind = 'llm_judge' AND j.parse_ok) AS judge_score,
               (SELECT j.answer FROM judgments j WHERE j.sample_id = s.id AND j.kind = 'vote') AS answer,
               (SELECT j.score FROM judgments j WHERE j.sample_id = s.id AND j.kind = 'vote') AS vote_reward
        FROM samples s JOIN iterations i ON i.id = s.iteration_id JOIN loops l ON l.id = i.loop_id""",
}


def upgrade() -> None:
    op.create_table('checkpoints',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('base_model', sa.String(length=500), nullable=False),
    sa.Column('parent_checkpoint_id', sa.Integer(), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['parent_checkpoint_id'], ['checkpoints.id'], name=op.f('fk_checkpoints_parent_checkpoint_id_checkpoints')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_checkpoints')),
    sa.UniqueConstraint('path', name=op.f('uq_checkpoints_path'))
    )
    op.create_table('daemons',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_daemons'))
    )
    op.create_table('loops',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('parent_loop_id', sa.Integer(), nullable=True),
    sa.Column('parent_iteration', sa.Integer(), nullable=True),
    sa.Column('start_checkpoint_id', sa.Integer(), nullable=True),
    sa.Column('current_checkpoint_id', sa.Integer(), nullable=True),
    sa.Column('base_model', sa.String(length=500), nullable=False),
    sa.Column('config', JSON, nullable=False),
    sa.Column('config_hash', sa.String(length=64), nullable=False),
    sa.Column('main_metric', sa.String(length=200), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['current_checkpoint_id'], ['checkpoints.id'], name=op.f('fk_loops_current_checkpoint_id_checkpoints')),
    sa.ForeignKeyConstraint(['parent_loop_id'], ['loops.id'], name=op.f('fk_loops_parent_loop_id_loops')),
    sa.ForeignKeyConstraint(['start_checkpoint_id'], ['checkpoints.id'], name=op.f('fk_loops_start_checkpoint_id_checkpoints')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_loops')),
    sa.UniqueConstraint('name', name=op.f('uq_loops_name'))
    )
    op.create_table('iterations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('loop_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('phase', sa.String(length=20), nullable=True),
    sa.Column('base_checkpoint_id', sa.Integer(), nullable=True),
    sa.Column('output_checkpoint_id', sa.Integer(), nullable=True),
    sa.Column('promoted', sa.Boolean(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['base_checkpoint_id'], ['checkpoints.id'], name=op.f('fk_iterations_base_checkpoint_id_checkpoints')),
    sa.ForeignKeyConstraint(['loop_id'], ['loops.id'], name=op.f('fk_iterations_loop_id_loops')),
    sa.ForeignKeyConstraint(['output_checkpoint_id'], ['checkpoints.id'], name=op.f('fk_iterations_output_checkpoint_id_checkpoints')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_iterations')),
    sa.UniqueConstraint('loop_id', 'number', name=op.f('uq_iterations_loop_id_number'))
    )
    op.create_table('eval_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('iteration_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('suite', sa.String(length=100), nullable=False),
    sa.Column('item_index', sa.Integer(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('answer', sa.Text(), nullable=False),
    sa.Column('response', sa.Text(), nullable=False),
    sa.Column('predicted', sa.Text(), nullable=True),
    sa.Column('correct', sa.Boolean(), nullable=False),
    sa.Column('majority_correct', sa.Boolean(), nullable=True),
    sa.Column('num_tokens', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['iteration_id'], ['iterations.id'], name=op.f('fk_eval_items_iteration_id_iterations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_eval_items')),
    sa.UniqueConstraint('iteration_id', 'role', 'suite', 'item_index', name=op.f('uq_eval_items_iteration_id_role_suite_item_index'))
    )
    op.create_table('evals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('iteration_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('checkpoint_id', sa.Integer(), nullable=True),
    sa.Column('suite', sa.String(length=100), nullable=False),
    sa.Column('metric', sa.String(length=100), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('ci_low', sa.Float(), nullable=True),
    sa.Column('ci_high', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.id'], name=op.f('fk_evals_checkpoint_id_checkpoints')),
    sa.ForeignKeyConstraint(['iteration_id'], ['iterations.id'], name=op.f('fk_evals_iteration_id_iterations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_evals')),
    sa.UniqueConstraint('iteration_id', 'role', 'suite', 'metric', name=op.f('uq_evals_iteration_id_role_suite_metric'))
    )
    op.create_table('events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('loop_id', sa.Integer(), nullable=True),
    sa.Column('iteration_id', sa.Integer(), nullable=True),
    sa.Column('level', sa.String(length=10), nullable=False),
    sa.Column('kind', sa.String(length=50), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('data', JSON, nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['iteration_id'], ['iterations.id'], name=op.f('fk_events_iteration_id_iterations')),
    sa.ForeignKeyConstraint(['loop_id'], ['loops.id'], name=op.f('fk_events_loop_id_loops')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_loop_id_created_at'), ['loop_id', 'created_at'], unique=False)

    op.create_table('metrics',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('iteration_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['iteration_id'], ['iterations.id'], name=op.f('fk_metrics_iteration_id_iterations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metrics')),
    sa.UniqueConstraint('iteration_id', 'name', name=op.f('uq_metrics_iteration_id_name'))
    )
    op.create_table('phase_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('iteration_id', sa.Integer(), nullable=False),
    sa.Column('phase', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('progress_done', sa.Integer(), nullable=False),
    sa.Column('progress_total', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['iteration_id'], ['iterations.id'], name=op.f('fk_phase_runs_iteration_id_iterations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_phase_runs')),
    sa.UniqueConstraint('iteration_id', 'phase', name=op.f('uq_phase_runs_iteration_id_phase'))
    )
    op.create_table('prompts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('iteration_id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('item_index', sa.Integer(), nullable=False),
    sa.Column('task_key', sa.String(length=200), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('answer', sa.Text(), nullable=True),
    sa.Column('reference', sa.Text(), nullable=True),
    sa.Column('parent_ids', JSON, nullable=True),
    sa.Column('rouge_max', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['iteration_id'], ['iterations.id'], name=op.f('fk_prompts_iteration_id_iterations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prompts')),
    sa.UniqueConstraint('iteration_id', 'source', 'item_index', name=op.f('uq_prompts_iteration_id_source_item_index'))
    )
    op.create_table('train_steps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('iteration_id', sa.Integer(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('loss', sa.Float(), nullable=False),
    sa.Column('learning_rate', sa.Float(), nullable=False),
    sa.Column('grad_norm', sa.Float(), nullable=False),
    sa.Column('tokens_per_s', sa.Float(), nullable=False),
    sa.Column('metrics', JSON, nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['iteration_id'], ['iterations.id'], name=op.f('fk_train_steps_iteration_id_iterations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_train_steps')),
    sa.UniqueConstraint('iteration_id', 'step', name=op.f('uq_train_steps_iteration_id_step'))
    )
    op.create_table('samples',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prompt_id', sa.Integer(), nullable=False),
    sa.Column('sample_index', sa.Integer(), nullable=False),
    sa.Column('iteration_id', sa.Integer(), nullable=False),
    sa.Column('policy_checkpoint_id', sa.Integer(), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('token_ids', JSON, nullable=False),
    sa.Column('token_logprobs', JSON, nullable=False),
    sa.Column('num_tokens', sa.Integer(), nullable=False),
    sa.Column('sum_logprob', sa.Float(), nullable=False),
    sa.Column('mean_logprob', sa.Float(), nullable=False),
    sa.Column('finish_reason', sa.String(length=10), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=False),
    sa.Column('temperature', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['iteration_id'], ['iterations.id'], name=op.f('fk_samples_iteration_id_iterations')),
    sa.ForeignKeyConstraint(['policy_checkpoint_id'], ['checkpoints.id'], name=op.f('fk_samples_policy_checkpoint_id_checkpoints')),
    sa.ForeignKeyConstraint(['prompt_id'], ['prompts.id'], name=op.f('fk_samples_prompt_id_prompts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_samples')),
    sa.UniqueConstraint('prompt_id', 'sample_index', name=op.f('uq_samples_prompt_id_sample_index'))
    )
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_samples_iteration_id'), ['iteration_id'], unique=False)

    op.create_table('votes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prompt_id', sa.Integer(), nullable=False),
    sa.Column('answer', sa.Text(), nullable=True),
    sa.Column('share', sa.Float(), nullable=False),
    sa.Column('n_valid', sa.Integer(), nullable=False),
    sa.Column('n_votes', sa.Integer(), nullable=False),
    sa.Column('tie', sa.Boolean(), nullable=False),
    sa.Column('tied_answers', JSON, nullable=True),
    sa.Column('correct', sa.Boolean(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['prompt_id'], ['prompts.id'], name=op.f('fk_votes_prompt_id_prompts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_votes')),
    sa.UniqueConstraint('prompt_id', name=op.f('uq_votes_prompt_id'))
    )
    op.create_table('examples',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('iteration_id', sa.Integer(), nullable=False),
    sa.Column('item_index', sa.Integer(), nullable=False),
    sa.Column('algorithm', sa.String(length=20), nullable=False),
    sa.Column('prompt_id', sa.Integer(), nullable=False),
    sa.Column('sample_id', sa.Integer(), nullable=True),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('rejected_sample_id', sa.Integer(), nullable=True),
    sa.Column('reward', sa.Float(), nullable=True),
    sa.Column('weight', sa.Float(), nullable=True),
    sa.Column('ref_logp', sa.Float(), nullable=True),
    sa.Column('ref_rejected_logp', sa.Float(), nullable=True),
    sa.Column('ref_token_logps', JSON, nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['iteration_id'], ['iterations.id'], name=op.f('fk_examples_iteration_id_iterations')),
    sa.ForeignKeyConstraint(['prompt_id'], ['prompts.id'], name=op.f('fk_examples_prompt_id_prompts')),
    sa.ForeignKeyConstraint(['rejected_sample_id'], ['samples.id'], name=op.f('fk_examples_rejected_sample_id_samples')),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], name=op.f('fk_examples_sample_id_samples')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_examples')),
    sa.UniqueConstraint('iteration_id', 'item_index', name=op.f('uq_examples_iteration_id_item_index'))
    )
    op.create_table('judgments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sample_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('judge_index', sa.Integer(), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('parse_ok', sa.Boolean(), nullable=False),
    sa.Column('raw', sa.Text(), nullable=True),
    sa.Column('answer', sa.Text(), nullable=True),
    sa.Column('details', JSON, nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], name=op.f('fk_judgments_sample_id_samples')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_judgments')),
    sa.UniqueConstraint('sample_id', 'kind', 'judge_index', name=op.f('uq_judgments_sample_id_kind_judge_index'))
    )
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_table('judgments')
    op.drop_table('examples')
    op.drop_table('votes')
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_samples_iteration_id'))

    op.drop_table('samples')
    op.drop_table('train_steps')
    op.drop_table('prompts')
    op.drop_table('phase_runs')
    op.drop_table('metrics')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_loop_id_created_at'))

    op.drop_table('events')
    op.drop_table('evals')
    op.drop_table('eval_items')
    op.drop_table('iterations')
    op.drop_table('loops')
    op.drop_table('daemons')
    op.drop_table('checkpoints')
