"""A lab file: one start, one budget, seeds, and arms (config overlays), run as loops on one store and compared
against a control and an oracle arm. Torch-free: `selfloop lab` checks a lab file without loading a model.

```yaml
name: methods-arithmetic            # its loops are <name>.<arm>.s<seed>
config: ../configs/ttrl-cpu.yaml    # the base config every arm overlays (relative to this file)
start: null                         # the config's model.base; or {loop: NAME, at: N} in the same store
database: null                      # default: sqlite:///<this file's directory>/.lab/<name>.db
results: results/methods.jsonl     # one line per finished arm x seed (relative to this file)
seeds: [0, 1, 2]
budget: {loop.max_iterations: 3}    # overrides every arm shares
control: control
oracle: oracle
ceilings: {}                        # arm -> its own ceiling arm where `oracle` is not (another budget)
spurious: shuffled                  # the goals: the spurious-reward control, the label-free arms, the demo's arm
label_free: [ttrl]
demo: ttrl
arms:
  control: {loop.phases: [evaluate, promote]}
  ttrl: {}
  oracle: {judge.reward: verify}
  shuffled: {judge.reward: shuffled}
```
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from selfloop.errors import ConfigError

Overlay = dict[str, Any]  # dotted config keys -> values, as `--set` takes them
ROLES = ("control", "oracle", "spurious", "label_free", "demo", "ceilings")  # what the report's comparison and goals read


class LabStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    loop: str = Field(description="A loop in the lab's store whose checkpoint every arm starts from.")
    at: Annotated[int, Field(ge=0)] = Field(description="Its iteration (0: that loop's own start).")


class LabFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The lab's name; its loops are <name>.<arm>.s<seed>.")
    config: Path = Field(description="The base config file every arm overlays (relative to the lab file).")
    start: LabStart | None = Field(None, description="null: the config's model.base; else a stored loop's checkpoint.")
    database: str | None = Field(None, description="The store (default: .lab/<name>.db beside the lab file).")
    results: Path | None = Field(None, description="The results-line file (default: results/<name>.jsonl beside it).")
    seeds: list[Annotated[int, Field(ge=0, le=2**63 - 1)]] = Field([0], min_length=1, max_length=100)
    budget: Overlay = Field(default_factory=dict, description="Overrides every arm shares (iterations, prompts, ...).")
    control: str = Field("control", description="The arm every gain is measured against (training off).")
    oracle: str | None = Field(None, description="The ceiling arm: every gain is also given as a fraction of its.")
    spurious: str | None = Field(None, description="The spurious-reward control (rewards with no information): its "
                                 "gain should be within the noise of the control's.")
    label_free: list[str] = Field(default_factory=list, max_length=100, description="The arms that use no known "
                                  "answer (a goal asks one to reach half the oracle's gain).")
    demo: str | None = Field(None, description="The arm the default demo runs (a goal asks it to be the best "
                             "label-free arm).")
    ceilings: dict[str, str] = Field(default_factory=dict, max_length=100, description="arm -> the arm whose gain its "
                                     "fraction of the oracle is taken against, where `oracle` is not its ceiling (an arm "
                                     "on another budget: 10 iterations against an oracle of 10).")
    arms: dict[str, Overlay] = Field(min_length=1, max_length=100)

    @field_validator("name")
    @classmethod
    def _simple_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,59}", v):
            raise ValueError("1-60 letters, digits, '_' or '-', starting with a letter or digit")
        return v

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, v: dict[str, Overlay]) -> dict[str, Overlay]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,29}", name):
                raise ValueError(f"arm {name!r}: 1-30 letters, digits, '_' or '-', starting with a letter or digit")
        return v

    @model_validator(mode="after")
    def _named_arms_exist(self) -> LabFile:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("a seed is listed twice")
        for role, named in self.roles().items():
            for arm in _arms_named(named):
                if arm is not None and arm not in self.arms:
                    raise ValueError(f"{role} {arm!r} is not one of the arms ({', '.join(self.arms)})")
        return self

    def roles(self) -> dict[str, Any]:
        """The arms' roles (ROLES), as `compare` takes them and the 'lab.piece' events record them."""
        return {role: getattr(self, role) for role in ROLES}


def _arms_named(role: str | list[str] | dict[str, str] | None) -> list[str | None]:
    """The arms a role names: one arm (or None), a list of arms, or a mapping whose keys and values are both arms."""
    if isinstance(role, dict):
        return [*role, *role.values()]
    return list(role) if isinstance(role, list) else [role]


def overrides(overlay: Overlay) -> list[str]:
    """An overlay as `--set` strings (values as JSON, which the strict YAML loader reads)."""
    return [f"{key}={json.dumps(value)}" for key, value in overlay.items()]


def read_lab(path: Path | str) -> tuple[LabFile, Path]:
    """The validated lab file and its directory (paths in it are relative to it); one line per problem."""
    from selfloop.config import read_yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"lab file not found: {path}")
    data = read_yaml(path)
    try:
        lab = LabFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: invalid lab file: {problems}") from None
    return lab, path.resolve().parent
