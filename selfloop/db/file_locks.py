"""Locks on bytes of an SQLite database file itself, which every name of the file reaches (a symlink, a bind
mount of the file or of its directory): a loop's writer lock (`selfloop.lock`) and the claim of the one name
that writers of the file use.

They are open-file-description locks (F_OFD_SETLK): held by a descriptor, not by the process, so two locks in one
process conflict as two processes' do. Their bytes lie far above SQLite's own lock bytes (1 GiB to 1 GiB + 511)
and above any database's size. Descriptors are never closed while the process lives: closing any descriptor of a
file drops every POSIX lock the process holds on it, SQLite's own included; an idle one is reused for the next lock
on the same file.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import struct
import threading
from pathlib import Path

from selfloop.errors import SelfloopError

LOOP_BASE = 1 << 48  # a loop's writer byte: LOOP_BASE + 40 bits of its name's hash
NAME_BASE = 1 << 56  # the name writers use: NAME_BASE + 32 bits of the path's hash
NAME_SPAN = 1 << 32
NAME_GUARD = NAME_BASE - 1  # held while a name is checked and claimed, so two names cannot pass the check at once

_idle: dict[tuple[int, int], list[int]] = {}
_claimed: dict[tuple[int, int], tuple[str, int]] = {}
_mutex = threading.Lock()


def _key(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _flock(kind: int, offset: int, length: int = 1) -> bytes:
    """A `struct flock` (l_pid 0, as open-file-description locks require)."""
    return struct.pack("@hhqqi4x", kind, os.SEEK_SET, offset, length, 0)


def descriptor(path: Path) -> int:
    """A read-write descriptor of the file, idle (holding no lock), for the life of the process."""
    with _mutex:
        idle = _idle.setdefault(_key(path), [])
        if idle:
            return idle.pop()
    return os.open(path, os.O_RDWR | os.O_CLOEXEC)


def park(fd: int) -> None:
    """Give back a descriptor that holds no lock any more."""
    st = os.fstat(fd)
    with _mutex:
        _idle.setdefault((st.st_dev, st.st_ino), []).append(fd)


def try_lock(fd: int, offset: int, *, shared: bool = False) -> bool:
    """Take one byte's lock without waiting; False when another descriptor holds a conflicting one."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_RDLCK if shared else fcntl.F_WRLCK, offset))
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def unlock(fd: int, offset: int) -> None:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_UNLCK, offset))


def _held_by_another(fd: int, offset: int, length: int) -> bool:
    """Whether another descriptor holds any lock in [offset, offset + length)."""
    if length <= 0:
        return False
    answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock(fcntl.F_WRLCK, offset, length))
    return struct.unpack("@hhqqi4x", answer)[0] != fcntl.F_UNLCK


def name_offset(path: str) -> int:
    return NAME_BASE + int.from_bytes(hashlib.sha256(path.encode()).digest()[:4], "big")


def claim_name(path: Path) -> None:
    """Claim `path` as the name through which this process writes the SQLite file, for the life of the process.
    SQLite keeps a WAL file and shared memory per name, so writers through two names (a bind mount makes a second
    name without a second link) would each see their own WAL and overwrite each other's commits: a writer through
    another name than the one in use is refused, in one line."""
    name = os.path.realpath(path)  # the name SQLite derives its WAL's from (it resolves symlinks)
    key = _key(path)
    with _mutex:
        if key in _claimed and _claimed[key][0] == name:
            return
        mine = name_offset(name)
        if key in _claimed:
            raise SelfloopError(f"{name}: this process writes the same database file through "
                                f"{_claimed[key][0]}; use one path (SQLite keeps a WAL per name)")
    fd = descriptor(path)
    fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, _flock(fcntl.F_WRLCK, NAME_GUARD))
    try:
        other = _held_by_another(fd, NAME_BASE, mine - NAME_BASE) or \
            _held_by_another(fd, mine + 1, NAME_BASE + NAME_SPAN - mine - 1)
        if other:
            raise SelfloopError(f"{name}: the same database file is being written through another path (a bind "
                                "mount or another name of the file); SQLite keeps a WAL per name, so writers through "
                                "two names would overwrite each other's commits: use the path the other writer uses")
        if not try_lock(fd, mine, shared=True):  # a read lock; only the guard's holder takes write locks here
            raise SelfloopError(f"{name}: could not claim the database file's name lock")
    except BaseException:
        unlock(fd, NAME_GUARD)
        park(fd)
        raise
    unlock(fd, NAME_GUARD)
    with _mutex:
        _claimed[key] = (name, fd)
