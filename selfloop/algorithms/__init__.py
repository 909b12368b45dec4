"""Training algorithms, one module each. To add one: copy dpo.py and dpo_config.py, edit them, add a line
below and its options section to `selfloop.config.TrainConfig`. A module may define
`num_steps(n_examples, train)`; without it the loop trains `train.epochs` passes (capped by max_steps).

The modules (and torch) are imported on first use of `ALGORITHMS`: reading a config, `selfloop status` or
`selfloop sql` import only the `*_config.py` modules."""

from importlib import import_module
from types import ModuleType

# name -> module under selfloop.algorithms
MODULES: dict[str, str] = {
    "dpo": "dpo",
    "spin": "spin",
    "ttrl": "ttrl",
    "rlsc": "rlsc",
    "rest": "rest",
    "orpo": "orpo",
}


def __getattr__(name: str) -> dict[str, ModuleType]:
    if name == "ALGORITHMS":
        return {key: import_module(f"selfloop.algorithms.{module}") for key, module in MODULES.items()}
    raise AttributeError(name)
