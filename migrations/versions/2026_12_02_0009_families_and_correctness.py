"""Task families and correctness stored once.

- prompts.family: the task family whose grader checks the prompt's answer. Existing prompts with an answer are
  classified by how they were made: arithmetic task keys ('arith:'), instruction-following task keys ('if:') and
  self-instruct prompts with constraints are theirs; any other answer is a 'value'.
- samples.correct: each sample checked against its prompt's answer, once, by the judge phase. Existing samples
  are graded here by their prompt's family, with their loop's answer extractors.
- examples.sampling_logp: RLSC's p_old(y|x), which RLSC examples kept in ref_logp (one column, two meanings).
- the sample_signals view gains `correct`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SIGNALS = """
        SELECT s.id AS sample_id, l.name AS loop, i.number AS iteration, s.prompt_id AS prompt_id,
               s.sample_index AS sample_index, s.num_tokens AS num_tokens, s.sum_logprob AS sum_logprob,
               s.mean_logprob AS mean_logprob,
               (SELECT avg(j.score) FROM judgments j
                 WHERE j.sample_id = s.id AND j.kind = 'llm_judge' AND j.parse_ok) AS judge_score,
               (SELECT j.answer FROM judgments j WHERE j.sample_id = s.id AND j.kind = 'vote') AS answer,
               (SELECT j.score FROM judgments j WHERE j.sample_id = s.id AND j.kind = 'vote') AS vote_reward{correct}
        FROM samples s JOIN iterations i ON i.id = s.iteration_id JOIN loops l ON l.id = i.loop_id"""


def _grade_existing(conn) -> None:
    from selfloop.families import family
    from selfloop.families.answers import DEFAULT_CHAIN

    chains = {}
    for loop_id, config in conn.execute(sa.text("SELECT id, config FROM loops")):
        config = json.loads(config) if isinstance(config, str) else (config or {})
        chains[loop_id] = ((config.get("judge") or {}).get("vote") or {}).get("extractors") or DEFAULT_CHAIN
    rows = conn.execute(sa.text(
        "SELECT s.id, s.text, p.answer, p.family, i.loop_id FROM samples s JOIN prompts p ON p.id = s.prompt_id "
        "JOIN iterations i ON i.id = s.iteration_id WHERE p.answer IS NOT NULL ORDER BY s.id")).all()
    update = sa.text("UPDATE samples SET correct = :ok WHERE id = :sid")
    for start in range(0, len(rows), 5000):
        chunk = rows[start : start + 5000]
        conn.execute(update, [{"sid": sid, "ok": family(name).grade(text, answer, chains.get(loop_id, DEFAULT_CHAIN)).correct}
                              for sid, text, answer, name, loop_id in chunk])


def upgrade() -> None:
    with op.batch_alter_table("prompts") as batch:
        batch.add_column(sa.Column("family", sa.String(40), nullable=True))
    with op.batch_alter_table("samples") as batch:
        batch.add_column(sa.Column("correct", sa.Boolean(), nullable=True))
    with op.batch_alter_table("examples") as batch:
        batch.add_column(sa.Column("sampling_logp", sa.Float(), nullable=True))
    conn = op.get_bind()
    conn.execute(sa.text("""UPDATE prompts SET family = CASE
        WHEN task_key LIKE 'arith:%' THEN 'arithmetic'
        WHEN task_key LIKE 'if:%' OR source = 'self_instruct' THEN 'instructions'
        ELSE 'value' END WHERE answer IS NOT NULL"""))
    _grade_existing(conn)
    conn.execute(sa.text("UPDATE examples SET sampling_logp = ref_logp, ref_logp = NULL WHERE algorithm = 'rlsc'"))
    op.execute("DROP VIEW sample_signals")
    op.execute("CREATE VIEW sample_signals AS " + SIGNALS.format(correct=",\n               s.correct AS correct"))


def downgrade() -> None:
    op.execute("DROP VIEW sample_signals")
    op.execute("CREATE VIEW sample_signals AS " + SIGNALS.format(correct=""))
    op.get_bind().execute(sa.text("UPDATE examples SET ref_logp = sampling_logp WHERE algorithm = 'rlsc'"))
    # Plain DROP COLUMN (SQLite 3.35+): a batch copy of samples or prompts would trip over the views naming them.
    op.drop_column("examples", "sampling_logp")
    op.drop_column("samples", "correct")
    op.drop_column("prompts", "family")
