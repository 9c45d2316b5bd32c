"""Each format training reads, chosen by content: parquet/arrow shards with an Image column,
ShareGPT (LLaMA-Factory mllm_demo) and LLaVA JSON with an image folder, imagefolder; the field
mapping with Hugging Face defaults; bad rows skipped and reported; one-line errors that name the
columns found, the settings to set, and the valid formats."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from data_builders import (billboards, llava_dataset, parquet_dataset, png, sharegpt_dataset,
                                          write_arrow, write_json, write_parquet)
from train_pipeline.training.dataset import DataError, load_examples
from train_pipeline.training.formats import FORMATS, valid_formats
from train_pipeline.training.data_settings import FORMAT_NAMES

INSTRUCTION = "Describe this advertisement."


def _caption_chat(caption: str, prompt: str = INSTRUCTION, images: int = 1) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": prompt}]},
            {"role": "assistant", "content": [{"type": "text", "text": caption}]}]


def test_registry_lists_the_formats_the_settings_accept():
    assert tuple(FORMATS) == FORMAT_NAMES == ("imagefolder", "parquet", "arrow", "sharegpt", "llava")
    assert all(name in valid_formats() for name in FORMAT_NAMES)


def test_parquet_shards_hf_layout(sample_data_dir, tmp_path):
    data = parquet_dataset(sample_data_dir, tmp_path / "ds", n=6, shards=2)
    examples, report = load_examples(data, instruction=INSTRUCTION)
    assert report.format == "parquet" and report.total_rows == 6 and not report.skipped
    assert [Path(f).name for f in report.files] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    rows = billboards(sample_data_dir)[:6]
    want = [rows[i] for i in (0, 2, 4, 1, 3, 5)]  # shard order, then row order
    assert [e.messages for e in examples] == [_caption_chat(c) for _, c in want]
    for e, (path, _) in zip(examples, want):  # the bytes of the row, kept in memory; no file is read later
        assert e.images[0].data == path.read_bytes() and e.images[0].path is None
        assert e.images[0].load().size == Image.open(path).size
    assert report.columns == ["image", "text"]


def test_parquet_question_answer_messages_paths_and_image_lists(tmp_path):
    data = tmp_path / "ds"
    (data / "pics").mkdir(parents=True)
    (data / "pics" / "a.png").write_bytes(png((10, 200, 10)))
    chat = [{"role": "user", "content": "<image> and <image>: same colour?"}, {"role": "assistant", "content": "No."}]
    write_parquet(data / "qa.parquet", {  # the Image struct: a path alone, bytes alone, nothing
        "image": [{"bytes": None, "path": "pics/a.png"}, {"bytes": png(), "path": None}, None],
        "question": ["Colour?", "Shape?", "x"],
        "answer": ["Green.", "Square.", "y"],
    })
    write_parquet(data / "multi.parquet", {  # a list of images and a chat placing them
        "images": [[{"bytes": png(), "path": "a.png"}, {"bytes": png((0, 0, 200)), "path": "b.png"}]],
        "messages": [chat],
    })
    examples, report = load_examples(data, instruction=INSTRUCTION)
    assert report.format == "parquet" and report.files == [str(data / "multi.parquet"), str(data / "qa.parquet")]
    two, colour, shape = examples
    assert len(two.images) == 2 and [i.name for i in two.images] == ["a.png", "b.png"]
    assert two.messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "and"}, {"type": "image"},
                                          {"type": "text", "text": ": same colour?"}]
    assert [e.messages[0]["content"][-1]["text"] for e in (colour, shape)] == ["Colour?", "Shape?"]
    assert colour.images[0].path == (data / "pics" / "a.png").resolve() and colour.images[0].data is None
    assert shape.images[0].data == png()
    assert [(s.file, s.line, s.reason) for s in report.skipped] == [("qa.parquet", 3, "no 'image' or 'images' image")]


def test_parquet_field_mapping_and_the_error_that_asks_for_it(tmp_path):
    data = tmp_path / "ds"
    write_parquet(data / "train.parquet", {"img": [png(), png()], "caption_en": ["A red sign.", "Another."],
                                           "id": [1, 2]})
    with pytest.raises(DataError) as err:
        load_examples(data, instruction=INSTRUCTION)
    message = str(err.value)
    assert "\n" not in message and "img, caption_en, id" in message
    assert "train.fields.image" in message and "train.fields.caption" in message
    examples, _ = load_examples(data, instruction=INSTRUCTION, fields={"image": "img", "caption": "caption_en"})
    assert [e.messages[-1]["content"][0]["text"] for e in examples] == ["A red sign.", "Another."]


def test_arrow_files_stream_and_file_format(sample_data_dir, tmp_path):
    rows = billboards(sample_data_dir)[:5]
    columns = {"image": [{"bytes": p.read_bytes(), "path": None} for p, _ in rows], "text": [c for _, c in rows]}
    for stream in (True, False):
        data = tmp_path / f"saved-{stream}"
        write_arrow(data / "data-00000-of-00001.arrow", columns, stream=stream)
        write_json(data / "state.json", {"_data_files": [{"filename": "data-00000-of-00001.arrow"}]})
        write_json(data / "dataset_info.json", {"features": {}})
        examples, report = load_examples(data, instruction=INSTRUCTION)
        assert report.format == "arrow" and len(examples) == 5
        assert [e.messages[-1]["content"][0]["text"] for e in examples] == [c for _, c in rows]


def test_sharegpt_mllm_demo_layout(sample_data_dir, tmp_path):
    data = sharegpt_dataset(sample_data_dir, tmp_path / "demo", n=4)
    examples, report = load_examples(data, instruction=INSTRUCTION)
    assert report.format == "sharegpt" and len(examples) == 4 and not report.skipped
    first = examples[0]
    assert first.messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "What does the billboard show?"}]
    assert first.images[0].path.parent.name == "mllm_demo_data"


def test_sharegpt_jsonl_with_conversations_and_several_images(tmp_path):
    data = tmp_path / "ds"
    (data / "img").mkdir(parents=True)
    for name, colour in (("a.png", (200, 0, 0)), ("b.png", (0, 0, 200))):
        (data / "img" / name).write_bytes(png(colour))
    records = [
        {"conversations": [{"from": "human", "value": "<image><image>Which is red?"}, {"from": "gpt", "value": "The first."}],
         "images": ["img/a.png", "img/b.png"]},
        {"conversations": [{"from": "human", "value": "<image>Colour?"}, {"from": "gpt", "value": "Red."}],
         "images": ["img/a.png", "img/b.png"]},  # one placeholder, two images
        {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Colour?"},
                           {"from": "gpt", "value": "Blue."}], "images": ["img/b.png"]},  # no placeholder: image first
    ]
    write_json(data / "train.jsonl", records, lines=True)
    examples, report = load_examples(data, instruction=INSTRUCTION)
    assert report.format == "sharegpt" and len(examples) == 2
    assert len(examples[0].images) == 2
    assert examples[1].messages[1]["content"][0] == {"type": "image"}
    assert [(s.line, s.kind) for s in report.skipped] == [(2, "line")]
    assert "places 1 image(s) but the row has 2" in report.skipped[0].reason


def test_llava_with_an_image_folder(sample_data_dir, tmp_path):
    data = llava_dataset(sample_data_dir, tmp_path / "llava", n=3)
    with pytest.raises(DataError, match="image file missing"):  # paths are relative to the JSON's folder
        load_examples(data, instruction=INSTRUCTION)
    examples, report = load_examples(data, instruction=INSTRUCTION, image_dir="images")
    assert report.format == "llava" and len(examples) == 3
    assert examples[0].messages == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the billboard."}]},
        {"role": "assistant", "content": [{"type": "text", "text": billboards(sample_data_dir)[0][1]}]}]


def test_imagefolder_rows_may_also_be_question_and_answer(sample_data_dir, tmp_path):
    p, _ = billboards(sample_data_dir)[0]
    shutil.copy(p, tmp_path / p.name)
    write_json(tmp_path / "metadata.jsonl", [{"file_name": p.name, "question": "Word?", "answer": "SALE"}], lines=True)
    (example,), _ = load_examples(tmp_path, instruction=INSTRUCTION)
    assert example.messages == _caption_chat("SALE", prompt="Word?")


def test_several_formats_in_one_folder_is_an_error_naming_them(sample_data_dir, tmp_path):
    data = parquet_dataset(sample_data_dir, tmp_path / "ds", n=2, shards=1)
    sharegpt_dataset(sample_data_dir, data, n=2)
    with pytest.raises(DataError) as err:
        load_examples(data, instruction=INSTRUCTION)
    message = str(err.value)
    assert "\n" not in message and "parquet: data/train-00000-of-00001.parquet" in message
    assert "sharegpt: mllm_demo.json" in message and "train.format" in message and "imagefolder" in message
    examples, report = load_examples(data, instruction=INSTRUCTION, format="sharegpt")  # the explicit choice
    assert report.format == "sharegpt" and len(examples) == 2


def test_unknown_layout_lists_what_was_found_and_the_valid_formats(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "a.png").write_bytes(png())
    write_json(tmp_path / "config.json", {"not": "data"})
    write_json(tmp_path / "alpaca.json", [{"instruction": "x", "output": "y"}])  # no conversation keys
    (tmp_path / ".resumable").mkdir()
    write_parquet(tmp_path / ".resumable" / "hidden.parquet", {"image": [png()], "text": ["x"]})
    with pytest.raises(DataError) as err:
        load_examples(tmp_path, instruction=INSTRUCTION)
    message = str(err.value)
    assert "\n" not in message and "no known dataset layout" in message
    assert "a.png" in message and "notes.txt" in message and "hidden" not in message
    for name in FORMAT_NAMES:
        assert name in message
    with pytest.raises(DataError, match="no parquet data files"):
        load_examples(tmp_path, instruction=INSTRUCTION, format="parquet")


def test_other_splits_are_left_out_and_a_missing_split_is_named(sample_data_dir, tmp_path):
    rows = billboards(sample_data_dir)[:4]

    def shard(name: str, part) -> None:
        write_parquet(tmp_path / "data" / name, {"image": [p.read_bytes() for p, _ in part], "text": [c for _, c in part]})

    shard("train-00000-of-00001.parquet", rows[:3])
    shard("test-00000-of-00001.parquet", rows[3:])
    examples, report = load_examples(tmp_path, instruction=INSTRUCTION)
    assert len(examples) == 3 and report.left_out == ["data/test-00000-of-00001.parquet"]
    examples, _ = load_examples(tmp_path, instruction=INSTRUCTION, split="test")
    assert [e.messages[-1]["content"][0]["text"] for e in examples] == [rows[3][1]]
    with pytest.raises(DataError, match=r"belong to split\(s\) test, train, not 'validation'.*train.split"):
        load_examples(tmp_path, instruction=INSTRUCTION, split="validation")


def test_a_corrupt_shard_is_reported_and_the_others_still_count(sample_data_dir, tmp_path):
    data = parquet_dataset(sample_data_dir, tmp_path / "ds", n=4, shards=2)
    (data / "data" / "train-00001-of-00002.parquet").write_bytes(b"PAR1 not really")
    examples, report = load_examples(data, instruction=INSTRUCTION)
    assert len(examples) == 2
    (bad,) = report.skipped
    assert bad.line == 0 and bad.file == "data/train-00001-of-00002.parquet" and "not a readable parquet" in bad.reason


def test_the_real_profiles_shards_as_lmms_lab_publishes_them(tmp_path):
    """configs/qwen2-vl-2b.yaml trains on lmms-lab/LLaVA-OneVision-Data's textcaps shards: columns
    id, image (an Image struct), conversations (LLaVA from/value turns, '<image>' placeholder),
    data_source. Read with the profile's own data settings, every row is a one-image chat."""
    import yaml

    from train_pipeline.config.values import CONFIGS_DIR

    train = yaml.safe_load((CONFIGS_DIR / "qwen2-vl-2b.yaml").read_text())["train"]
    captions = ["A red billboard reading SALE.", "A shop sign that says OPEN 24 HOURS."]
    write_parquet(tmp_path / "textcaps" / "textcaps" / "train-00000-of-00005.parquet", {
        "id": ["a1", "b2"],
        "image": [{"bytes": png((200, 0, 0)), "path": "a1.jpg"}, {"bytes": png((0, 200, 0)), "path": None}],
        "conversations": [[{"from": "human", "value": "<image>\nProvide a one-sentence caption for the provided image."},
                           {"from": "gpt", "value": c}] for c in captions],
        "data_source": ["textcaps", "textcaps"],
    })
    examples, report = load_examples(tmp_path / "textcaps", instruction=INSTRUCTION, format=train["format"],
                                     fields=train["fields"])
    assert report.format == "parquet" and report.total_rows == 2 and not report.skipped
    assert [e.messages for e in examples] == [_caption_chat(c, "Provide a one-sentence caption for the provided image.")
                                              for c in captions]
    assert [len(e.images) for e in examples] == [1, 1]
