"""Running a lab: every arm x seed is a loop on the lab's store, named <lab>.<arm>.s<seed>, run to its last
iteration like `selfloop run` (so a killed lab resumes where each loop stopped, with the rows an uninterrupted run
would have written). Arms start from one point: the config's base model, or a stored loop's checkpoint (each arm a
fork of it). `eval.reuse_from_store` is on for every arm, so the start's held-out answers are computed once (the
control runs first) and copied to the others; `eval.cache_dir` (.lab/eval-cache beside the lab file unless the
config names one) keeps them by content for every other store and lab on the machine. A finished arm x seed
appends one line to the results file, with the commit, date and machine; the report is built from those lines.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from selfloop.errors import SelfloopError
from selfloop.lab import provenance
from selfloop.lab.report import outcome_line
from selfloop.lab.spec import overrides, read_lab

if TYPE_CHECKING:
    from selfloop.config import Config


@dataclass(frozen=True)
class Piece:
    arm: str
    seed: int

    def loop(self, lab: str) -> str:
        return f"{lab}.{self.arm}.s{self.seed}"

    def __str__(self) -> str:
        return f"{self.arm}/{self.seed}"


class Lab:
    def __init__(self, path: Path | str, *, archive: bool = False) -> None:
        self.path = Path(path)
        self.spec, self.home = read_lab(self.path)
        self._configs: dict[Piece, Config] = {}
        self.archive = True if archive else None  # keep the store beside the results after each piece
        self.failed: list[tuple[Piece, str]] = []  # the pieces of the last run that failed, and why

    @property
    def url(self) -> str:
        """The lab's store: `database` (a relative sqlite:/// path is the lab file's, as every path in it is), or
        .lab/<name>.db beside the lab file."""
        if self.spec.database:
            database = self.spec.database
            if database.startswith("sqlite:///") and not database.removeprefix("sqlite:///").startswith("/"):
                return f"sqlite:///{self.home / database.removeprefix('sqlite:///')}"
            return database
        return f"sqlite:///{self.home / '.lab' / f'{self.spec.name}.db'}"

    @property
    def results(self) -> Path:
        return self.home / (self.spec.results or Path("results") / f"{self.spec.name}.jsonl")

    def config(self, piece: Piece) -> Config:
        """The piece's config: the base file, the budget, the arm's overlay, its seed, name and store."""
        if piece not in self._configs:
            from selfloop.config import apply_overrides, read_config_file, validate_config

            data = read_config_file(self.home / self.spec.config)
            # Every lab's stores share one eval cache beside the lab files (the base config, budget or arm may name
            # another, or null): a start evaluated once on this machine is evaluated for all of them.
            named = isinstance(data.get("eval"), dict) and "cache_dir" in data["eval"]
            cache = {} if named else {"eval.cache_dir": str(self.home / ".lab" / "eval-cache")}
            data = apply_overrides(data, [*overrides(cache), *overrides(self.spec.budget), *overrides(self.spec.arms[piece.arm]),
                                          f"loop.seed={piece.seed}", f"loop.name={piece.loop(self.spec.name)}",
                                          f"database.url={json.dumps(self.url)}", "eval.reuse_from_store=true"])
            self._configs[piece] = validate_config(data, source=f"lab {self.spec.name}, arm {piece.arm}")
        return self._configs[piece]

    def arm_config(self, arm: str) -> Config:
        """An arm's config as its first seed runs it: the seeds differ only in loop.seed and the loop's name."""
        return self.config(Piece(arm, self.spec.seeds[0]))

    def pieces(self, only: list[str] | None = None) -> list[Piece]:
        """Every arm x seed (the control's first, so the others copy its start evaluation), or those `only` names
        as ARM (its seeds in the lab's order) or ARM/SEED, in the order given: a queue of pieces runs as it is
        written (the start's evaluation is shared whichever piece computes it first)."""
        arms = [self.spec.control] + [a for a in self.spec.arms if a != self.spec.control]
        every = [Piece(arm, seed) for seed in self.spec.seeds for arm in arms]
        if not only:
            return every
        chosen = []
        for item in only:
            arm, _, seed = item.partition("/")
            if arm not in self.spec.arms:
                raise SelfloopError(f"--only {item!r}: no arm {arm!r} in {self.path} (arms: {', '.join(self.spec.arms)})")
            if seed and (not seed.isdigit() or int(seed) not in self.spec.seeds):
                raise SelfloopError(f"--only {item!r}: seed {seed!r} is not one of the lab's seeds {self.spec.seeds}")
            chosen += [p for p in every if p.arm == arm and (not seed or p.seed == int(seed)) and p not in chosen]
        return chosen

    def guards(self) -> dict[str, Any]:
        """Each arm's guard config (the seeds share it), which `lab report` replays the arm's long runs under; none
        (the guard's defaults) where the lab's base config is not at hand: a report reads results lines alone."""
        if not (self.home / self.spec.config).is_file():
            logger.warning("lab {}: no base config at {}; the guard is replayed under its default rules",
                           self.spec.name, self.home / self.spec.config)
            return {}
        return {arm: self.arm_config(arm).guard for arm in self.spec.arms}

    def tolerance_of(self, loop: str) -> float:
        """The promotion gate's tolerance of one of the lab's loops (LAB.ARM.sSEED), as its arm's config sets it."""
        arm = loop.removeprefix(f"{self.spec.name}.").rpartition(".s")[0]
        if arm not in self.spec.arms:
            raise SelfloopError(f"lab {self.spec.name}: loop {loop!r} is not one of its arms' loops")
        return self.arm_config(arm).eval.tolerance

    def check(self) -> None:
        """Every arm's config validates, and every arm is measured on the same held-out suites."""
        suites = None
        for arm in dict.fromkeys(p.arm for p in self.pieces()):  # the control's first: the others differ from it
            mine = [s.model_dump(mode="json") for s in self.arm_config(arm).eval.suites]
            if suites is None:
                suites = mine
            elif mine != suites:
                raise SelfloopError(f"lab {self.spec.name}: arm {arm!r} changes eval.suites; every arm is "
                                    "measured on the same problems (set suites in the base config or the budget)")

    def _has_store(self) -> bool:
        """False only for a SQLite store not created yet (a server's database always answers)."""
        return not self.url.startswith("sqlite:///") or Path(self.url.removeprefix("sqlite:///")).exists()

    def status(self) -> list[tuple[Piece, str]]:
        """Each piece: 'not started', or its loop's status and iterations done."""

        from selfloop.db.engine import open_database
        from selfloop.db.lab import piece_states

        if not self._has_store():
            return [(p, "not started") for p in self.pieces()]
        db = open_database(self.url, deferred=True)
        try:
            with db.session() as session:
                found = piece_states(session, self.spec.name)
        finally:
            db.dispose()
        out = []
        for p in self.pieces():
            status, done = found.get(p.loop(self.spec.name), (None, 0))
            out.append((p, "not started" if status is None else f"{status}, {done} iteration(s) done"))
        return out

    # -- running ---------------------------------------------------------------------------------------------
    def run(self, only: list[str] | None = None, jobs: int = 1, stop: Callable[[], bool] = lambda: False,
            checked: bool = False, allow_dirty: bool = False) -> list[Piece]:
        """Run the pieces not finished yet (all of them in order, or `jobs` at a time in worker processes); return
        the ones finished now. `checked`: the lab file was checked already (a worker process of a run with
        --jobs, whose parent checked it once)."""
        todo = self.pieces(only)  # a bad --only is refused before any config is read
        if not checked:
            provenance.refuse_dirty(_commit(ignore=self.written), allow_dirty, self.spec.name)
            self.check()
            self._check_start()
        if jobs <= 1:
            done = []
            for piece in todo:
                if stop():
                    break
                try:
                    finished = self.run_piece(piece, stop)
                except SelfloopError as exc:  # one arm's failure (a filter that keeps nothing...) stops only that arm
                    logger.error("lab {}: {} failed: {}; the other pieces go on", self.spec.name, piece, exc)
                    self.failed.append((piece, str(exc)))
                    continue
                if finished:
                    done.append(piece)
            return done
        return self._run_in_processes(todo, jobs)

    def _check_start(self) -> None:
        """A stored start (`start.loop`) must be in the lab's store already: nothing is created before that is
        known (the store was made, then the fork failed)."""
        if self.spec.start is None:
            return
        from selfloop.db.engine import open_database
        from selfloop.db.queries import loop_by_name

        where = f"lab {self.spec.name}: start.loop {self.spec.start.loop!r}"
        if not self._has_store():
            raise SelfloopError(f"{where}: the lab's store {self.url} does not exist yet; run that loop into it "
                                "first (or set `start: null` to start from the config's model.base)")
        db = open_database(self.url, deferred=True)
        try:
            with db.session() as session:
                if loop_by_name(session, self.spec.start.loop) is None:
                    raise SelfloopError(f"{where} is not a loop of the lab's store {self.url}")
        finally:
            db.dispose()

    def run_piece(self, piece: Piece, stop: Callable[[], bool] = lambda: False) -> bool:
        """Run one arm x seed to its end (resuming it if it ran before) and write its results line; whether it
        finished."""
        from selfloop.db.engine import open_database
        from selfloop.db.queries import loop_by_name
        from selfloop.runner import run_loop

        config = self.config(piece)
        name = piece.loop(self.spec.name)
        if self.url.startswith("sqlite:///"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        db = open_database(self.url, init=True)
        try:
            with db.session() as session:
                exists = loop_by_name(session, name) is not None
        finally:
            db.dispose()
        if not exists and self.spec.start is not None:
            from selfloop.lineage import fork_loop

            fork_loop(self.url, self.spec.start.loop, self.spec.start.at, name, data=config.model_dump(mode="json"),
                      source=f"lab {self.spec.name}, arm {piece.arm}")
        self._record(piece, config)
        logger.info("lab {}: {} (loop {})", self.spec.name, piece, name)
        started = time.monotonic()
        run_loop(config, None, stop)
        line = self._line(piece, time.monotonic() - started)
        if line is None:
            return False
        self._append(line)
        return True

    def _record(self, piece: Piece, config: Config) -> None:
        """The loop (created here if new) gets a 'lab.piece' event naming its lab, arm, seed and the arms' roles
        (control, oracle, spurious, label_free, demo): the dashboard's lab page groups loops by it."""

        from selfloop.db.engine import open_database
        from selfloop.db.lab import has_piece_event
        from selfloop.db.queries import add_event
        from selfloop.loop import open_loop

        db = open_database(self.url)
        try:
            loop = open_loop(db, config)
            with db.session() as session:
                if not has_piece_event(session, loop.id):
                    add_event(session, loop.id, None, "lab.piece", f"lab {self.spec.name}: arm {piece.arm}, seed {piece.seed}",
                              data={"lab": self.spec.name, "arm": piece.arm, "seed": piece.seed, **self.spec.roles()})
        finally:
            db.dispose()

    def _run_in_processes(self, todo: list[Piece], jobs: int) -> list[Piece]:
        from concurrent.futures import ThreadPoolExecutor

        def one(piece: Piece) -> Piece | None:
            cmd = [sys.executable, "-m", "selfloop", "lab", "run", str(self.path), "--only", str(piece), "--checked",
                   *(["--archive"] if self.archive else [])]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                why = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
                logger.error("lab {}: {} failed: {}", self.spec.name, piece, why)
                self.failed.append((piece, why))
                return None
            return piece

        first, rest = todo[:1], todo[1:]  # the first piece alone: the others copy its start evaluation
        done = [p for p in map(one, first) if p]
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            done += [p for p in pool.map(one, rest) if p]
        return done

    # -- results lines ---------------------------------------------------------------------------------------
    def _line(self, piece: Piece, seconds: float) -> dict | None:
        from selfloop.db.engine import open_database
        from selfloop.db.lab import loop_outcome

        config = self.config(piece)
        db = open_database(self.url, deferred=True)
        try:
            with db.session() as session:
                outcome = loop_outcome(session, piece.loop(self.spec.name))
        finally:
            db.dispose()
        if outcome is None or outcome["status"] != "finished":
            return None
        line = outcome_line(outcome, piece.arm, piece.seed, [s.model_dump(mode="json") for s in config.eval.suites])
        commit = _commit(ignore=self.written)
        sha, text = provenance.config_snapshot(config)
        provenance.keep_snapshot(self.results, sha, text)
        from selfloop.models.resolve import resolve_model, weights_sha256

        model = resolve_model(config.model.base, config.cache_dir(), config.model.revision)
        reproduce: dict[str, Any] = {"config_sha256": sha, "versions": provenance.versions(), "cpu": provenance.cpu_model(),
                     "model_sha256": weights_sha256(str(model.path))}
        if commit and commit.endswith("+dirty"):
            reproduce["diff_sha256"] = provenance.diff_sha256(Path(__file__).resolve().parent, ignore=self.written)
        if self.archive is not None:
            reproduce["store"] = self._archive()
        return {"lab": self.spec.name, "loop": piece.loop(self.spec.name), "overlay": self.spec.arms[piece.arm],
                "main_metric": config.eval.main_metric, "commit": commit,
                "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": _machine(),
                "run_seconds": round(seconds, 1), **reproduce, **line}

    @property
    def archived(self) -> Path:
        """Where --archive keeps the lab's store: `stores/<lab>.db.gz` beside the results."""
        return self.results.parent / "stores" / f"{self.spec.name}.db.gz"

    @property
    def written(self) -> list[Path]:
        """What the lab itself writes into a checked-in tree (its results lines and archived store): data, not a
        change to what a piece computes, so neither marks the next piece's commit '+dirty'."""
        return [self.results, self.archived]

    def _archive(self) -> str:
        """The lab's store as it is now, compressed beside the results (`stores/<lab>.db.gz`, replaced each time): the
        collapse monitors, promotions and gate replays a line summarises, for anyone to check. SQLite stores only."""
        import gzip
        import shutil
        import sqlite3

        from selfloop.db.engine import sqlite_path

        source = sqlite_path(self.url)
        if source is None:
            raise SelfloopError(f"lab {self.spec.name}: --archive copies an SQLite store; back a PostgreSQL one up "
                                "with pg_dump")
        target = self.archived
        target.parent.mkdir(parents=True, exist_ok=True)
        copy = target.with_name(f".{self.spec.name}.db.tmp")
        with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as live, sqlite3.connect(copy) as snapshot:
            live.backup(snapshot)  # a consistent copy while nothing else need stop
        with open(copy, "rb") as raw, gzip.open(target.with_name(f".{target.name}.tmp"), "wb", compresslevel=6) as packed:
            shutil.copyfileobj(raw, packed)
        copy.unlink()
        target.with_name(f".{target.name}.tmp").replace(target)
        return str(target.relative_to(self.results.parent))

    def _append(self, line: dict) -> None:
        """One line per finished loop: a re-run of a finished piece (same loop, same creation) adds none."""
        self.results.parent.mkdir(parents=True, exist_ok=True)
        with open(self.results, "a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            for old in f:
                try:
                    seen = json.loads(old)
                except json.JSONDecodeError:
                    continue
                if seen.get("loop") == line["loop"] and seen.get("created_at") == line["created_at"]:
                    return
            f.write(json.dumps(line, sort_keys=True) + "\n")

    def gate_decisions(self) -> tuple[str, list[str], list]:
        """The suite the gate decided on, the reported (test) suites, and every stored promotion decision of the
        lab's loops with its paired differences (selfloop.lab.gates)."""
        from selfloop.db.engine import open_database
        from selfloop.lab.gates import decisions

        config = self.config(self.pieces()[0])
        gate = config.eval.main_metric.partition("/")[0]
        names = [s.name for s in config.eval.suites]
        report = [s.name for s in config.eval.suites if s.split == "test"] or [n for n in names if n != gate]
        if not self._has_store():
            raise SelfloopError(f"lab {self.spec.name}: no store at {self.url} yet; `selfloop lab run {self.path}` first")
        db = open_database(self.url, deferred=True)
        try:
            with db.session() as session:
                return gate, report, decisions(session, f"{self.spec.name}.")
        finally:
            db.dispose()

    def lines(self) -> list[dict]:
        """This lab's results lines, the last one of each arm x seed (each checked: `selfloop.lab.results`)."""
        from selfloop.lab.results import read_lines

        return read_lines(self.results, self.spec.name)


def _commit(ignore: Sequence[Path] = (), here: Path | None = None) -> str | None:
    """The commit of the selfloop source this runs from, with '+dirty' if it has uncommitted changes. `ignore`: the
    files the lab itself writes (its results file, its archived store): data, not a change to what a piece computes
    (before, every piece after a checkout's first wrote '+dirty')."""
    here = here or Path(__file__).resolve().parent

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            raise OSError(out.stderr)
        return out.stdout.strip()

    try:
        sha, top = git("rev-parse", "HEAD"), Path(git("rev-parse", "--show-toplevel"))
        spec = [":/"]  # the whole work tree, wherever `here` is in it
        for ignored in (Path(p).resolve() for p in ignore):
            if ignored.is_relative_to(top.resolve()):  # git refuses a path outside the tree
                spec.append(f":(exclude){ignored}")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", *spec)
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"selfloop {version('selfloop')}"


def _machine() -> str:
    gpu = ""
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            gpu = f", {torch.cuda.get_device_name(0)}"
    return f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores{gpu})"

