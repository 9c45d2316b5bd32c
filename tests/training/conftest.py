"""Shared offline fixtures: a tiny random Qwen2-VL and synthetic billboard images, built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread: deterministic CPU kernels, stable timings
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Small images and short sequences keep a step at tens of milliseconds on CPU.
FAST = {
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "min_pixels": 56 * 56,
    "max_pixels": 112 * 112,
    "max_length": 256,
    "learning_rate": 3e-3,
}


@pytest.fixture(scope="session")
def fast_config():
    """TrainConfig factory with the FAST settings; keyword arguments override them."""
    from train_pipeline.training.settings import TrainConfig

    def make(**overrides) -> TrainConfig:
        return TrainConfig(**{**FAST, **overrides})

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from offline.tiny_model import build_tiny_qwen2vl

    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"), seed=0)


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory) -> Path:
    from offline.sample_data import build_sample_dataset

    return build_sample_dataset(tmp_path_factory.mktemp("billboards"), n_images=16, seed=0)


@pytest.fixture(scope="session")
def one_batch_data_dir(tmp_path_factory) -> Path:
    from offline.sample_data import build_sample_dataset

    return build_sample_dataset(tmp_path_factory.mktemp("billboards-4"), n_images=4, seed=1)


@pytest.fixture(scope="session")
def processor(tiny_model_dir):
    from train_pipeline.training.processor import load_processor

    return load_processor(tiny_model_dir)


@pytest.fixture(scope="session")
def finished_run(tiny_model_dir, sample_data_dir, tmp_path_factory, fast_config):
    """A short full fine-tune (6 steps, checkpoints every 3), run in this process."""
    from train_pipeline.training.finetune import train

    config = fast_config(max_steps=6, save_steps=3)
    progress: list = []
    out = tmp_path_factory.mktemp("finished-run")
    result = train(tiny_model_dir, sample_data_dir, out, config, progress=progress.append)
    return result, config, progress
