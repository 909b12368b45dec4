"""Atomic directories with manifests: what checkpoints and the model cache rely on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from selfloop.errors import CheckpointError
from selfloop.manifest import MANIFEST, atomic_directory, manifest_sha256, remove_stale_temporaries, verify


def _make(root: Path) -> Path:
    final = root / "ckpt"
    with atomic_directory(final) as tmp:
        (tmp / "a.bin").write_bytes(b"a" * 1000)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.json").write_text('{"x": 1}')
    return final


def test_round_trip_and_permissions(tmp_path: Path) -> None:
    final = _make(tmp_path)
    data = verify(final, manifest_sha256(final))
    assert set(data["files"]) == {"a.bin", "sub/b.json"}
    assert (final / "a.bin").stat().st_mode & 0o077 == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_missing_parents_are_created_owner_only(tmp_path: Path) -> None:
    # checkpoints/<loop>/iteration-0001: both new parents must be 0700 too, not the umask's 0755.
    old = os.umask(0o022)
    try:
        final = tmp_path / "checkpoints" / "loop" / "iteration-0001"
        with atomic_directory(final) as tmp:
            (tmp / "a.bin").write_bytes(b"a")
    finally:
        os.umask(old)
    for folder in (tmp_path / "checkpoints", tmp_path / "checkpoints" / "loop", final):
        assert folder.stat().st_mode & 0o777 == 0o700, folder


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_manifest", "extra_file", "missing_file", "manifest_edit",
                                    "linked_dir", "linked_file"])
def test_damage_is_refused_with_the_file_named(tmp_path: Path, damage: str) -> None:
    final = _make(tmp_path)
    recorded = manifest_sha256(final)
    target = final / "a.bin"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:-1])
        expected = "a.bin: truncated"
    elif damage == "flip":
        data = bytearray(target.read_bytes())
        data[10] ^= 1
        target.write_bytes(bytes(data))
        expected = "a.bin: contents altered"
    elif damage == "no_manifest":
        (final / MANIFEST).unlink()
        expected = "manifest is missing"
    elif damage == "extra_file":
        (final / "evil.py").write_text("x")
        expected = "evil.py: not listed"
    elif damage == "missing_file":
        target.unlink()
        expected = "a.bin: listed in the manifest but missing"
    elif damage == "linked_dir":  # identical contents, but reached through a link to elsewhere
        outside = tmp_path / "outside"
        (final / "sub").rename(outside)
        (final / "sub").symlink_to(outside)
        expected = "sub: a symbolic link"
    elif damage == "linked_file":
        outside = tmp_path / "outside.bin"
        target.rename(outside)
        target.symlink_to(outside)
        expected = "a.bin: a symbolic link"
    else:
        (final / MANIFEST).write_text((final / MANIFEST).read_text().replace('"version": 1', '"version": 2'))
        expected = "manifest was altered"
    with pytest.raises(CheckpointError, match=expected):
        verify(final, recorded)


def test_failure_inside_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "x") as tmp:
            (tmp / "f").write_text("partial")
            raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    (tmp_path / "loop" / ".tmp-ckpt-1234").mkdir(parents=True)
    (tmp_path / "loop" / "kept").mkdir()
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [".tmp-ckpt-1234"] and (tmp_path / "loop" / "kept").exists()
