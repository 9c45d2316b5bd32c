"""The pipeline config: its schema, the dataset registry, where each step writes, and loading.

    values     the rules for paths and names, limits, ConfigError
    schema     PipelineConfig and its parts (datasets, files, model, sample, task runner)
    reading    YAML -> PipelineConfig, problems as one line each
    registry   named datasets (configs/datasets.yaml), where their files and archives go
    locations  every step's folders, checked as a whole
    load       load_config: all of the above, before any network

Imports run down that list only (no cycle). No heavy imports (no prefect, torch, transformers).
"""

from train_pipeline.config.load import check_config, load_config, planned_datasets
from train_pipeline.config.reading import format_validation_error, parse_config, read_yaml
from train_pipeline.config.schema import (DatasetSpec, FileSpec, ModelSpec, PipelineConfig, SampleSpec,
                                          TaskRunnerSpec)
from train_pipeline.config.values import (CONFIGS_DIR, MAX_CONNECTIONS, MAX_RETRIES, NAME_MAX, PROJECT_ROOT, RESULT_STORAGE_ENV, SAMPLE_CONFIG,
                                          ConfigError, check_dataset_name, check_file_name, check_path)

__all__ = ["CONFIGS_DIR", "MAX_CONNECTIONS", "MAX_RETRIES", "NAME_MAX", "PROJECT_ROOT", "RESULT_STORAGE_ENV", "SAMPLE_CONFIG", "ConfigError",
           "DatasetSpec", "FileSpec", "ModelSpec", "PipelineConfig", "SampleSpec", "TaskRunnerSpec", "check_config",
           "check_dataset_name", "check_file_name", "check_path", "format_validation_error", "load_config",
           "parse_config", "planned_datasets", "read_yaml"]
