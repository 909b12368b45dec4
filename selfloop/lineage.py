"""A loop's lineage and identity: fork (a new loop from another's checkpoint), rename (its checkpoints move with
it) and remove (rows, then checkpoint directories). Each takes the loop's writer lock, so none runs beside a
process running the loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from selfloop.config import Config
from selfloop.db import iteration, upkeep
from selfloop.db.engine import Database
from selfloop.db.models import Loop
from selfloop.db.queries import add_event, loop_by_name, loop_named, no_loop, row
from selfloop.errors import SelfloopError
from selfloop.loop import fingerprint


def fork_loop(url: str, parent: str, at: int, name: str, data: dict[str, Any] | None = None,
              overrides: list[str] | None = None, source: str | None = None) -> str:
    """Fork `parent` at iteration `at` into a new loop `name` in the store at `url`, configured by `data` (a config
    file's mapping; None: the parent's stored config) with `overrides`; the new loop's name. What `selfloop fork`
    and `Store.fork` both run."""
    from selfloop.config import apply_overrides, validate_config
    from selfloop.db.engine import open_database
    from selfloop.inputs import check_inputs

    db = open_database(url)
    try:
        if data is None:
            with db.session() as session:
                found = loop_by_name(session, parent)
                if found is None:
                    raise SelfloopError(no_loop(session, parent))
                data = dict(found.config)
        data = apply_overrides(data, [*(overrides or []), f"loop.name={name}"])
        config = validate_config(data, source=source or f"loop {parent} (stored config)")
        config.database.url = url
        check_inputs(config)
        return fork(db, parent, at, config).name
    finally:
        db.dispose()


def fork(db: Database, parent_name: str, at: int, config: Config) -> Loop:
    """A new loop whose starting policy is iteration `at` of `parent_name`'s checkpoint.

    Nothing else is copied; the lineage (parent loop, parent iteration) is recorded. Refused when
    that iteration has no checkpoint, the checkpoint is gone or damaged, or the base models differ.
    """
    from selfloop.adapters import verify_checkpoint
    from selfloop.db.models import Checkpoint

    snapshot, digest = fingerprint(config)
    with db.session() as session:
        parent = loop_by_name(session, parent_name)
        if parent is None:
            raise SelfloopError(no_loop(session, parent_name))
        if loop_by_name(session, config.loop.name) is not None:
            raise SelfloopError(f"a loop named {config.loop.name!r} already exists: pick another --name")
        if at == 0:  # the parent's starting point: its own start checkpoint, or the base model
            if parent.base_model != config.model.base:
                raise SelfloopError(f"loop {parent_name!r} starts from {parent.base_model!r} but the fork's model.base is "
                                    f"{config.model.base!r}")
            return _new_fork(session, parent, at, parent.start_checkpoint_id, config, snapshot, digest)
        it = iteration.numbered(session, parent.id, at)
        if it is None:
            raise SelfloopError(f"loop {parent_name!r} has no iteration {at}")
        if it.output_checkpoint_id is None:
            raise SelfloopError(f"iteration {at} of {parent_name!r} has no checkpoint (it trained nothing or has not "
                                "finished training): fork from an iteration with one")
        ckpt = row(session, Checkpoint, it.output_checkpoint_id)
        if ckpt.status != "ok":
            raise SelfloopError(f"the checkpoint of iteration {at} of {parent_name!r} was deleted by retention")
        verify_checkpoint(config.checkpoint_dir(ckpt.path), ckpt.sha256)
        if ckpt.base_model != config.model.base:
            raise SelfloopError(f"the checkpoint was trained on {ckpt.base_model!r} but the fork's model.base is "
                                f"{config.model.base!r}")
        return _new_fork(session, parent, at, ckpt.id, config, snapshot, digest)


def _new_fork(session: Session, parent: Loop, at: int, checkpoint_id: int | None, config: Config,
              snapshot: dict[str, Any], digest: str) -> Loop:
    from selfloop.db.models import Checkpoint

    if checkpoint_id is not None:
        from selfloop.adapters import verify_checkpoint

        ckpt = row(session, Checkpoint, checkpoint_id)
        verify_checkpoint(config.checkpoint_dir(ckpt.path), ckpt.sha256)
    loop = Loop(
        name=config.loop.name, parent_loop_id=parent.id, parent_iteration=at, start_checkpoint_id=checkpoint_id,
        current_checkpoint_id=checkpoint_id, base_model=config.model.base, config=snapshot, config_hash=digest,
        main_metric=config.eval.main_metric, seed=config.loop.seed, status="ready",
    )
    session.add(loop)
    session.flush()
    start = f"checkpoint {checkpoint_id}" if checkpoint_id is not None else "the base model"
    add_event(session, loop.id, None, "loop.forked", f"loop {loop.name} forked from {parent.name} iteration {at} ({start})")
    return loop


def remove_loop(db: Database, name: str, config: Config) -> int:
    """Delete a loop's rows (one transaction) and then its checkpoint directories; return how many went.

    Refused while a process runs the loop, and while another loop starts from (or currently uses) one of
    its checkpoints. The rows go first: a crash after the commit leaves only directories no row points at,
    moved under a `.tmp-` name in the loop's directory, which the next writer of that name removes.
    """
    import shutil
    import uuid

    from selfloop.db import queries
    from selfloop.lock import LoopLock

    with LoopLock(db, name, "rm"):
        with db.session() as session:
            loop = loop_by_name(session, name)
            if loop is None:
                raise SelfloopError(no_loop(session, name))
            paths = queries.delete_loop_rows(session, loop)
        removed = 0
        for stored in paths:
            path = config.checkpoint_dir(stored)
            if path.is_dir():
                doomed = path.with_name(f".tmp-removed-{path.name}-{uuid.uuid4().hex[:8]}")
                path.rename(doomed)
                shutil.rmtree(doomed, ignore_errors=True)
                removed += 1
        return removed


def rename_loop(db: Database, old: str, new: str, config: Config) -> int:
    """Rename a loop (its stored config too) and move its checkpoint directory with it (checkpoints/OLD to
    checkpoints/NEW under the state directory of `config`), so a new loop of the old name finds its directory
    free; return how many checkpoints moved. Refused while either name is in use or when the new name is taken.

    The directory moves first (one rename), then the rows change in one transaction; if that fails the
    directory moves back. A crash between the two leaves rows that name the old directory: rename the
    directory back by hand (`mv checkpoints/NEW checkpoints/OLD`)."""

    from selfloop.config import LoopConfig, validate_config
    from selfloop.lock import LoopLock

    try:
        LoopConfig(name=new)
    except Exception:  # noqa: BLE001 - pydantic's message, in our words
        raise SelfloopError(f"{new!r}: a loop name is 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit") from None
    with LoopLock(db, old, "rename"), LoopLock(db, new, "rename"):
        with db.session() as session:
            loop = loop_by_name(session, old)
            if loop is None:
                raise SelfloopError(no_loop(session, old))
            if loop_by_name(session, new) is not None:
                raise SelfloopError(f"a loop named {new!r} already exists")
            stored = upkeep.trained_checkpoints(session, loop.id)
        old_dir, new_dir = config.state_dir() / "checkpoints" / old, config.state_dir() / "checkpoints" / new
        moving = {cid: path for cid, path in stored.items() if config.checkpoint_dir(path).parent.resolve() == old_dir.resolve()}
        moved = False
        if moving and old_dir.is_dir():
            if new_dir.exists() and any(new_dir.iterdir()):
                raise SelfloopError(f"{new_dir} exists and is not empty: move it away before renaming {old!r} to {new!r}")
            if new_dir.exists():
                new_dir.rmdir()
            old_dir.rename(new_dir)
            moved = True
        try:
            with db.session() as session:
                loop = loop_named(session, old)
                snapshot = {**loop.config, "loop": {**loop.config["loop"], "name": new}}
                loop.name = new
                loop.config, loop.config_hash = fingerprint(validate_config(snapshot, source=f"loop {old} (stored config)"))
                for cid, path in moving.items():
                    upkeep.move_checkpoint(session, cid, config.stored_checkpoint(new_dir / Path(path).name))
                add_event(session, loop.id, None, "loop.renamed", f"loop {old} renamed to {new}"
                          + (f"; {len(moving)} checkpoint(s) moved to {new_dir}" if moving else ""),
                          data={"from": old, "to": new})
        except BaseException:
            if moved:
                new_dir.rename(old_dir)
            raise
        return len(moving)
