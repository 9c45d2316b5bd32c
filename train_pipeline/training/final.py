"""The final model folder (``<output_dir>/final``): written whole or not at all, and never at the
cost of files others put there.

The new model is saved into ``final.partial`` and swapped in by one rename; files in the old
``final/`` that no training wrote (per ``.final.owned.json`` beside it) are hard-linked into the new
one first (resumable.foreign), or, where the new one has a file of that name, nothing is replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from resumable.foreign import Owned

FINAL_NAME = "final"
FINAL_OWNED_NAME = ".final.owned.json"  # what training wrote into final/ (the rest is someone else's)


class FinalFolderError(ValueError):
    """final/ exists but no valid record says what training wrote into it."""


def save_final(trainer: Any, processor: Any, out: Path) -> Path:
    """Write final/ through a temporary folder swapped in at once, so a kill never leaves a
    half-written final model; files in the old final/ that no training wrote are kept in the new
    one (ForeignFileError, changing nothing, where the new one has a file of that name)."""
    from resumable.extract.atomic import publish
    from resumable.foreign import carry_foreign, scan_owned

    final, partial, record = out / FINAL_NAME, out / f"{FINAL_NAME}.partial", out / FINAL_OWNED_NAME
    # With several processes every rank calls this (FSDP gathers the full weights for rank 0's
    # save_model) and rank 0 alone writes files; a plain object with save_model is one process.
    main = getattr(trainer, "is_world_process_zero", lambda: True)()
    wait_for_everyone = getattr(getattr(trainer, "accelerator", None), "wait_for_everyone", lambda: None)
    if main:
        recover(out)
        remove(partial)  # a killed save's, or the old final/ of a swap killed before its removal
    wait_for_everyone()
    trainer.save_model(str(partial))
    wait_for_everyone()
    if not main:
        return final
    processor.save_pretrained(str(partial))
    follow_umask(partial)
    written = scan_owned(partial)
    before = final_owned(out) if os.path.lexists(final) else Owned()
    if before is None:
        raise FinalFolderError(FINAL_UNKNOWN.format(final=final))
    if os.path.lexists(final):
        carry_foreign(final, partial, before, made_by="training")
    write_owned(record, before | written)  # a kill from here on leaves every file of ours listed
    publish(partial, final)
    write_owned(record, written)
    return final


def follow_umask(folder: Path) -> None:
    """Give the files written into ``folder`` the mode new files get here (0644 under the usual
    umask 022), as every other output has: safetensors creates its files 0600, so on a shared
    cluster nobody else could read the weights. Executable files keep their x bits."""
    probe = folder / ".mode-probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # what the umask leaves (os.umask is racy)
    try:
        wanted = os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)
        probe.unlink()
    for path in folder.rglob("*"):
        st = path.lstat()
        if stat.S_ISREG(st.st_mode) and (st.st_mode & 0o666) != wanted:
            os.chmod(path, wanted | (st.st_mode & 0o111))


FINAL_UNKNOWN = ("{final} exists but no record says what training wrote into it (a folder made by hand, or an older "
                  "release's, or its record was damaged); move it away, or delete it if it holds nothing of yours")


def final_owned(out: Path) -> Owned | None:
    """What training wrote into ``out/final`` per its record; None when there is no valid record
    (then every file in it may be someone else's) or final/ is not a real folder."""
    final = out / FINAL_NAME
    if final.is_symlink() or not final.is_dir():
        return None
    try:
        data = json.loads((out / FINAL_OWNED_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    lists = [data.get(k) for k in ("dirs", "files")] if isinstance(data, dict) else []
    if len(lists) == 2 and all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in lists):
        return Owned(frozenset(lists[0]), frozenset(lists[1]))
    return None


def write_owned(path: Path, owned: Owned) -> None:
    from resumable.state import write_json

    write_json(path, {"dirs": sorted(owned.dirs), "files": sorted(owned.files)}, durable=True)




def recover(out: Path) -> None:
    """Undo what a killed swap left: a final/ moved aside (``-old``) but never replaced is put back,
    other temporary folders of the swap are removed. Call with the output folder's lock held."""
    from resumable.extract.atomic import remove_stale

    remove_stale(out / FINAL_NAME)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
