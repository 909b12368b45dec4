"""A user's text file read whole, with bounds: what the config names (task and eval files, a judge template) is
refused in one line naming the config field and the file when it is missing, too large, unreadable or not UTF-8."""

from __future__ import annotations

from pathlib import Path

from selfloop.errors import ConfigError

MAX_FILE_BYTES = 256 * 1024 * 1024  # a task or eval file is read whole into memory and every prompt is tokenised


def read_user_file(path: Path, field: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """A user's text file, whole; ConfigError naming the config field and the file when it cannot be used."""
    path = Path(path).expanduser()
    try:
        if not path.is_file():
            raise ConfigError(f"{field}: {path} does not exist" if not path.exists() else f"{field}: {path} is not a file")
        size = path.stat().st_size
        if size > max_bytes:
            raise ConfigError(f"{field}: {path} is {size} bytes, above the limit of {max_bytes}")
        data = path.read_bytes()
    except PermissionError:
        raise ConfigError(f"{field}: {path} is not readable (permission denied)") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{field}: {path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None
