"""Turn chat examples into model batches: template, image tokens, and answer-only labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from train_pipeline.training.formats import DataError, Example
from train_pipeline.training.formats.common import BadRow

IGNORE_INDEX = -100  # label value the loss skips


def answer_labels(input_ids: Sequence[int], header_ids: Sequence[int], end_id: int) -> list[int]:
    """Labels that keep only assistant answers: the tokens after each ``<|im_start|>assistant\\n``
    header up to and including the ``<|im_end|>`` that closes the turn (so the model learns to
    stop). Everything else (system, user, image tokens, headers, padding) is IGNORE_INDEX.
    """
    ids = list(input_ids)
    labels = [IGNORE_INDEX] * len(ids)
    h = len(header_ids)
    i = 0
    while i + h <= len(ids):
        if ids[i : i + h] == list(header_ids):
            start = i + h
            end = start
            while end < len(ids) and ids[end] != end_id:
                end += 1
            stop = min(end + 1, len(ids))  # include <|im_end|> when present
            labels[start:stop] = ids[start:stop]
            i = stop
        else:
            i += 1
    return labels


class ChatCollator:
    """Encodes examples one by one (so a long one is cut alone), then pads to the batch's longest."""

    def __init__(self, processor: Any, max_length: int):
        self.processor = processor
        self.max_length = max_length
        tok = processor.tokenizer
        self.header_ids = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
        self.end_id = tok.convert_tokens_to_ids("<|im_end|>")
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.end_id
        self.image_token_id = processor.image_token_id

    def encode(self, example: Example) -> dict[str, torch.Tensor]:
        text = self.processor.apply_chat_template(example.messages, tokenize=False)
        try:
            images = [image.load() for image in example.images]  # read again, confined to the dataset folder
        except BadRow as bad:
            raise DataError(f"{example.origin}: {bad} ({bad.file_name}), though it was readable when training "
                            "started: put the dataset back as it was and run again (training resumes)") from None
        enc = self.processor(text=[text], images=images, return_tensors="pt")
        ids = enc["input_ids"][0]
        labels = torch.tensor(answer_labels(ids.tolist(), self.header_ids, self.end_id))
        if len(ids) > self.max_length:
            # Only the answer's tail may go: cutting image tokens would desync them from pixel_values.
            image_positions = (ids == self.image_token_id).nonzero()
            last_image = int(image_positions.max()) if len(image_positions) else -1
            if last_image >= self.max_length:
                raise DataError(
                    f"{example.origin or example.images[0].name}: prompt with image is {last_image + 1} tokens, over max_length "
                    f"{self.max_length}: raise max_length or lower max_pixels"
                )
            ids, labels = ids[: self.max_length], labels[: self.max_length]
        return {
            "input_ids": ids,
            "labels": labels,
            "mm_token_type_ids": enc["mm_token_type_ids"][0][: len(ids)],
            "pixel_values": enc["pixel_values"],
            "image_grid_thw": enc["image_grid_thw"],
        }

    def __call__(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        items = [self.encode(e) for e in examples]
        width = max(len(it["input_ids"]) for it in items)

        def pad(key: str, value: int) -> torch.Tensor:
            out = torch.full((len(items), width), value, dtype=torch.long)
            for row, it in enumerate(items):
                out[row, : len(it[key])] = it[key]
            return out

        attention = torch.zeros((len(items), width), dtype=torch.long)
        for row, it in enumerate(items):
            attention[row, : len(it["input_ids"])] = 1
        return {
            "input_ids": pad("input_ids", self.pad_id),
            "attention_mask": attention,
            "labels": pad("labels", IGNORE_INDEX),
            "mm_token_type_ids": pad("mm_token_type_ids", 0),
            "pixel_values": torch.cat([it["pixel_values"] for it in items]),
            "image_grid_thw": torch.cat([it["image_grid_thw"] for it in items]),
        }
