"""Find the latest checkpoint that a kill (SIGKILL included) did not leave half-written.

Trainer writes a checkpoint in this order: weights, optimizer, scheduler, RNG state, and
``trainer_state.json`` last. A checkpoint is complete when that state file parses and names the
folder's step, and every file it needs is whole: safetensors headers and sizes agree, and the
torch pickles are intact zip archives.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
_RNG_RE = re.compile(r"^rng_state_(\d+)\.pth$")
STATE_NAME = "trainer_state.json"
WEIGHT_NAMES = ("model.safetensors", "adapter_model.safetensors", "model.safetensors.index.json")
TORCH_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth")


def checkpoint_dirs(output_dir: Path) -> list[tuple[int, Path]]:
    """All ``checkpoint-N`` folders, oldest step first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := _CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def is_complete_checkpoint(path: Path) -> bool:
    """True when every file Trainer needs to resume from ``path`` is present and whole."""
    match = _CHECKPOINT_RE.match(path.name)
    if not match or not path.is_dir():
        return False
    try:
        state = json.loads((path / STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if state.get("global_step") != int(match.group(1)):
        return False
    if not _zip_intact(path / "scheduler.pt"):
        return False
    # FSDP (accelerate) saves the optimizer as optimizer.bin; DDP and one process as optimizer.pt.
    if not any(_zip_intact(path / name) for name in ("optimizer.pt", "optimizer.bin")):
        return False
    # One process saves rng_state.pth; N processes save rng_state_0.pth .. rng_state_{N-1}.pth, all
    # before trainer_state.json (ResumableTrainer._save_rng_state waits for them).
    rng = sorted(p.name for p in path.glob("rng_state*.pth"))
    ranks = sorted(int(m.group(1)) for n in rng if (m := _RNG_RE.match(n)))
    if rng != ["rng_state.pth"] and (not ranks or ranks != list(range(len(rng)))):
        return False
    if not all(_zip_intact(path / name) for name in rng):
        return False
    return _weights_intact(path)


def latest_complete_checkpoint(output_dir: Path) -> Path | None:
    for _, path in reversed(checkpoint_dirs(output_dir)):
        if is_complete_checkpoint(path):
            return path
        logger.warning("%s is incomplete (interrupted while saving); skipping it", path)
    return None


def remove_checkpoints_beyond(output_dir: Path, limit: int | None) -> list[Path]:
    """Delete the oldest checkpoints beyond ``limit`` (save_total_limit), as Trainer's rotation does
    after each save. A kill between a save and that rotation leaves one too many, and a run that
    resumes with no step left never saves again: without this it would stay for good (a whole
    model and optimizer state; chaos campaign seed 115)."""
    if limit is None:
        return []
    found = checkpoint_dirs(output_dir)
    removed = []
    for _, path in found[:max(0, len(found) - limit)]:
        shutil.rmtree(path)
        removed.append(path)
    return removed


def remove_incomplete_checkpoints(output_dir: Path) -> list[Path]:
    """Delete half-written checkpoints so Trainer's rotation and re-saves never meet them."""
    removed = []
    for _, path in checkpoint_dirs(output_dir):
        if not is_complete_checkpoint(path):
            shutil.rmtree(path)
            removed.append(path)
    return removed


def _zip_intact(path: Path) -> bool:
    # torch.save writes a zip; its central directory is written last, so a cut file fails here.
    try:
        with zipfile.ZipFile(path) as zf:
            return bool(zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _weights_intact(path: Path) -> bool:
    for name in WEIGHT_NAMES:
        candidate = path / name
        if not candidate.is_file():
            continue
        if name.endswith(".index.json"):
            try:
                shards = set(json.loads(candidate.read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, ValueError, KeyError):
                return False
            return all(_safetensors_intact(path / shard) for shard in shards)
        return _safetensors_intact(candidate)
    return False


def _safetensors_intact(path: Path) -> bool:
    """The header's largest data offset must equal the bytes after the header (a cut file is shorter)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            if header_len <= 0 or 8 + header_len > size:
                return False
            header = json.loads(fh.read(header_len))
    except (OSError, ValueError, struct.error):
        return False
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return 8 + header_len + max(ends, default=0) == size
