"""The pipeline config: its schema, the dataset registry, where each step writes, and loading.

    values     the rules for paths and names, limits, ConfigError
    schema     the config's parts (files, datasets, model, sample, task runner)
    reading    YAML from a file; pydantic's problems as one line each
    registry   named datasets (configs/datasets.yaml), where their files and archives go
    locations  every step's folders, checked as a whole
    pipeline   PipelineConfig (the parts and the training settings) and parse_config
    load       load_config: all of the above, before any network

Imports run down that list only (no cycle). No heavy imports (no prefect, torch, transformers).
Each name below is imported from its module when first used, so ``datasets download`` never
builds the training settings' models (~35 ms of its start-up).
"""

from __future__ import annotations

import importlib

_HOME = {
    "check_config": "load", "load_config": "load", "planned_datasets": "load",
    "format_validation_error": "reading", "read_yaml": "reading",
    "PipelineConfig": "pipeline", "parse_config": "pipeline",
    "DatasetSpec": "schema", "FileSpec": "schema", "ModelSpec": "schema", "SampleSpec": "schema",
    "TaskRunnerSpec": "schema",
    "CONFIGS_DIR": "values", "MAX_CONNECTIONS": "values", "MAX_RETRIES": "values", "NAME_MAX": "values",
    "PROJECT_ROOT": "values", "RESULT_STORAGE_ENV": "values", "SAMPLE_CONFIG": "values", "ConfigError": "values",
    "check_dataset_name": "values", "check_file_name": "values", "check_path": "values",
}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
