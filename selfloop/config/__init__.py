"""The configuration: section models (`sections`), reading and validating files (`loading`) and the generated
reference (`reference`). Loading a config imports no torch."""

from selfloop.config.loading import (
    apply_overrides,
    keep_secrets,
    load_config,
    read_config_file,
    read_yaml,
    stored_config,
    validate_config,
)
from selfloop.config.reference import config_reference
from selfloop.config.sections import (
    PHASES,
    Config,
    FieldMap,
    LoopConfig,
    LoraConfig,
    SuiteConfig,
    TaskSource,
    TrainConfig,
    default_cache_dir,
)

__all__ = [
    "PHASES", "Config", "FieldMap", "LoopConfig", "LoraConfig", "SuiteConfig", "TaskSource", "TrainConfig",
    "apply_overrides", "config_reference", "default_cache_dir", "keep_secrets", "load_config", "read_config_file", "read_yaml",
    "stored_config", "validate_config",
]
