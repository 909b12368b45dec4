"""selfloop: a daemon that makes a language model improve itself.

Generation, self-judging and LoRA training alternate in iterations; every prompt, sample,
judgment, pair, training step, checkpoint and evaluation is stored in a SQL database.
"""

__version__ = "0.1.0"

# The Python API (selfloop.api), imported on first use so that `import selfloop` stays light.
__all__ = ["Rows", "Store", "load_config", "open_store"]


def __getattr__(name: str):  # noqa: ANN202
    if name in __all__:
        from selfloop import api

        return getattr(api, name)
    raise AttributeError(f"module 'selfloop' has no attribute {name!r}")
