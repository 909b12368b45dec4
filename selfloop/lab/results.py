"""A lab's results file: one JSON line per finished arm x seed, appended by `selfloop lab run` and read by every
report. Each line is checked against the shape the report reads before any of it is used, so a hand-edited or
truncated file fails in one line naming its line and field, never as "unexpected error"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from selfloop.errors import SelfloopError
from selfloop.strict import StrictError, load_json

MAX_RESULTS_BYTES = 256 * 1024 * 1024


class SuiteRows(BaseModel):
    """A suite's held-out items of one piece: correct flags as '0'/'1' strings, the curve per iteration."""

    model_config = ConfigDict(extra="allow")
    start: str = Field(pattern=r"^[01]*$")
    final: str = Field(pattern=r"^[01]*$")
    curve: list[float | None] = []  # None: not answered that iteration (a suite answered at the loop's ends only)
    split: str = "eval"
    phrasing: str = "seen"

    @field_validator("final")
    @classmethod
    def _as_long_as_start(cls, v: str, info: Any) -> str:
        start = info.data.get("start")
        if start is not None and len(start) != len(v):
            raise ValueError(f"{len(v)} final flags for {len(start)} start flags")
        return v


class ResultLine(BaseModel):
    """What a report reads of a line; other keys are kept as they are."""

    model_config = ConfigDict(extra="allow")
    lab: str
    arm: str
    seed: int = Field(ge=0)
    suites: dict[str, SuiteRows]
    phase_seconds: dict[str, float] = {}
    run_seconds: float | None = None
    promoted: int = 0
    signal: dict[str, float] = {}
    commit: str | None = None
    monitors: list[dict[str, float]] = []  # per iteration: its number and label-free monitors (lines since 2026-12-07)


def read_lines(path: Path, lab: str) -> list[dict[str, Any]]:
    """The lines of `lab` in the results file at `path`, the last one of each arm x seed, each checked."""
    if not path.is_file():
        return []
    if path.stat().st_size > MAX_RESULTS_BYTES:
        raise SelfloopError(f"{path}: {path.stat().st_size} bytes, above the limit of {MAX_RESULTS_BYTES} for a results file")
    last: dict[tuple[str, int], dict[str, Any]] = {}
    for n, text in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not text.strip():
            continue
        try:
            raw = load_json(text)
        except StrictError as exc:
            raise SelfloopError(f"{path}:{n}: not a JSON line ({exc})") from None
        if not isinstance(raw, dict):
            raise SelfloopError(f"{path}:{n}: a results line is a JSON object, not {type(raw).__name__}")
        if raw.get("lab") != lab:
            continue
        try:
            line = ResultLine.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(line)"
            raise SelfloopError(f"{path}:{n}: {where}: {first['msg']} (a results line as `selfloop lab run` "
                                "writes it)") from None
        last[(line.arm, line.seed)] = line.model_dump()
    return list(last.values())
