"""Label masking: the loss sees exactly the assistant's answer, never prompt, image or padding."""

from __future__ import annotations

import pytest

from train_pipeline.training.collate import IGNORE_INDEX, ChatCollator, answer_labels
from train_pipeline.training.dataset import DataError, Example, load_examples
from train_pipeline.training.formats.images import images_of

INSTRUCTION = "Describe this advertisement."


def _example(image, chat) -> Example:
    return Example(images_of(image.name, image.parent, image.parent, "image"), chat)


def test_answer_labels_marks_each_assistant_turn_and_its_end():
    header, end = [7, 8, 9], 2
    ids = [1, 5, 7, 8, 9, 40, 41, 2, 3, 1, 7, 8, 9, 50, 2, 3, 0, 0]
    labels = answer_labels(ids, header, end)
    kept = [(i, t) for i, t in enumerate(labels) if t != IGNORE_INDEX]
    assert kept == [(5, 40), (6, 41), (7, 2), (13, 50), (14, 2)]


def test_answer_labels_cut_answer_runs_to_the_end():
    assert answer_labels([7, 8, 9, 40, 41], [7, 8, 9], end_id=2) == [IGNORE_INDEX] * 3 + [40, 41]
    assert answer_labels([1, 2, 3], [7, 8, 9], end_id=2) == [IGNORE_INDEX] * 3


def test_labels_cover_exactly_the_caption_tokens(sample_data_dir, processor):
    examples, _ = load_examples(sample_data_dir, instruction=INSTRUCTION)
    batch = ChatCollator(processor, max_length=256)(examples[:3])
    tok = processor.tokenizer
    captions = [e.messages[-1]["content"][0]["text"] for e in examples[:3]]
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    assert len(set(lengths)) > 1, "want rows of different lengths so padding is exercised"

    for row, caption in enumerate(captions):
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        answer = tok(caption + "<|im_end|>", add_special_tokens=False)["input_ids"]
        kept = labels != IGNORE_INDEX
        # The labelled positions are one contiguous run equal to the answer + end-of-turn.
        assert labels[kept].tolist() == answer
        positions = kept.nonzero().flatten().tolist()
        assert positions == list(range(positions[0], positions[0] + len(answer)))
        assert ids[kept].tolist() == answer  # labels are the inputs themselves (the model shifts)
        # The text right before the answer is the assistant header; nothing before it is labelled.
        before = tok.decode(ids[: positions[0]])
        assert before.endswith("<|im_start|>assistant\n")
        assert INSTRUCTION in before and "<|image_pad|>" in before
        # Padding is never labelled.
        assert (labels[lengths[row] :] == IGNORE_INDEX).all()
        assert (batch["attention_mask"][row, lengths[row] :] == 0).all()

    n_image_tokens = int((batch["input_ids"] == processor.image_token_id).sum())
    merge = processor.image_processor.merge_size ** 2
    assert n_image_tokens == int(batch["image_grid_thw"].prod(dim=1).sum()) // merge
    assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod(dim=1).sum())


def test_chat_rows_label_every_assistant_turn(sample_data_dir, processor):
    image = next(sample_data_dir.glob("*.png"))
    chat = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
        {"role": "user", "content": [{"type": "text", "text": "Word?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "SALE"}]},
    ]
    batch = ChatCollator(processor, max_length=256)([_example(image, chat)])
    labels = batch["labels"][0]
    assert processor.tokenizer.decode(labels[labels != IGNORE_INDEX]) == "red<|im_end|>SALE<|im_end|>"


def test_long_answers_are_cut_but_image_tokens_never(sample_data_dir, processor):
    image = next(sample_data_dir.glob("*.png"))
    long_answer = "A red billboard. " * 40
    chat = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": INSTRUCTION}]},
        {"role": "assistant", "content": [{"type": "text", "text": long_answer}]},
    ]
    full = ChatCollator(processor, max_length=1024)([_example(image, chat)])
    n_prompt = int((full["labels"][0] != IGNORE_INDEX).nonzero()[0])  # tokens before the answer
    cut = ChatCollator(processor, max_length=n_prompt + 5)([_example(image, chat)])
    assert cut["input_ids"].shape[1] == n_prompt + 5
    assert int((cut["labels"][0] != IGNORE_INDEX).sum()) == 5
    assert int((cut["input_ids"] == processor.image_token_id).sum()) == int(
        (full["input_ids"] == processor.image_token_id).sum()
    )
    with pytest.raises(DataError, match="raise max_length or lower max_pixels"):
        ChatCollator(processor, max_length=16)([_example(image, chat)])
