"""File names from URLs and Content-Disposition that can never escape the target directory."""

from __future__ import annotations

import os
import re
from email.message import Message
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import UsageError
from .redaction import redact

_UNSAFE = re.compile(r"[\x00-\x1f/\\:]")


def safe_name(candidate: str | None) -> str | None:
    """The last path component, stripped of anything a filesystem could read as a path."""
    if not candidate:
        return None
    name = candidate.replace("\\", "/").split("/")[-1]
    name = _UNSAFE.sub("_", name).strip().lstrip(".").strip()
    if name in ("", ".", "..") or len(name.encode()) > 255:
        return None
    return name


def name_from_disposition(value: str | None) -> str | None:
    if not value:
        return None
    msg = Message()
    msg["Content-Disposition"] = value
    return safe_name(msg.get_filename())  # handles filename*=UTF-8''... and quoting


def name_from_url(url: str) -> str | None:
    return safe_name(unquote(urlsplit(url).path))


def destination_in(directory: Path, name: str | None, url: str) -> Path:
    """``directory/name`` (the folder's symlinks resolved, the name's never: a symlink standing at the
    name is the destination, which the engine then refuses to write through)."""
    name = safe_name(name) or name_from_url(url)
    if not name:
        raise UsageError(f"URL {redact(url)!r} names no file; pass -o FILE to choose one")
    folder = directory.resolve()
    dest = folder / name
    if dest.parent != folder or name in (".", ".."):  # belt and braces: safe_name already forbids this
        raise UsageError(f"file name {name!r} from {redact(url)!r} would leave {directory}; pass -o FILE")
    return dest


def check_output_path(output: str | os.PathLike) -> None:
    """``-o`` names a file: a path ending in '/' (or '/.', '/..') is a folder, which would silently
    become a file named after its last component."""
    text = os.fspath(output)
    text = text.decode("utf-8", "surrogateescape") if isinstance(text, bytes) else text
    last = text.replace(os.sep, "/").rsplit("/", 1)[-1]
    if last in ("", ".", ".."):
        raise UsageError(f"-o {text}: ends with '{last or '/'}', a folder, and -o names a file: write the file's "
                         f"path (e.g. {text.rstrip('/.') or '.'}/FILE), or use -d {text} to keep the names")
