"""Synthetic outdoor-advertising images in the Hugging Face imagefolder layout.

Each picture is a billboard: sky and ground, a post, and a coloured panel carrying a shape and
a word. The caption names exactly those things (panel colour, shape, word, time of day), so a
model can learn to map picture to caption.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (210, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 210), "yellow": (235, 205, 40)}
SHAPES = ("circle", "square", "triangle")
WORDS = ("SALE", "COLA", "BANK", "TAXI")
SKIES = {"day": (135, 195, 240), "night": (20, 25, 60)}
SIZES = (64, 80, 96, 112)


def caption_vocabulary() -> list[str]:
    """Every word the captions use (the tiny tokenizer is trained on these)."""
    words = {"A", "billboard", "with", "a", "panel", "shows", "the", "word", "at", "."}
    return sorted(words | set(COLOURS) | set(SHAPES) | set(WORDS) | set(SKIES))


def _caption(colour: str, shape: str, word: str, sky: str) -> str:
    return f"A {colour} billboard with a {shape} shows the word {word} at {sky}."


def _draw(size: tuple[int, int], colour: str, shape: str, word: str, sky: str) -> Image.Image:
    w, h = size
    img = Image.new("RGB", size, SKIES[sky])
    d = ImageDraw.Draw(img)
    d.rectangle([0, int(h * 0.8), w, h], fill=(90, 90, 90))  # road
    d.rectangle([int(w * 0.47), int(h * 0.55), int(w * 0.53), int(h * 0.8)], fill=(60, 50, 40))  # post
    panel = [int(w * 0.08), int(h * 0.1), int(w * 0.92), int(h * 0.58)]
    d.rectangle(panel, fill=COLOURS[colour], outline=(255, 255, 255))
    x0, y0, x1, y1 = panel
    s = (y1 - y0) * 0.6
    bx, by = x0 + (y1 - y0) * 0.2, y0 + (y1 - y0) * 0.2
    box = [bx, by, bx + s, by + s]
    if shape == "circle":
        d.ellipse(box, fill=(255, 255, 255))
    elif shape == "square":
        d.rectangle(box, fill=(255, 255, 255))
    else:
        d.polygon([(bx, by + s), (bx + s / 2, by), (bx + s, by + s)], fill=(255, 255, 255))
    d.text((bx + s + 3, by + s / 2 - 5), word, fill=(0, 0, 0))  # PIL's built-in bitmap font
    return img


def build_sample_dataset(
    dest_dir: str | os.PathLike, n_images: int = 24, seed: int = 0, sizes: Sequence[int] = SIZES
) -> Path:
    """Write ``n_images`` billboard PNGs and ``metadata.jsonl`` (file_name, text) to dest_dir.

    Width and height are drawn from ``sizes`` (pixels). Deterministic for a given seed (PNG bytes included).
    """
    if n_images < 1:
        raise ValueError(f"n_images={n_images}: ask for at least 1 image")
    if not sizes or min(sizes) < 16:
        raise ValueError(f"sizes={list(sizes)}: give side lengths of at least 16 pixels")
    rng = random.Random(seed)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_images):
        colour, shape = rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
        word, sky = rng.choice(WORDS), rng.choice(sorted(SKIES))
        size = (rng.choice(sizes), rng.choice(sizes))
        name = f"billboard_{i:04d}.png"
        _draw(size, colour, shape, word, sky).save(dest / name, format="PNG", optimize=False)
        rows.append({"file_name": name, "text": _caption(colour, shape, word, sky)})
    with open(dest / "metadata.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return dest


def build_sample_parquet(dest_dir: str | os.PathLike, n_images: int = 12, seed: int = 1, shards: int = 2,
                         sizes: Sequence[int] = SIZES) -> list[Path]:
    """The same kind of billboards as Hugging Face Hub datasets store them: ``shards`` parquet files
    ``data/train-0000i-of-0000n.parquet`` under ``dest_dir``, each row an ``image`` (the ``datasets``
    Image struct ``{bytes, path}``, PNG bytes) and its ``text``. Deterministic for a given seed."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    if n_images < shards or shards < 1:
        raise ValueError(f"n_images={n_images}, shards={shards}: give at least one image per shard")
    rng = random.Random(seed)
    rows = []
    for i in range(n_images):
        colour, shape = rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
        word, sky = rng.choice(WORDS), rng.choice(sorted(SKIES))
        buf = io.BytesIO()
        _draw((rng.choice(sizes), rng.choice(sizes)), colour, shape, word, sky).save(buf, format="PNG", optimize=False)
        rows.append({"image": {"bytes": buf.getvalue(), "path": f"billboard_{i:04d}.png"},
                     "text": _caption(colour, shape, word, sky)})
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image), ("text", pa.string())])
    folder = Path(dest_dir) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(shards):
        path = folder / f"train-{k:05d}-of-{shards:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows[k::shards], schema=schema), path)
        out.append(path)
    return out
