"""A Qwen2-VL processor that needs no video processor, hence no torchvision.

Stock ``Qwen2VLProcessor``/``AutoProcessor`` build a video processor that imports torchvision,
which cannot load beside this machine's CPU torch. Training only sees images, so this subclass
keeps the image processor, tokenizer and chat template. It saves ``processor_class:
"Qwen2VLProcessor"`` and the image settings also as ``preprocessor_config.json`` (where stock
``AutoProcessor`` looks for the video processor's settings when a folder has none of its own, as
in Qwen's Hub repositories), so the folder is loadable by stock ``AutoProcessor`` where torchvision
exists. Without torchvision no stock processor class can load any Qwen2-VL folder (transformers'
video processors need it): ``load_processor(path)`` below does; LOAD_HINT says so where a run names
its final model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import AutoImageProcessor, AutoTokenizer, Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

STOCK_PROCESSOR_CLASS = "Qwen2VLProcessor"
LOAD_HINT = ("AutoProcessor needs torchvision; without it: "
             "from train_pipeline.training.processor import load_processor; load_processor(PATH)")


class Qwen2VLImageProcessor(Qwen2VLProcessor):
    """Qwen2VLProcessor without ``video_processor`` (images + text only)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # Mirrors Qwen2VLProcessor.__init__, minus the video processor it would require.
        self.image_token = getattr(tokenizer, "image_token", "<|image_pad|>")
        self.video_token = getattr(tokenizer, "video_token", "<|video_pad|>")
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["processor_class"] = STOCK_PROCESSOR_CLASS
        return data

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        files = super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        # The tokenizer records the processor's class name; point it at the stock class too.
        _set_processor_class(Path(save_directory) / "tokenizer_config.json")
        # Stock Qwen2VLProcessor also loads a video processor; without settings of its own it reads
        # preprocessor_config.json (the image settings, as Qwen's Hub folders hold them). Without
        # this file stock AutoProcessor cannot load the folder even where torchvision exists.
        legacy = Path(save_directory) / PREPROCESSOR_CONFIG
        if not legacy.exists():
            self.image_processor.to_json_file(legacy)
            files = [*files, str(legacy)] if isinstance(files, (list, tuple)) else files
        return files


PREPROCESSOR_CONFIG = "preprocessor_config.json"


def _set_processor_class(path: Path) -> None:
    if not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("processor_class") not in (None, STOCK_PROCESSOR_CLASS):
        data["processor_class"] = STOCK_PROCESSOR_CLASS
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def load_processor(model_dir: str | os.PathLike, *, min_pixels: int | None = None, max_pixels: int | None = None):
    """Load the image processor, tokenizer and chat template of a Qwen2-VL folder.

    ``min_pixels``/``max_pixels`` override the image bounds (images are resized into them; their
    token count follows, so this is the knob that bounds memory).
    """
    size = None
    if min_pixels is not None or max_pixels is not None:
        base = AutoImageProcessor.from_pretrained(model_dir).size
        size = {
            "shortest_edge": min_pixels if min_pixels is not None else base["shortest_edge"],
            "longest_edge": max_pixels if max_pixels is not None else base["longest_edge"],
        }
    image_processor = AutoImageProcessor.from_pretrained(model_dir, **({"size": size} if size else {}))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    chat_template = _read_chat_template(Path(model_dir)) or getattr(tokenizer, "chat_template", None)
    return Qwen2VLImageProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)


def _read_chat_template(model_dir: Path) -> str | None:
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    legacy = model_dir / "chat_template.json"
    if legacy.is_file():
        return json.loads(legacy.read_text(encoding="utf-8")).get("chat_template")
    return None
