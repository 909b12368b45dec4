"""How a loop is operated: schedule, database, metrics endpoint, warnings, trackers, logging."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_serializer, field_validator

from selfloop.config.base import Section, upto


class ScheduleConfig(Section):
    """When the daemon starts iterations, and its maintenance jobs."""

    mode: Literal["continuous", "interval", "cron"] = Field(
        "continuous", description="When the daemon starts iterations: back to back, every N minutes, or in a cron window."
    )
    every_minutes: Annotated[int, upto(366 * 24 * 60)] = Field(60, description="interval: minutes between iteration starts.")
    cron: str = Field("0 1 * * *", description="cron: crontab expression (minute hour day month weekday) that starts iterations.")
    backup_every_minutes: Annotated[int, upto(366 * 24 * 60, 0)] = Field(360, description="SQLite backup period (0: off).")
    backups_keep: Annotated[int, upto(10_000)] = Field(5, description="Newest backups kept.")
    keep_checkpoints: Annotated[int, upto(1_000_000)] = Field(
        3, description="Retention: keep promoted checkpoints and the newest K others.")
    retention_every_minutes: Annotated[int, upto(366 * 24 * 60, 0)] = Field(60, description="Checkpoint retention period (0: off).")
    wal_checkpoint_every_minutes: Annotated[int, upto(366 * 24 * 60, 0)] = Field(30, description="SQLite WAL checkpoint period (0: off).")

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, v: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(v)
        except ValueError as exc:
            raise ValueError(f"not a crontab expression: {exc}") from None
        return v


class DatabaseConfig(Section):
    """Where the history is stored."""

    url: str | None = Field(
        None,
        description="SQLAlchemy URL: sqlite:///path.db or postgresql+psycopg://user@host/db. Null: <state_dir>/selfloop.db. "
        "A password written here is used but never stored, shown, sent to a tracker or logged: give it by "
        "database.password_file, PGPASSFILE (~/.pgpass) or PGPASSWORD instead, so a resumed loop finds it too.",
    )
    password_file: Path | None = Field(
        None, description="PostgreSQL: a file whose first line is the password of database.url's user (read when "
        "connecting; the password is never stored). Null: libpq's PGPASSWORD, PGPASSFILE or ~/.pgpass.",
    )
    reader_url: str | None = Field(
        None,
        description="PostgreSQL: URL of the read-only role that user SQL runs as (`selfloop sql`, the dashboard); "
        "`selfloop db create-reader` creates it and prints this URL (its password is never stored either).",
    )
    busy_timeout_ms: Annotated[int, upto(3_600_000)] = Field(30000, description="SQLite: wait this long for a lock before failing.")
    statement_timeout_ms: Annotated[int, upto(3_600_000)] = Field(30000, description="`selfloop sql`: time limit of one statement.")

    @field_validator("url", "reader_url")
    @classmethod
    def _url_is_supported(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from selfloop import credentials
        from selfloop.db.engine import check_url

        check_url(v)
        credentials.remember(v)
        return v

    @field_serializer("url", "reader_url")
    def _without_password(self, v: str | None) -> str | None:
        from selfloop import credentials

        return credentials.strip_optional(v)


class MetricsConfig(Section):
    """Prometheus `/metrics` and `/health`, served by the daemon (and by `selfloop run --metrics-port N`)."""

    enabled: bool = Field(False, description="Serve /metrics and /health while the loop runs.")
    host: str = Field("127.0.0.1", description="Address to bind; anything but loopback exposes the loop's figures to the network.")
    port: Annotated[int, upto(65535, 0)] = Field(9464, description="TCP port (0: any free port, logged at start).")


class WarningsConfig(Section):
    """Floors under which a quiet failure becomes a warning event, a log warning and a metric."""

    min_judge_parse_rate: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.2, description="Warn when fewer LLM-judge answers than this share carry a readable score."
    )
    min_examples: Annotated[int, upto(1_000_000, 0)] = Field(1, description="Warn when an iteration selects fewer training examples.")
    min_accuracy: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        0.0, description="Warn when a held-out suite's greedy accuracy is at or below this (0: only a suite at zero; "
        "null: never). The starting policy is warned about once, in the loop's first iteration."
    )


class MLflowTrackingConfig(Section):
    """An MLflow run per loop (install `selfloop[mlflow]`)."""

    enabled: bool = Field(False, description="Send the loop's history to MLflow.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI (a server, or sqlite:///PATH); null: sqlite:///<state_dir>/mlflow.db. "
        "Credentials written in it (http://user:TOKEN@host) are used but never stored, shown or logged: give them by "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) instead."
    )
    experiment: str = Field("selfloop", description="Experiment name; each loop is one run in it.")
    log_adapters: bool = Field(False, description="Also upload each iteration's adapter as an artifact.")
    system_metrics: bool = Field(False, description="MLflow's system metrics (CPU, memory, disk, network, GPU) on the "
                                 "loop's run while it runs, every 10 s (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL); "
                                 "needs psutil (and pynvml for GPUs).")
    timeout_s: Annotated[int, upto(600)] = Field(
        10, description="Each request to an MLflow server waits at most this long and is retried once, so an "
        "outage is recorded (a tracking.failed event) within about twice this, and `selfloop track` fails by then.")

    @field_validator("tracking_uri")
    @classmethod
    def _not_a_file_store(cls, v: str | None) -> str | None:
        if v is not None and (v.startswith("file:") or "://" not in v and not v.startswith(("databricks", "sqlite:"))):
            raise ValueError(f"{v!r} is a file store, which MLflow 3 refuses: use sqlite:///PATH/mlflow.db for a "
                             "local store (or null for <state_dir>/mlflow.db), or an http(s):// tracking server")
        from selfloop import credentials

        credentials.remember(v)
        return v

    @field_serializer("tracking_uri")
    def _without_credentials(self, v: str | None) -> str | None:
        from selfloop import credentials

        return credentials.strip_optional(v)


class WandbTrackingConfig(Section):
    """A Weights & Biases run per loop (install `selfloop[wandb]`; online mode needs WANDB_API_KEY)."""

    enabled: bool = Field(False, description="Send the loop's history to W&B.")
    project: str = Field("selfloop", description="W&B project.")
    entity: str | None = Field(None, description="W&B entity (team or user); null: the account's default.")
    mode: Literal["online", "offline"] = Field("online", description="offline: write run files to disk only (`wandb sync` uploads them).")
    dir: Path | None = Field(None, description="Where W&B writes its files; null: the state directory.")
    log_adapters: bool = Field(False, description="Also log each iteration's adapter as an artifact.")
    system_stats: bool = Field(True, description="W&B's system statistics (CPU, GPU, memory) beside the loop's figures.")


class TrackingConfig(Section):
    """Experiment trackers fed from the store; a failing tracker never stops the loop."""

    mlflow: MLflowTrackingConfig = Field(default_factory=MLflowTrackingConfig)
    wandb: WandbTrackingConfig = Field(default_factory=WandbTrackingConfig)
    retry_every_s: Annotated[int, upto(86_400)] = Field(60, description="A failed tracker is retried (and caught up) this often.")
    stream_every_s: Annotated[float, Field(ge=0.0, le=3600.0)] = Field(
        10.0, description="While a phase runs, what the store gained is sent this often: a running train phase's steps "
        "make a live curve (0: send only when a phase ends).")


class LoggingConfig(Section):
    """Log format and destinations."""

    level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    json_lines: bool = Field(False, description="Log JSON lines instead of human-readable text (same as --log-json).")
    file: Path | None = Field(None, description="Also log to this file, rotated.")
    rotation: str = Field("100 MB", description="Rotate the log file at this size or interval.")
    retention: Annotated[int, upto(10_000)] = Field(5, description="Rotated log files kept.")
