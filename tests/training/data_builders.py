"""Tiny datasets in every format training reads, built by the tests themselves (PIL images,
parquet and arrow through pyarrow, JSON files), from the synthetic billboards of offline/."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

from PIL import Image


def png(colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (24, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def billboards(src: Path) -> list[tuple[Path, str]]:
    """(image, caption) of the sample dataset at ``src`` (an imagefolder)."""
    rows = [json.loads(line) for line in (src / "metadata.jsonl").read_text().splitlines() if line.strip()]
    return [(src / r["file_name"], r["text"]) for r in rows]


def write_parquet(path: Path, columns: dict[str, list[Any]], row_group_size: int | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def write_arrow(path: Path, columns: dict[str, list[Any]], stream: bool = True) -> Path:
    """An Arrow IPC file as ``datasets`` writes them (stream format), or the IPC file format."""
    import pyarrow as pa

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(columns)
    with pa.OSFile(str(path), "wb") as sink:
        opener = pa.ipc.new_stream if stream else pa.ipc.new_file
        with opener(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=2)
    return path


def write_json(path: Path, records: Any, lines: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if lines:
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records), encoding="utf-8")
    return path


def parquet_dataset(src: Path, dest: Path, n: int, shards: int = 2) -> Path:
    """HF Hub layout: data/train-0000i-of-0000n.parquet with image {bytes, path} + text columns."""
    rows = billboards(src)[:n]
    for i in range(shards):
        part = rows[i::shards]
        write_parquet(dest / "data" / f"train-{i:05d}-of-{shards:05d}.parquet", {
            "image": [{"bytes": p.read_bytes(), "path": p.name} for p, _ in part],
            "text": [c for _, c in part],
        })
    return dest


def sharegpt_dataset(src: Path, dest: Path, n: int) -> Path:
    """LLaMA-Factory's mllm_demo layout: mllm_demo.json + mllm_demo_data/ images."""
    rows = billboards(src)[:n]
    (dest / "mllm_demo_data").mkdir(parents=True, exist_ok=True)
    records = []
    for p, caption in rows:
        shutil.copy(p, dest / "mllm_demo_data" / p.name)
        records.append({"messages": [{"role": "user", "content": "<image>What does the billboard show?"},
                                     {"role": "assistant", "content": caption}],
                        "images": [f"mllm_demo_data/{p.name}"]})
    write_json(dest / "mllm_demo.json", records)
    write_json(dest / "dataset_info.json", {"mllm_demo": {"file_name": "mllm_demo.json", "formatting": "sharegpt"}})
    return dest


def llava_dataset(src: Path, dest: Path, n: int) -> Path:
    """LLaVA layout: llava_instruct.json with conversations, images in images/ (--image_folder)."""
    rows = billboards(src)[:n]
    (dest / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i, (p, caption) in enumerate(rows):
        shutil.copy(p, dest / "images" / p.name)
        records.append({"id": str(i), "image": p.name,
                        "conversations": [{"from": "human", "value": "<image>\nDescribe the billboard."},
                                          {"from": "gpt", "value": caption}]})
    write_json(dest / "llava_instruct.json", records)
    return dest
