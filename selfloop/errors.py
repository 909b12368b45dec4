"""Errors a user can act on. The CLI prints them as one line (a traceback only with --debug)."""


class SelfloopError(Exception):
    """A failure with a message that says what is wrong and what to do about it."""

    exit_code = 1


class ConfigError(SelfloopError):
    """The configuration is invalid. systemd's RestartPreventExitStatus names this code."""

    exit_code = 2


class SchemaError(SelfloopError):
    """The database schema does not match this version of selfloop."""

    exit_code = 3


class CheckpointError(SelfloopError):
    """A checkpoint directory is missing, truncated, altered or lacks its manifest."""


class ReadOnlyViolation(SelfloopError):
    """A statement given to `selfloop sql` would write; it was refused."""


class LockedError(SelfloopError):
    """Another process writes this loop."""

    exit_code = 4


class LockLost(LockedError):
    """This process lost its writer lock (another process took the loop over); it stops before its next commit."""


class Interrupted(Exception):
    """Raised inside a phase when a stop was requested; the phase's committed rows stay."""
