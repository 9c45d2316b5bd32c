"""The values a config may hold: the rules for paths and names (what the OS can create), the
limits, where the project keeps its configs, and :class:`ConfigError` (one line naming the key
and the fix). No heavy imports here (no prefect, torch, transformers)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from resumable.redaction import one_line, redact_text

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIGS_DIR = PROJECT_ROOT / "configs"
SAMPLE_CONFIG = CONFIGS_DIR / "sample.yaml"
RESULT_STORAGE_ENV = "TRAIN_PIPELINE_RESULT_STORAGE"
BLOCK_PREFIX = "block:"

# Matched with fullmatch: '$' alone would let a trailing newline through.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# prefect.types.names: a block type slug and a block document name are lowercase letters, digits and '-'.
_BLOCK_SLUG = re.compile(r"[a-z0-9-]+/[a-z0-9-]+")
NAME_MAX = 255  # bytes in one file or folder name (Linux NAME_MAX)
PATH_MAX = 4096  # bytes in a path, including the terminating NUL (Linux PATH_MAX)
MAX_FILE_SIZE = 2**63 - 1  # the largest file offset (off_t)
MAX_CONNECTIONS = 32  # per file; also the bound of `train-pipeline datasets download --connections`
MAX_RETRIES = 50  # per source; also the bound of `train-pipeline datasets download --retries`
DOWNLOADS = "downloads"  # <data_dir>/downloads/<dataset>/ holds the downloaded files (registry.download_path)


class ConfigError(ValueError):
    """The config is invalid; the message is one line naming the key and the fix (and never a URL's
    query or userinfo: it reaches logs and Prefect states)."""

    def __init__(self, *args):
        super().__init__(*(one_line(redact_text(a)) if isinstance(a, str) else a for a in args))


def _encoded(value: str) -> bytes:
    try:
        return os.fsencode(value)
    except UnicodeEncodeError:
        raise ValueError(f"{value!r} cannot be written as a file name on this system; use plain characters") from None


def check_path(value: str) -> str:
    """``value`` when the OS can create such a path (a folder or file the config names), else a
    ValueError: empty, control characters (a NUL is refused by every system call), a name over
    NAME_MAX or a path over PATH_MAX bytes."""
    if not value.strip():
        raise ValueError(f"{value!r} is empty; give a path ('.' is the working directory)")
    if _CONTROL.search(value):
        raise ValueError(f"{value!r} contains a control character (NUL, newline, tab, ...); remove it")
    raw = _encoded(value)
    if len(raw) >= PATH_MAX:
        raise ValueError(f"path of {len(raw)} bytes: the system's limit is {PATH_MAX - 1}; use a shorter path")
    if any(len(part) > NAME_MAX for part in raw.split(b"/")):
        raise ValueError(f"{value!r}: a name in it is longer than {NAME_MAX} bytes, the file system's limit; shorten it")
    return value


def check_file_name(value: str, what: str = "file name") -> str:
    """A plain name (letters, digits, '.', '_', '-'; no '/') that fits the file system."""
    if not _NAME.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"{value!r} is not a plain {what}; use letters, digits, '.', '_' or '-' (no '/')")
    if len(value) > NAME_MAX:
        raise ValueError(f"{what} of {len(value)} characters: the file system allows {NAME_MAX}; shorten it")
    return value


def check_dataset_name(value: str) -> str:
    """A dataset name: a folder under ``<data_dir>/downloads/`` (the rule of DatasetSpec.name)."""
    try:
        return check_file_name(value, "dataset name")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


