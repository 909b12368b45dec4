"""Alembic migrations, shipped inside the wheel as selfloop.migrations."""
