"""Reading a config: YAML files (strict: no duplicate keys, no tags), paths relative to the file, `--set`
overrides, and validation whose every failure is a `ConfigError` with one line per problem naming the field path
and the bad value."""

from __future__ import annotations

import difflib
import getpass
import re
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from selfloop.config.sections import Config, DatabaseConfig, ModelConfig, section_type
from selfloop.errors import ConfigError
from selfloop.strict import StrictError, load_yaml


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the section at `loc` (list indices skipped), for "did you mean"."""
    model: type[BaseModel] | None = Config
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        ann = field.annotation
        args: list[Any] = [a for a in get_args(ann) if isinstance(a, type)] or [ann]
        model = next((a for a in args if section_type(a)), None)
    return list(model.model_fields) if model is not None else []


# Names other tools use for a field (TRL's, the transformers Trainer's, common abbreviations): spelling does not
# bring them close ("lr" is nearer "lora" than "learning_rate"), so they are looked up first.
ALIASES = {
    "lr": "learning_rate", "learningrate": "learning_rate", "bs": "batch_size", "per_device_train_batch_size": "batch_size",
    "num_train_epochs": "epochs", "n_epochs": "epochs", "max_tokens": "max_new_tokens", "max_completion_length":
    "max_new_tokens", "num_generations": "samples_per_prompt", "n": "samples_per_prompt", "num_samples":
    "samples_per_prompt", "r": "rank", "lora_r": "rank", "lora_alpha": "alpha", "lora_dropout": "dropout",
    "gradient_accumulation_steps": "grad_accum", "model": "base", "model_name_or_path": "base", "temp": "temperature",
}


def _format_error(err: ErrorDetails) -> str:
    path = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        known = _known_keys(err["loc"][:-1])
        alias = ALIASES.get(str(err["loc"][-1]).lower())
        close = [alias] if alias in known else difflib.get_close_matches(str(err["loc"][-1]), known, n=1, cutoff=0.6)
        return f"{path}: unknown key (value {value!r})" + (f"; did you mean {close[0]!r}?" if close else "")
    if kind == "missing":
        return f"{path}: required, but missing"
    if kind == "literal_error":
        from selfloop.plugins import broken_plugin

        why = broken_plugin(value)
        if why:  # the name of an installed plug-in that did not load: the reason, not the list of names
            return f"{path}: {value!r} is not available: {why}"
        expected = err["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
        return f"{path}: {value!r} is not one of {expected}"
    msg = err["msg"].removeprefix("Value error, ")
    bounds = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
    if kind.endswith("_parsing") or kind.endswith("_type") or kind in bounds:
        return f"{path}: {value!r}: {msg.lower()}"
    return f"{path}: {msg} (got {value!r})" if not isinstance(value, dict) else f"{path}: {msg}"


def validate_config(data: Any, source: str = "config") -> Config:
    """Validate a parsed mapping; raise ConfigError with one line per problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [_format_error(e) for e in exc.errors()]
        raise ConfigError(f"{source}: invalid config:\n  " + "\n  ".join(lines)) from None


def read_yaml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except StrictError as exc:
        raise ConfigError(f"{path}{exc.where}: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except PermissionError:
        # Typical under systemd: /etc/selfloop not readable by the service's user.
        raise ConfigError(f"{path}: permission denied for user {getpass.getuser()} (make the file and its "
                          f"directory readable by that user or its group)") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty (a config needs at least loop.name)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.path=value` overrides (values parsed as YAML scalars/lists) to a raw mapping."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        try:
            value = load_yaml(raw)
        except StrictError as exc:
            raise ConfigError(f"--set {item!r}: the value is refused: {exc}") from None
        node: Any = data
        steps = []  # keys and list indices: eval.suites[0].size -> eval, suites, 0, size
        for part in key.split("."):
            m = re.fullmatch(r"([^\[\]]+)((?:\[\d+\])*)", part)
            if not m:
                raise ConfigError(f"--set {item!r}: {part!r} is not a key (name or name[index])")
            steps += [m.group(1), *(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))]
        for step, following in zip(steps[:-1], steps[1:], strict=True):
            if isinstance(step, int):
                if not isinstance(node, list) or step >= len(node):
                    raise ConfigError(f"--set {item!r}: index {step} is out of range")
                node = node[step]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {step!r} is not in a section")
            node = node.setdefault(step, [] if isinstance(following, int) else {})
        last = steps[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or last >= len(node):
                raise ConfigError(f"--set {item!r}: index {last} is out of range")
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {item!r}: {last!r} is not in a section")
        node[last] = value
    return data


def read_config_file(path: Path | str) -> dict[str, Any]:
    """A config file's mapping with its relative paths (path fields, a model.base written as ./ or ../, a
    relative sqlite:/// URL) made absolute against the file's own directory, not the working directory: the
    same file means the same loop from wherever it is run."""
    path = Path(path)
    data = read_yaml(path)
    return _absolute_paths(data, Config, path.resolve().parent)


def _absolute_paths(data: dict[str, Any], model: type[BaseModel], base: Path) -> dict[str, Any]:
    for key, value in list(data.items()):
        field = model.model_fields.get(key)
        if field is None:
            continue
        ann = field.annotation
        args: list[Any] = [a for a in get_args(ann) if isinstance(a, type)] or [ann]
        section = next((a for a in args if section_type(a)), None)
        if isinstance(value, dict) and section is not None:
            data[key] = _absolute_paths(dict(value), section, base)
        elif isinstance(value, list) and section is not None:
            data[key] = [_absolute_paths(dict(v), section, base) if isinstance(v, dict) else v for v in value]
        elif isinstance(value, str) and value and Path in args and not Path(value).expanduser().is_absolute():
            data[key] = str(base / value)
        elif isinstance(value, str) and (model, key) == (ModelConfig, "base") and value.startswith(("./", "../")):
            data[key] = str(base / value)
        elif isinstance(value, str) and (model, key) == (DatabaseConfig, "url") and value.startswith("sqlite:///") \
                and not value.removeprefix("sqlite:///").startswith("/"):
            data[key] = f"sqlite:///{base / value.removeprefix('sqlite:///')}"
    return data


def stored_config(snapshot: Any, loop: str) -> Config:
    """A loop's stored config snapshot as the validated model: this version's defaults fill the fields added since
    it was stored. Every reader of a stored config goes through here, not through the raw mapping."""
    return validate_config(snapshot, source=f"loop {loop} (stored config)")


def load_config(path: Path | str, overrides: list[str] | None = None) -> Config:
    data = read_config_file(path)
    if overrides:
        data = apply_overrides(data, overrides)
    return validate_config(data, source=str(path))


def keep_secrets(config: Config, source: Config) -> Config:
    """`config` (validated from `source`'s dump, which strips the secrets its URLs carry) with those URLs as
    `source` holds them, where an override did not change them."""
    from selfloop.credentials import strip

    pairs = ((config.database, source.database, "url"), (config.database, source.database, "reader_url"),
             (config.tracking.mlflow, source.tracking.mlflow, "tracking_uri"))
    for new, old, field in pairs:
        before = getattr(old, field)
        if before is not None and getattr(new, field) == strip(before):
            setattr(new, field, before)
    return config
