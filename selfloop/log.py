"""Logging through loguru: readable lines on stderr (the journal under systemd), or JSON lines.

Libraries that log through the standard `logging` module (transformers, vLLM, alembic, APScheduler)
are routed into the same sink, so one stream holds everything.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from selfloop.credentials import redact, redact_exception
from selfloop.private import private_dir

if TYPE_CHECKING:
    from loguru import Record

_HUMAN = "<green>{time:YYYY-MM-DD HH:mm:ss}</green> <level>{level: <7}</level> {message}"


class _ToLoguru(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info, depth=6).log(level, "{}: {}", record.name, record.getMessage())


def _redact_record(record: Record) -> None:
    """No secret reaches a sink: URL passwords and the secrets this process uses are masked in the message and
    in a logged exception's message (`selfloop.credentials`)."""
    record["message"] = redact(record["message"])
    if record["exception"] is not None and record["exception"].value is not None:
        redact_exception(record["exception"].value)


def setup_logging(level: str = "INFO", json_lines: bool = False, file: Path | None = None, rotation: str = "100 MB",
                  retention: int = 5) -> None:
    """JSON lines carry the loop, iteration and phase as fields (`record.extra`), set by the loop per phase."""
    if not sys.stderr.isatty():
        # In the journal or a pipe, the Hub's and transformers' bars (weights loading, shards) are noise;
        # selfloop's own Progress logs a line every 30 s and a summary instead. Read at their import.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # ... and where they were imported already (a notebook, a host process), switched off in place.
        if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
            if "huggingface_hub" in sys.modules:
                from huggingface_hub.utils import disable_progress_bars

                disable_progress_bars()
            if "transformers" in sys.modules:
                from transformers.utils import logging as transformers_logging

                transformers_logging.disable_progress_bar()
    logger.remove()
    logger.enable("selfloop")  # a library is quiet until asked (selfloop/__init__.py)
    logger.configure(patcher=_redact_record)
    logger.add(sys.stderr, level=level, serialize=json_lines, format="{message}" if json_lines else _HUMAN,
               colorize=None if not json_lines else False, backtrace=False, diagnose=False)
    if file is not None:
        private_dir(file.parent)
        logger.add(file, level=level, serialize=json_lines, rotation=rotation, retention=retention, backtrace=False, diagnose=False)
    logging.basicConfig(handlers=[_ToLoguru()], level=logging.WARNING, force=True)
    for noisy in ("alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
