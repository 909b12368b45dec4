"""Directories written atomically and verified by a manifest of sha256 sums.

Used for LoRA checkpoints and the converted-model cache. Writing: files go to a temporary
sibling directory, each is fsynced, MANIFEST.json lists every file's size and sha256, the
directory is renamed into place and its parent fsynced. Only then may a database row point
at it. Verifying refuses a directory whose manifest is missing or whose files differ.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selfloop.errors import CheckpointError
from selfloop.private import private_dir

MANIFEST = "MANIFEST.json"
TMP_PREFIX = ".tmp-"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(directory: Path, extra: dict | None = None, *, private: bool = True) -> str:
    """Fsync every file, write MANIFEST.json; return the manifest's own sha256 (stored in the database)."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        _fsync(path)
        rel = path.relative_to(directory).as_posix()
        files[rel] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    body = json.dumps({"version": 1, "files": files, **(extra or {})}, indent=2, sort_keys=True).encode()
    manifest = directory / MANIFEST
    with open(manifest, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    if private:
        os.chmod(manifest, 0o600)
    return hashlib.sha256(body).hexdigest()


def verify(directory: Path, expected_sha256: str | None = None) -> dict:
    """Check the manifest and every file it lists; return the manifest. Raise CheckpointError naming the problem."""
    directory = Path(directory)
    if directory.is_symlink():
        raise CheckpointError(f"{directory}: is a symbolic link; refused")
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: directory is missing")
    for root, dirs, names in os.walk(directory):  # a link could point anywhere: no file is read through one
        for name in dirs + names:
            if os.path.islink(os.path.join(root, name)):
                raise CheckpointError(f"{os.path.join(root, name)}: a symbolic link inside the directory; refused")
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise CheckpointError(f"{manifest}: manifest is missing; refusing to load an unverified directory")
    body = manifest.read_bytes()
    if expected_sha256 is not None and hashlib.sha256(body).hexdigest() != expected_sha256:
        raise CheckpointError(f"{manifest}: manifest was altered (sha256 differs from the one recorded in the database)")
    try:
        data = json.loads(body)
        listed = data["files"]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{manifest}: manifest is not valid") from None
    for rel, meta in listed.items():
        path = directory / rel
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in the manifest but missing")
        size = path.stat().st_size
        if size != meta["size"]:
            raise CheckpointError(f"{path}: truncated or extended ({size} bytes, manifest says {meta['size']})")
        if file_sha256(path) != meta["sha256"]:
            raise CheckpointError(f"{path}: contents altered (sha256 differs from the manifest)")
    unlisted = [p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST and p.relative_to(directory).as_posix() not in listed]
    if unlisted:
        raise CheckpointError(f"{unlisted[0]}: not listed in the manifest")
    return data


@contextmanager
def atomic_directory(final: Path, extra: dict | None = None, *, private: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of `final` to fill; on success write the manifest and rename it into place.

    The manifest sha256 is available afterwards as `final_sha256(final)`. On failure the temporary
    directory is removed; a crash leaves only a `.tmp-*` sibling, which `remove_stale_temporaries` cleans.
    private: owner-only (checkpoints, the model cache); False follows the umask (a merged model made to share).
    """
    final = Path(final)
    if private:
        private_dir(final.parent)
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{TMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(mode=0o700 if private else 0o777)
    try:
        yield tmp
        mask = 0o077 if private else _umask()  # libraries write some files 0600 (safetensors via a temporary file)
        for path in tmp.rglob("*"):
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
        write_manifest(tmp, extra, private=private)
        if final.exists():
            shutil.rmtree(final)  # a complete but unrecorded directory from an earlier crash
        os.rename(tmp, final)
        _fsync(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def manifest_sha256(directory: Path) -> str:
    return hashlib.sha256((Path(directory) / MANIFEST).read_bytes()).hexdigest()


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Delete `.tmp-*` directories a crash left under root (any depth); return what was removed."""
    removed = []
    if root.is_dir():
        for path in sorted(root.rglob(f"{TMP_PREFIX}*")):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed
