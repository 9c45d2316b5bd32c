"""Property tests of every dataset parser and field mapping, fed hostile rows: wrong types,
missing images, paths that try to leave the dataset folder (``..``, absolute paths, symlinks to
files or folders outside, a FIFO). Whatever the rows, reading gives examples and a report whose
counts agree, or a one-line DataError; and no image is ever read from outside the dataset folder
(the folder beside it holds a valid image with its own digest, which must never show up)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from data_builders import png, write_arrow, write_json, write_parquet
from train_pipeline.training.dataset import DataError, load_examples
from train_pipeline.training.formats.chat import normalise_chat
from train_pipeline.training.formats.common import BadRow
from train_pipeline.training.formats.images import images_of
from train_pipeline.training.settings import TrainConfigError, parse_train_config

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                            HealthCheck.too_slow])
SECRET = png((1, 2, 3), (9, 7))  # the image outside the dataset: its digest must never be read
SECRET_DIGEST = hashlib.sha256(SECRET).hexdigest()
INSIDE = png((250, 250, 250))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """``base/secret/`` (outside) and ``base/ds/`` (the dataset folder) with links out and in."""
    base = tmp_path_factory.mktemp("hostile")
    (base / "secret").mkdir()
    (base / "secret" / "secret.png").write_bytes(SECRET)
    ds = base / "ds"
    (ds / "sub").mkdir(parents=True)
    (ds / "ok.png").write_bytes(INSIDE)
    (ds / "sub" / "inner.png").write_bytes(png((0, 250, 0)))
    (ds / "broken.png").write_bytes(INSIDE[: len(INSIDE) // 2])
    (ds / "link_out.png").symlink_to(base / "secret" / "secret.png")
    (ds / "link_dir").symlink_to(base / "secret")
    (ds / "sub" / "rel_out.png").symlink_to("../../secret/secret.png")
    (ds / "link_in.png").symlink_to("ok.png")
    os.mkfifo(ds / "fifo.png")
    return {"base": base, "ds": ds, "secret": base / "secret" / "secret.png"}


def hostile_paths(world: dict) -> st.SearchStrategy[str]:
    secret = str(world["secret"])
    known = ["ok.png", "sub/inner.png", "../secret/secret.png", secret, "link_out.png", "link_dir/secret.png",
             "sub/rel_out.png", "sub/../../secret/secret.png", "link_in.png", "fifo.png", "broken.png", "sub",
             "missing.png", "./ok.png", "sub/../ok.png", "//etc/passwd", "~/x.png", "", ".", "..", "ok.png\x00x"]
    return st.one_of(
        st.sampled_from(known),
        st.builds(lambda n, p: "../" * n + p, st.integers(0, 4), st.sampled_from(["secret/secret.png", "ds/ok.png"])),
        st.text(max_size=40),
    )


def usable_or_hostile_paths(world: dict) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(["ok.png", "sub/inner.png", "link_in.png", "./ok.png"]), hostile_paths(world))


def image_values(world: dict, as_json: bool = False) -> st.SearchStrategy:
    """Image values of any shape; ``as_json``: only what a JSON row can hold (no bytes, so an
    Image struct's 'bytes' is text or a number there: a wrong type)."""
    path = hostile_paths(world)
    data = (st.one_of(st.none(), st.text(max_size=8), st.integers()) if as_json
            else st.one_of(st.none(), st.just(INSIDE), st.binary(max_size=8)))
    raw = st.nothing() if as_json else st.one_of(st.just(INSIDE), st.just(SECRET[:10]), st.binary(max_size=30))
    one = st.one_of(path, raw, st.fixed_dictionaries({"bytes": data, "path": st.one_of(st.none(), path)}),
                    st.none(), st.integers(), st.floats(allow_nan=False))
    return st.one_of(one, st.lists(one, max_size=3))


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=3),
                                                         st.dictionaries(st.text(max_size=8), c, max_size=3)),
                          max_leaves=8)
texts = st.one_of(st.text(max_size=30), st.just("<image>what?"), st.just("<image><image>x"), json_leaf)


def turns() -> st.SearchStrategy:
    role = st.sampled_from(["user", "assistant", "system", "human", "gpt", "tool", "", None])
    turn = st.one_of(
        st.fixed_dictionaries({"role": role, "content": st.one_of(texts, st.lists(
            st.one_of(st.just({"type": "image"}), st.builds(lambda t: {"type": "text", "text": t}, texts), json_value),
            max_size=3))}),
        st.fixed_dictionaries({"from": role, "value": texts}),
        json_value)
    return st.one_of(st.lists(turn, max_size=4), json_value)


def rows(world: dict, fmt: str) -> st.SearchStrategy:
    """Rows of any shape, and (as often) rows shaped as ``fmt`` expects whose values are hostile."""
    keys = ["file_name", "image", "images", "text", "caption", "question", "answer", "messages", "conversations"]
    values = {"file_name": image_values(world, True), "image": image_values(world, True),
              "images": image_values(world, True), "messages": turns(), "conversations": turns()}
    row = st.fixed_dictionaries({}, optional={k: values.get(k, texts) for k in keys})
    answer = st.text(min_size=1, max_size=10).filter(str.strip)
    chat = st.builds(lambda q, a: [{"from": "human", "value": q}, {"from": "gpt", "value": a}], texts, answer)
    paths = usable_or_hostile_paths(world)
    likely = {  # rows that get past the shape checks, so the image checks are exercised too
        "imagefolder": st.fixed_dictionaries({"file_name": paths, "text": answer}),
        "llava": st.fixed_dictionaries({"image": paths, "conversations": chat}),
        "sharegpt": st.fixed_dictionaries({"images": st.lists(paths, min_size=1, max_size=2), "messages": chat}),
    }[fmt]
    return st.one_of(likely, likely, row, json_value)


def _check(data: Path, **kw) -> None:
    """Reading ``data`` keeps every promise, whatever it holds."""
    try:
        examples, report = load_examples(data, instruction="Describe.", **kw)
    except DataError as exc:
        assert "\n" not in str(exc)
        event("no usable row")
        return
    event("some rows usable")
    assert len(examples) == report.usable == report.total_rows - sum(1 for s in report.skipped if s.line)
    real = os.path.realpath(data)
    for e in examples:
        assert e.messages[-1]["role"] == "assistant"
        n_parts = sum(1 for m in e.messages for p in m["content"] if p["type"] == "image")
        assert n_parts == len(e.images) >= 1
        for image in e.images:
            assert image.digest != SECRET_DIGEST
            if image.path is not None:
                assert str(image.path).startswith(real + os.sep)
            assert image.load().width >= 1  # and read again, through the same confinement
    for s in report.skipped:
        assert "\n" not in s.describe()


@SETTINGS
@given(data=st.data())
def test_an_image_path_never_reads_outside_the_dataset_folder(world, data):
    value = data.draw(image_values(world))
    base = data.draw(st.sampled_from([world["ds"], world["ds"] / "sub"]))
    try:
        refs = images_of(value, base, world["ds"], "image")
    except BadRow as bad:
        assert "\n" not in str(bad) and (bad.file_name is None or "\n" not in bad.file_name)
        event(f"refused: {str(bad).split('(')[0]}")
        return
    event("image accepted")
    for ref in refs:
        assert ref.digest != SECRET_DIGEST
        assert ref.path is None or str(ref.path).startswith(os.path.realpath(world["ds"]) + os.sep)


@pytest.mark.slow
@SETTINGS
@given(data=st.data())
def test_imagefolder_sharegpt_and_llava_rows(world, data):
    layout = data.draw(st.sampled_from(["metadata.jsonl", "data.json", "data.jsonl"]))
    fmt = "imagefolder" if layout == "metadata.jsonl" else data.draw(st.sampled_from(["sharegpt", "llava"]))
    records = data.draw(st.lists(rows(world, fmt), min_size=1, max_size=5))
    with tempfile.TemporaryDirectory(dir=world["base"]) as tmp:
        data_dir = _dataset(world, Path(tmp))
        write_json(data_dir / layout, records, lines=layout.endswith(".jsonl"))
        _check(data_dir, format=fmt)


@pytest.mark.slow
@SETTINGS
@given(data=st.data())
def test_parquet_and_arrow_columns_of_any_type(world, data):
    n = data.draw(st.integers(1, 4))
    struct = st.fixed_dictionaries({"bytes": st.one_of(st.none(), st.just(INSIDE), st.binary(max_size=8)),
                                    "path": st.one_of(st.none(), usable_or_hostile_paths(world))})
    image_column = data.draw(st.sampled_from(["structs", "paths", "bytes", "lists", "ints"]))
    image = {"structs": st.one_of(struct, struct, st.none()), "paths": st.one_of(st.none(), usable_or_hostile_paths(world)),
             "bytes": st.one_of(st.none(), st.just(INSIDE), st.binary(max_size=8)),
             "lists": st.lists(struct, max_size=2), "ints": st.integers(-5, 5)}[image_column]
    text = st.one_of(st.just("A caption."), st.none(), st.text(max_size=20))
    image_name = data.draw(st.sampled_from(["image", "image", "images", "img"]))  # 'img': not mapped
    text_name = data.draw(st.sampled_from(["text", "text", "caption", "question"]))  # 'question': wants 'answer'
    columns = {image_name: data.draw(st.lists(image, min_size=n, max_size=n)),
               text_name: data.draw(st.lists(text, min_size=n, max_size=n))}
    if data.draw(st.booleans()):
        columns["answer"] = data.draw(st.lists(text, min_size=n, max_size=n))
    with tempfile.TemporaryDirectory(dir=world["base"]) as tmp:
        data_dir = _dataset(world, Path(tmp))
        if data.draw(st.booleans()):
            write_parquet(data_dir / "data" / "train-00000-of-00001.parquet", columns)
        else:
            write_arrow(data_dir / "data-00000-of-00001.arrow", columns, stream=data.draw(st.booleans()))
        _check(data_dir)


@SETTINGS
@given(raw=turns(), n_images=st.integers(0, 3))
def test_any_chat_becomes_a_chat_with_one_part_per_image_or_a_bad_row(raw, n_images):
    try:
        messages = normalise_chat(raw, "messages", n_images, None)
    except BadRow as bad:
        assert "\n" not in str(bad)
        return
    assert messages[-1]["role"] == "assistant" and all(m["role"] in ("system", "user", "assistant") for m in messages)
    assert sum(1 for m in messages for p in m["content"] if p["type"] == "image") == n_images
    assert all(isinstance(p.get("text", ""), str) for m in messages for p in m["content"])


@SETTINGS
@given(fields=st.dictionaries(st.sampled_from(["image", "caption", "question", "answer", "messages", "img"]),
                              st.one_of(st.text(max_size=12), st.integers(), st.none()), max_size=4),
       fmt=st.one_of(st.sampled_from(["auto", "parquet", "llava", "csv", ""]), st.integers()),
       weights=st.dictionaries(st.text(max_size=6), st.one_of(st.floats(), st.integers(-2, 3), st.text(max_size=3)),
                               max_size=2),
       evaluation=st.one_of(st.none(), st.dictionaries(st.sampled_from(["dataset", "fraction", "steps", "x"]),
                                                       st.one_of(st.floats(), st.text(max_size=4), st.integers()),
                                                       max_size=3)))
def test_any_data_settings_are_valid_or_one_line_errors(fields, fmt, weights, evaluation):
    data = {"fields": fields, "format": fmt, "datasets": {k: {"weight": v} for k, v in weights.items()}}
    if evaluation is not None:
        data["eval"] = evaluation
    try:
        config = parse_train_config(data)
    except TrainConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert hash(config) == hash(parse_train_config(config.model_dump(mode="json")))
    for d in config.datasets:
        assert 0 <= config.dataset_settings(d.name).weight <= 1000


def _dataset(world: dict, tmp: Path) -> Path:
    """A dataset folder holding the same files and links as world's (links out included)."""
    data_dir = tmp / "ds"
    (data_dir / "sub").mkdir(parents=True)
    (data_dir / "ok.png").write_bytes(INSIDE)
    (data_dir / "link_out.png").symlink_to(world["secret"])
    (data_dir / "link_dir").symlink_to(world["secret"].parent)
    (data_dir / "sub" / "rel_out.png").symlink_to(os.path.relpath(world["secret"], data_dir / "sub"))
    (data_dir / "sub" / "inner.png").write_bytes(png((0, 250, 0)))
    (data_dir / "link_in.png").symlink_to("ok.png")
    os.mkfifo(data_dir / "fifo.png")
    (data_dir / "secret").mkdir()  # '../secret/secret.png' from sub/ lands here: inside, no image
    return data_dir
