"""Training algorithms, one module each. To add one: copy dpo.py, edit it, add a line below
and its options section to `selfloop.config.TrainConfig`. A module may define
`num_steps(n_examples, train)`; without it the loop trains `train.epochs` passes (capped by max_steps)."""

from types import ModuleType

from selfloop.algorithms import dpo, orpo, rest, rlsc, spin, ttrl

ALGORITHMS: dict[str, ModuleType] = {
    "dpo": dpo,
    "spin": spin,
    "ttrl": ttrl,
    "rlsc": rlsc,
    "rest": rest,
    "orpo": orpo,
}
