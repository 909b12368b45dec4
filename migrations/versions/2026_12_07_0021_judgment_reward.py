"""judgments.reward, reward_ok, reward_mode: a reward transform (judge.reward: verify, shuffled, function or a
label-free signal) is stored beside the judged value instead of over it. Rows a transform rewrote before keep their
judged value in details (judged_score, judged_parse_ok): it moves back into score and parse_ok, the transformed
value into the new columns, and the three keys leave details (from_sample, the shuffle's source, stays). The
sample_signals view's vote_reward stays what training read (the reward where a transform set one); its judge_score
is now the judge's own mean, as its name says.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
MOVED = ("reward", "judged_score", "judged_parse_ok")
BATCH = 5000
SIGNALS = """
        SELECT s.id AS sample_id, l.name AS loop, i.number AS iteration, s.prompt_id AS prompt_id,
               s.sample_index AS sample_index, s.num_tokens AS num_tokens, s.sum_logprob AS sum_logprob,
               s.mean_logprob AS mean_logprob,
               (SELECT avg(j.score) FROM judgments j
                 WHERE j.sample_id = s.id AND j.kind = 'llm_judge' AND j.parse_ok) AS judge_score,
               (SELECT j.answer FROM judgments j WHERE j.sample_id = s.id AND j.kind = 'vote') AS answer,
               (SELECT {reward} FROM judgments j WHERE j.sample_id = s.id AND j.kind = 'vote') AS vote_reward,
               s.correct AS correct
        FROM samples s JOIN iterations i ON i.id = s.iteration_id JOIN loops l ON l.id = i.loop_id"""


def _drop(table: str, column: str) -> None:
    if op.get_bind().dialect.name == "sqlite":  # in place (3.35+): no index or view names the column
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    else:
        op.drop_column(table, column)


def _rows(bind: sa.Connection, where: str) -> list[tuple[int, float | None, bool, dict]]:
    """The judgments a transform touched, read whole (details as a dict on both dialects)."""
    found = []
    for i, score, ok, details in bind.execute(sa.text(f"SELECT id, score, parse_ok, details FROM judgments WHERE {where}")):
        value = json.loads(details) if isinstance(details, str) else details
        if isinstance(value, dict) and "reward" in value:
            found.append((i, score, ok, value))
    return found


def _update(bind: sa.Connection, sql: str, rows: list[dict]) -> None:
    for start in range(0, len(rows), BATCH):
        bind.execute(sa.text(sql), rows[start:start + BATCH])


def upgrade() -> None:
    op.add_column("judgments", sa.Column("reward_mode", sa.String(20), nullable=True))
    op.add_column("judgments", sa.Column("reward", sa.Float(), nullable=True))
    op.add_column("judgments", sa.Column("reward_ok", sa.Boolean(), nullable=True))
    bind = op.get_bind()
    cast = "CAST(:d AS JSONB)" if bind.dialect.name == "postgresql" else ":d"
    moved = [{"i": i, "m": d["reward"], "r": score, "ro": ok, "s": d.get("judged_score"),
              "o": bool(d.get("judged_parse_ok", False)),
              "d": json.dumps({k: v for k, v in d.items() if k not in MOVED}) if len(d) > len(MOVED) else None}
             for i, score, ok, d in _rows(bind, "kind IN ('llm_judge', 'vote') AND CAST(details AS TEXT) LIKE '%judged_score%'")]
    _update(bind, f"UPDATE judgments SET reward_mode = :m, reward = :r, reward_ok = :ro, score = :s, parse_ok = :o, "
                  f"details = {cast} WHERE id = :i", moved)
    op.execute("DROP VIEW sample_signals")  # reader roles keep SELECT through the default privileges they were given
    op.execute("CREATE VIEW sample_signals AS " + SIGNALS.format(reward="CASE WHEN j.reward_mode IS NULL THEN j.score ELSE j.reward END"))


def downgrade() -> None:
    op.execute("DROP VIEW sample_signals")
    op.execute("CREATE VIEW sample_signals AS " + SIGNALS.format(reward="j.score"))
    bind = op.get_bind()
    cast = "CAST(:d AS JSONB)" if bind.dialect.name == "postgresql" else ":d"
    back = []
    for i, score, ok, details, mode, reward, reward_ok in bind.execute(sa.text(
            "SELECT id, score, parse_ok, details, reward_mode, reward, reward_ok FROM judgments WHERE reward_mode IS NOT NULL")):
        value = json.loads(details) if isinstance(details, str) else (details or {})
        back.append({"i": i, "s": reward, "o": bool(reward_ok),
                     "d": json.dumps({**(value or {}), "reward": mode, "judged_score": score, "judged_parse_ok": ok})})
    _update(bind, f"UPDATE judgments SET score = :s, parse_ok = :o, details = {cast} WHERE id = :i", back)
    for column in ("reward_ok", "reward", "reward_mode"):
        _drop("judgments", column)
