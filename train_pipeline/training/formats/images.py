"""A row's image value -> checked ImageRefs; an image path never reads outside the dataset folder.

A row may name its image(s) as a path, encoded bytes, a Hugging Face ``Image`` value
(``{"bytes": ..., "path": ...}``: the bytes win, else the path), or a list of these. A path is
relative to ``base`` (the folder of the file naming it, or ``image_dir``) and must stay inside
``root`` (the dataset folder): absolute paths, ``..`` and symlinks leading out are refused, and
so is whatever is not a regular file. The check is made on the file actually opened (``O_NOFOLLOW``
on the resolved path, then the opened descriptor's own path), so a folder swapped for a link
after the check cannot lead the read out either. Every image is fully decoded once, here: a
truncated file is a skipped row now, not a crash mid-epoch.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
from pathlib import Path
from typing import Any

from train_pipeline.training.formats.common import BadRow, ImageRef, one_line

MAX_IMAGE_BYTES = 256 << 20  # one encoded image; a bigger "image" is a mistake, not a picture
MAX_IMAGES_PER_ROW = 64


def images_of(value: Any, base: Path, root: Path, field: str) -> tuple[ImageRef, ...]:
    """The row's ``field`` value as checked images (BadRow when any is unusable)."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if value is None or not items:
        raise BadRow(f"no image in {field!r}")
    if len(items) > MAX_IMAGES_PER_ROW:
        raise BadRow(f"{field!r} has {len(items)} images; at most {MAX_IMAGES_PER_ROW} per row")
    return tuple(_one(item, base, root, field) for item in items)


def _one(item: Any, base: Path, root: Path, field: str) -> ImageRef:
    if isinstance(item, dict):  # the Hugging Face Image feature: {bytes, path}
        data, path = item.get("bytes"), item.get("path")
        if data is not None:
            return _from_bytes(data, path if isinstance(path, str) and path else "<bytes>", field)
        item = path
    if isinstance(item, (bytes, bytearray, memoryview)):
        return _from_bytes(item, "<bytes>", field)
    if isinstance(item, str) and item:
        return _from_path(item, base, root)
    raise BadRow(f"{field!r} is not an image path, image bytes or {{bytes, path}} ({type(item).__name__})")


def _from_bytes(data: Any, name: str, field: str) -> ImageRef:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadRow(f"{field!r}: its bytes are a {type(data).__name__}, not bytes", one_line(name))
    data = bytes(data)
    if len(data) > MAX_IMAGE_BYTES:
        raise BadRow(f"image of {len(data)} bytes, over {MAX_IMAGE_BYTES}", one_line(name))
    decode(data, one_line(name))
    return ImageRef(name=one_line(name), digest=hashlib.sha256(data).hexdigest(), data=data)


def _from_path(name: str, base: Path, root: Path) -> ImageRef:
    short = one_line(name)
    if "\x00" in name:
        raise BadRow("image path contains a NUL byte", short)
    if os.path.isabs(name):
        raise BadRow("image path is absolute; name it relative to the dataset folder", short)
    root_real = os.path.realpath(root)
    path = Path(os.path.realpath(os.path.join(base, name)))
    data = read_inside(Path(root_real), path, short)
    decode(data, short)
    return ImageRef(name=short, digest=hashlib.sha256(data).hexdigest(), root=Path(root_real), path=path)


def read_inside(root: Path | None, path: Path | None, name: str | None = None) -> bytes:
    """The bytes of the regular file ``path`` if it lies inside ``root`` (both resolved), else BadRow."""
    name = name or (path.name if path else "?")
    if root is None or path is None or not _inside(str(path), str(root)):
        raise BadRow("image path leaves the dataset folder", name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise BadRow("image file missing", name) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # became a symlink since it was resolved
            raise BadRow("image path leaves the dataset folder", name) from None
        raise BadRow(f"image unreadable ({errno.errorcode.get(exc.errno, type(exc).__name__)})", name) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadRow("image is not a regular file", name)
        if st.st_size > MAX_IMAGE_BYTES:
            raise BadRow(f"image file of {st.st_size} bytes, over {MAX_IMAGE_BYTES}", name)
        opened = _opened_path(fd)
        if opened is not None and not _inside(opened, str(root)):
            raise BadRow("image path leaves the dataset folder", name)
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > MAX_IMAGE_BYTES:
                raise BadRow(f"image file over {MAX_IMAGE_BYTES} bytes", name)
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise BadRow(f"image unreadable ({errno.errorcode.get(exc.errno, type(exc).__name__)})", name) from None
    finally:
        os.close(fd)


def decode(data: bytes, name: str | None = None):
    """The decoded image (fully loaded: a truncated file fails here), or BadRow."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:  # PIL raises many types for corrupt data (and DecompressionBombError)
        raise BadRow(f"image unreadable ({type(exc).__name__})", name) from None
    if img.width < 1 or img.height < 1:
        raise BadRow("image is empty", name)
    return img


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _opened_path(fd: int) -> str | None:
    """The path of the file behind ``fd`` as the kernel sees it (Linux), else None."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return target if target.startswith(os.sep) else None
