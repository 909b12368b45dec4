"""Owner-only directories: state, checkpoints, caches, backups and reports hold weights and history."""

from __future__ import annotations

from pathlib import Path


def private_dir(path: Path) -> Path:
    """Create `path` and every missing parent with mode 0700 (mkdir's `parents=True` would give the
    parents the umask's default, typically 0755); existing directories are left as they are."""
    path = Path(path)
    missing, folder = [], path
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # another process made it meanwhile
            pass
    return path
