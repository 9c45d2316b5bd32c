"""Reading JSON data files: JSON lines (one object per line) and JSON arrays of records, and a
cheap look at a file's first records (which keys it has) to tell what layout it is."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from train_pipeline.training.formats.common import BadRow, UnreadableFile

PEEK_RECORDS = 20
PEEK_BYTES = 16 << 20


def row_kind(path: Path) -> str:
    return "line" if path.suffix.lower() == ".jsonl" else "record"


def rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line or record number from 1, the parsed object or a BadRow) for every row of the file."""
    if path.suffix.lower() == ".jsonl":
        yield from _lines(path)
        return
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UnreadableFile(f"not a readable JSON file ({_why(exc)})") from None
    if not isinstance(data, list):
        raise UnreadableFile("not a JSON list of records: write [{...}, {...}] or one object per line (.jsonl)")
    for number, record in enumerate(data, start=1):
        yield number, record


def _lines(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except ValueError as exc:
                    yield number, BadRow(f"not valid JSON ({getattr(exc, 'msg', type(exc).__name__)})")
                except RecursionError:
                    yield number, BadRow("not valid JSON (nested too deeply)")
    except OSError as exc:
        raise UnreadableFile(f"unreadable ({_why(exc)})") from None


def peek(path: Path, limit: int = PEEK_RECORDS) -> list[Any]:
    """The first ``limit`` records of a .jsonl or .json file (fewer if it has fewer, or if it is
    not a list of records), reading at most PEEK_BYTES."""
    try:
        with open(path, "rb") as fh:
            if path.suffix.lower() == ".jsonl":
                return _peek_lines(fh, limit)
            return _peek_array(fh, limit)
    except OSError:
        return []


def _peek_lines(fh, limit: int) -> list[Any]:
    out, read = [], 0
    for line in fh:
        read += len(line)
        if line.strip():
            try:
                out.append(json.loads(line))
            except (ValueError, RecursionError):
                pass
        if len(out) >= limit or read > PEEK_BYTES:
            break
    return out


def _peek_array(fh, limit: int) -> list[Any]:
    buf = b""
    while True:
        chunk = fh.read(1 << 20)
        buf += chunk
        records, done = _array_prefix(buf.decode("utf-8", errors="ignore"), limit)
        if done or not chunk or len(buf) >= PEEK_BYTES:
            return records


def _array_prefix(text: str, limit: int) -> tuple[list[Any], bool]:
    """The complete records at the start of a JSON array in ``text``; done = no more to read."""
    decoder = json.JSONDecoder()
    i = _skip(text, 0)
    if i >= len(text):
        return [], False
    if text[i] != "[":
        return [], True  # not an array of records
    out: list[Any] = []
    i = _skip(text, i + 1)
    while len(out) < limit:
        if i < len(text) and text[i] == "]":
            return out, True
        try:
            value, i = decoder.raw_decode(text, i)
        except (ValueError, RecursionError):
            return out, False
        out.append(value)
        i = _skip(text, i)
        if i < len(text) and text[i] == ",":
            i = _skip(text, i + 1)
    return out, True


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def keys_of(records: list[Any]) -> set[str]:
    return {k for r in records if isinstance(r, dict) for k in r if isinstance(k, str)}


def _why(exc: BaseException) -> str:
    return getattr(exc, "msg", None) or getattr(exc, "strerror", None) or type(exc).__name__
