"""The tiny model and sample data builders: loadable, deterministic, Qwen2-VL shaped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from offline.sample_data import build_sample_dataset
from offline.tiny_model import SPECIAL_TOKENS, build_tiny_qwen2vl


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_tiny_model_is_deterministic(tiny_model_dir, tmp_path):
    again = build_tiny_qwen2vl(tmp_path / "again", seed=0)
    assert _tree_bytes(again) == _tree_bytes(tiny_model_dir)
    other = build_tiny_qwen2vl(tmp_path / "other", seed=1)
    assert _tree_bytes(other)["model.safetensors"] != _tree_bytes(tiny_model_dir)["model.safetensors"]


def test_tiny_model_loads_with_from_pretrained(tiny_model_dir, processor):
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    # Special tokens are single tokens whose ids match the model config.
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tok.convert_tokens_to_ids(token) == i
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert processor.image_token_id == model.config.image_token_id
    assert "<|im_start|>" in processor.chat_template


def test_processor_folder_names_the_stock_class(tiny_model_dir):
    # Loadable by stock AutoProcessor where torchvision exists; no video processor saved.
    saved = json.loads((tiny_model_dir / "processor_config.json").read_text())
    assert saved["processor_class"] == "Qwen2VLProcessor"
    assert "video_processor" not in saved
    assert json.loads((tiny_model_dir / "tokenizer_config.json").read_text())["processor_class"] == "Qwen2VLProcessor"


def test_sample_dataset_is_deterministic_imagefolder(tmp_path):
    a = build_sample_dataset(tmp_path / "a", n_images=6, seed=3)
    b = build_sample_dataset(tmp_path / "b", n_images=6, seed=3)
    assert _tree_bytes(a) == _tree_bytes(b)
    rows = [json.loads(line) for line in (a / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        with Image.open(a / row["file_name"]) as img:
            assert 64 <= img.width <= 112 and 64 <= img.height <= 112
        assert row["text"].startswith("A ") and "billboard" in row["text"]


def test_sample_dataset_rejects_zero_images(tmp_path):
    with pytest.raises(ValueError, match="n_images=0"):
        build_sample_dataset(tmp_path, n_images=0)
