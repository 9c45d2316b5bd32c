"""Reading metadata.jsonl: bad rows are reported (which, why) and skipped; nothing usable fails clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from train_pipeline.training.dataset import DataError, load_examples

INSTRUCTION = "Describe this advertisement."


def _copy_images(src: Path, dest: Path, n: int) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in src.glob("*.png"))[:n]
    for name in names:
        shutil.copy(src / name, dest / name)
    return names


def _write_rows(dest: Path, lines: list[str]) -> None:
    (dest / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_bad_rows_are_reported_and_skipped(sample_data_dir, tmp_path, caplog):
    names = _copy_images(sample_data_dir, tmp_path, 3)
    (tmp_path / "truncated.png").write_bytes((tmp_path / names[0]).read_bytes()[:200])
    (tmp_path / "not-an-image.png").write_text("hello")
    chat = [
        {"role": "user", "content": "What does the sign say?"},
        {"role": "assistant", "content": "It says SALE."},
    ]
    _write_rows(
        tmp_path,
        [
            json.dumps({"file_name": names[0], "text": "A red billboard."}),  # 1 good
            "{not json",  # 2
            json.dumps({"file_name": "missing.png", "text": "x"}),  # 3
            json.dumps({"file_name": "truncated.png", "text": "x"}),  # 4
            json.dumps({"file_name": "not-an-image.png", "text": "x"}),  # 5
            json.dumps({"file_name": names[1]}),  # 6 no caption
            json.dumps({"text": "no image"}),  # 7
            json.dumps({"file_name": "../outside.png", "text": "x"}),  # 8
            "",  # blank lines are not rows
            json.dumps({"file_name": names[1], "messages": [{"role": "user", "content": "hi"}]}),  # 10 no answer
            json.dumps({"file_name": names[2], "messages": chat}),  # 11 good
            json.dumps([1, 2]),  # 12
        ],
    )
    with caplog.at_level("WARNING"):
        examples, report = load_examples(tmp_path, instruction=INSTRUCTION)

    assert [e.image_path.name for e in examples] == [names[0], names[2]]
    assert report.total_rows == 11 and report.usable == 2
    reasons = {s.line: s.reason for s in report.skipped}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 10, 12]
    assert "not valid JSON" in reasons[2]
    assert reasons[3] == "image file missing"
    assert "unreadable" in reasons[4] and "unreadable" in reasons[5]
    assert "'text'" in reasons[6]
    assert "'file_name'" in reasons[7]
    assert "leaves the dataset folder" in reasons[8]
    assert "assistant" in reasons[10]
    assert "JSON object" in reasons[12]
    assert {s.file_name for s in report.skipped if s.line == 4} == {"truncated.png"}
    # One warning line says how many were skipped and which.
    warning = next(r.getMessage() for r in caplog.records if "skipped" in r.getMessage())
    assert "skipped 9 of 11 rows" in warning and "line 3 (missing.png): image file missing" in warning


def test_caption_and_chat_rows_become_chats_with_one_image(sample_data_dir, tmp_path):
    names = _copy_images(sample_data_dir, tmp_path, 2)
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
    ]
    _write_rows(
        tmp_path,
        [json.dumps({"file_name": names[0], "text": " A sign. "}), json.dumps({"file_name": names[1], "messages": chat})],
    )
    (caption_ex, chat_ex), report = load_examples(tmp_path, instruction=INSTRUCTION)
    assert not report.skipped
    assert caption_ex.messages == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": INSTRUCTION}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A sign."}]},
    ]
    # The image goes first in the first user turn when the chat has none.
    assert chat_ex.messages[1]["content"] == [{"type": "image"}, {"type": "text", "text": "Colour?"}]
    assert chat_ex.messages[0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}


def test_custom_caption_field_and_train_split_folder(sample_data_dir, tmp_path):
    split = tmp_path / "train"
    names = _copy_images(sample_data_dir, split, 1)
    _write_rows(split, [json.dumps({"file_name": names[0], "caption": "A sign."})])
    examples, _ = load_examples(tmp_path, instruction=INSTRUCTION, fields={"caption": "caption"})
    assert examples[0].messages[-1]["content"][0]["text"] == "A sign."


def test_nothing_usable_is_one_clear_error(sample_data_dir, tmp_path):
    _write_rows(tmp_path, [json.dumps({"file_name": "gone.png", "text": "x"}), "oops"])
    with pytest.raises(DataError) as info:
        load_examples(tmp_path, instruction=INSTRUCTION)
    message = str(info.value)
    assert "\n" not in message
    assert "metadata.jsonl: no usable rows" in message and "gone.png" in message and "image file missing" in message


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda d: None, "no known dataset layout .*valid formats: imagefolder"),
        (lambda d: (d / "metadata.jsonl").write_text("\n\n"), "no rows"),
    ],
)
def test_missing_or_empty_metadata(tmp_path, setup, expected):
    setup(tmp_path)
    with pytest.raises(DataError, match=expected):
        load_examples(tmp_path, instruction=INSTRUCTION)


def test_data_dir_that_is_not_a_folder(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        load_examples(tmp_path / "nope", instruction=INSTRUCTION)
