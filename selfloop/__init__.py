"""selfloop: a daemon that makes a language model improve itself.

Generation, self-judging and LoRA training alternate in iterations; every prompt, sample,
judgment, pair, training step, checkpoint and evaluation is stored in a SQL database.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from loguru import logger

# A library logs nothing unless asked: in a notebook or a host process, selfloop's lines (with loguru's
# module:function:line prefix) would land on stderr uninvited. The CLI and the daemon turn them on with their own
# format (`selfloop.log.setup_logging`), which a Python user may call too.
logger.disable("selfloop")

# The Python API (selfloop.api), imported on first use so that `import selfloop` stays light; type checkers and
# `dir()` (tab completion) see the names as they are.
__all__ = ["Rows", "SelfloopError", "Store", "load_config", "open_store"]

if TYPE_CHECKING:
    from selfloop.api import Rows, Store, load_config, open_store
    from selfloop.errors import SelfloopError


def __getattr__(name: str) -> object:
    if name == "SelfloopError":
        from selfloop.errors import SelfloopError

        return SelfloopError
    if name in __all__:
        from selfloop import api

        return getattr(api, name)
    raise AttributeError(f"module 'selfloop' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
