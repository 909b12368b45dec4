"""`python -m selfloop ...` in processes forked from a warm interpreter, for the tests.

A fresh interpreter spends about 4 s of CPU importing torch, transformers and peft before a tiny loop
does anything; the suite starts over a hundred such processes. Here one server process per pytest
worker (multiprocessing's forkserver) imports them once, and every run is a child forked from it: a
real process with its own pid, environment, working directory, stdout and stderr, killed by real
signals, that runs `selfloop/__main__.py` as `python -m` does. What it does not exercise is interpreter
start-up itself; tests of that (the packaging, the plugins found through PYTHONPATH, the README's
`selfloop` script) start fresh interpreters.

The server forks only: it computes nothing with torch and starts no thread, so a fork inherits no
lock held by another thread.
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import weakref
from pathlib import Path

# What the server imports before it forks anything: the modules every loop run needs.
PRELOAD = ["tests.support.warm_imports"]

_context = None


def _ctx():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _main(argv: list[str], env: dict[str, str], cwd: str | None, umask: int, out: str, err: str,
          new_session: bool) -> None:
    """The child: become `python -m selfloop ARGV` in ENV, CWD and UMASK (what a Popen child inherits from the
    test process at its start; a fork inherits the server's), writing to the files OUT and ERR (and lead a
    session of its own when NEW_SESSION, as Popen's start_new_session)."""
    if new_session:
        os.setsid()
    os.umask(umask)
    os.environ.clear()
    os.environ.update(env)
    if cwd:
        os.chdir(cwd)
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = ["-m", *argv]
    try:
        runpy.run_module("selfloop", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:  # as the interpreter treats it at exit
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - an uncaught exception, printed as the interpreter prints it
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe, say
            pass
    os._exit(code)


class WarmProcess:
    """A started `python -m selfloop ...` child, with the part of subprocess.Popen's interface the tests use.
    Its stdout and stderr go to files; `communicate` and `output` read them."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 start_new_session: bool = False) -> None:
        started_by = sorted(k for k in (env or {}) if k.startswith("PYTHON"))
        if started_by:  # read when an interpreter starts: a fork of the warm one never sees them
            raise ValueError(f"{', '.join(started_by)} acts at interpreter start-up: run this one with fresh=True")
        self._dir = tempfile.mkdtemp(prefix="selfloop-warm-")
        weakref.finalize(self, shutil.rmtree, self._dir, True)  # the output files go with the object
        self.out_path = os.path.join(self._dir, "stdout")
        self.err_path = os.path.join(self._dir, "stderr")
        for path in (self.out_path, self.err_path):
            Path(path).touch()
        self.args = ["python", "-m", "selfloop", *argv]
        umask = os.umask(0o077)  # read it (the only way is to set it) and put it back
        os.umask(umask)
        self._process = _ctx().Process(target=_main, args=(list(argv), {**os.environ, **(env or {})},
                                                          str(cwd) if cwd else None, umask, self.out_path,
                                                          self.err_path, start_new_session))
        self._process.start()
        self.pid = self._process.pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not self._process.is_alive():
            self.returncode = self._process.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def output(self) -> tuple[str, str]:
        """What the process has written so far to stdout and stderr."""
        return (Path(self.out_path).read_text(errors="replace"), Path(self.err_path).read_text(errors="replace"))

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self.output()


def run(*argv: str, env: dict[str, str] | None = None, cwd: str | Path | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m selfloop ARGV` to its end, as subprocess.run(capture_output=True, text=True) returns it."""
    proc = WarmProcess(list(argv), env=env, cwd=cwd)
    started = time.monotonic()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
        out, err = proc.output()
        raise subprocess.TimeoutExpired(proc.args, time.monotonic() - started, output=out, stderr=err) from None
    out, err = proc.output()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
