"""The torchvision-free processor: image bounds from the config, legacy chat-template files."""

from __future__ import annotations

import json
import shutil

from PIL import Image

from train_pipeline.training.processor import load_processor


def _image_tokens(processor, image) -> int:
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}], tokenize=False
    )
    ids = processor(text=[text], images=[image], return_tensors="pt")["input_ids"]
    return int((ids == processor.image_token_id).sum())


def test_max_pixels_bounds_image_tokens(tiny_model_dir):
    image = Image.new("RGB", (112, 112), (200, 40, 40))
    default = load_processor(tiny_model_dir)
    small = load_processor(tiny_model_dir, min_pixels=28 * 28, max_pixels=56 * 56)
    assert small.image_processor.size["longest_edge"] == 56 * 56
    assert small.image_processor.size["shortest_edge"] == 28 * 28
    assert _image_tokens(default, image) == 16  # 112x112 px = 8x8 patches, merged 2x2
    assert _image_tokens(small, image) == 4


def test_legacy_chat_template_json_is_read(tiny_model_dir, tmp_path):
    # Hub snapshots of Qwen2-VL ship chat_template.json rather than chat_template.jinja.
    folder = tmp_path / "legacy"
    shutil.copytree(tiny_model_dir, folder)
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").unlink()
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    assert load_processor(folder).chat_template == template
