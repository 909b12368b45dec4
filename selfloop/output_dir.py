"""Writing a folder of files to share (`selfloop report`, `selfloop lab report --out`): all or nothing, and never
through a symbolic link.

The files are written into a temporary sibling of the folder first; only when every one is complete are they
moved into place (renames, which replace a directory entry and never follow one). A full disk or any other failure
leaves the folder as it was and no half-written file, and its error names the folder, not the file that was being
written. A symbolic link at the folder or at any of its files' names is refused before anything is written, as
`selfloop export` refuses one.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from pathlib import Path

from selfloop.errors import SelfloopError


def write_folder(out: Path, files: dict[str, str | bytes | Path], what: str = "report") -> Path:
    """Write `files` (name -> text, bytes, or a file to copy) into the folder `out`; return `out`."""
    out = Path(out)
    if out.is_symlink():
        raise SelfloopError(f"--out {out}: a symbolic link; give the folder itself ({what}s are not written through links)")
    if out.exists() and not out.is_dir():
        raise SelfloopError(f"--out {out}: exists and is not a folder")
    for name in files:
        target = out / name
        if target.is_symlink():
            raise SelfloopError(f"--out {out}: {name} there is a symbolic link; remove it ({what}s are not written "
                                "through links)")
        if target.exists() and not target.is_file():
            raise SelfloopError(f"--out {out}: {name} there is not a regular file")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _failed(out, what, exc) from None
    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        for name, body in files.items():
            path = staging / name
            if isinstance(body, Path):
                shutil.copyfile(body, path)
            elif isinstance(body, bytes):
                path.write_bytes(body)
            else:
                path.write_text(body, encoding="utf-8")
        if not out.exists():
            os.rename(staging, out)
            return out
        for name in files:
            os.replace(staging / name, out / name)
    except OSError as exc:
        raise _failed(out, what, exc) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _failed(out: Path, what: str, exc: OSError) -> SelfloopError:
    if exc.errno == errno.ENOSPC:
        return SelfloopError(f"no space left on device writing the {what} to {out}: free some space, then try again "
                             "(nothing was left half-written)")
    return SelfloopError(f"cannot write the {what} to {out}: {exc.strerror or exc.__class__.__name__}")
