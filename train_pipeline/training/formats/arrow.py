"""arrow: ``*.arrow`` files, as ``datasets`` writes them (``save_to_disk`` folders, its cache):
the Arrow IPC stream format, or the IPC file format. Same columns as parquet (see parquet.py for
why pyarrow directly). The file is memory-mapped and read one record batch at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from train_pipeline.training.data_settings import DataFields
from train_pipeline.training.formats.common import UnreadableFile
from train_pipeline.training.formats.rows import FieldDefaults

NAME = "arrow"
DESCRIBE = "arrow (*.arrow files from datasets' save_to_disk, with the same columns as parquet)"
DEFAULTS = FieldDefaults(image=("image", "images"))


def claims(path: Path, fields: DataFields, explicit: bool) -> bool:
    return path.suffix.lower() == ".arrow"


def row_kind(path: Path) -> str:
    return "row"


def rows(path: Path, wanted: set[str], report) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa

    number = 0
    try:
        with pa.memory_map(str(path)) as source:
            batches = _batches(source)
            schema = next(batches)
            report.see_columns(schema.names)
            columns = [c for c in schema.names if c in wanted]
            if not columns:
                raise UnreadableFile(f"none of its columns ({', '.join(schema.names[:12]) or 'none'}) is an image or "
                                     "text column of the field mapping")
            for batch in batches:
                for row in batch.select(columns).to_pylist():
                    number += 1
                    yield number, row
    except (pa.ArrowException, OSError, ValueError) as exc:
        where = f"after row {number}" if number else "as Arrow IPC (stream or file)"
        raise UnreadableFile(f"unreadable {where} ({type(exc).__name__})") from None


def _batches(source) -> Iterator[Any]:
    """The schema, then every record batch: the IPC file format, else the stream format."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    try:
        reader = ipc.open_file(source)
    except pa.ArrowInvalid:
        source.seek(0)
        stream = ipc.open_stream(source)
        yield stream.schema
        yield from stream
        return
    yield reader.schema
    for i in range(reader.num_record_batches):
        yield reader.get_batch(i)
