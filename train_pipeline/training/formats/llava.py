"""llava: LLaVA's instruction data, a JSON (or JSON lines) list of
``{"image": "coco/train2017/x.jpg", "conversations": [{"from": "human", "value": "<image>\\nWhat is
this?"}, {"from": "gpt", "value": "..."}]}``. Read by the sharegpt reader, with LLaVA's names as
defaults; image paths are relative to the JSON file's folder, or to ``image_dir`` (LLaVA's
``--image_folder``) inside the dataset.
"""

from __future__ import annotations

from pathlib import Path

from train_pipeline.training.data_settings import DataFields
from train_pipeline.training.formats.rows import FieldDefaults
from train_pipeline.training.formats.sharegpt import chat_kind, row_kind, rows

__all__ = ["NAME", "DESCRIBE", "DEFAULTS", "claims", "row_kind", "rows"]  # the sharegpt reader, LLaVA's names

NAME = "llava"
DESCRIBE = "llava (*.json/*.jsonl records with conversations from human/gpt + an image)"
DEFAULTS = FieldDefaults(image=("image",), messages=("conversations",))


def claims(path: Path, fields: DataFields, explicit: bool) -> bool:
    kind = chat_kind(path, fields)
    return kind is not None if explicit else kind == NAME
