"""Archive builders for the extraction tests (a uniquely named module: test folders are not packages)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import tarfile
import zipfile
from pathlib import Path

import zstandard

# Content every round-trip archive holds: path -> (bytes, mode)
SAMPLE = {
    "README.txt": (b"hello\n", 0o644),
    "bin/run.sh": (b"#!/bin/sh\necho run\n", 0o755),
    "data/nested/deep/values.csv": (b"a,b\n1,2\n" * 1000, 0o644),
    "data/empty.bin": (b"", 0o644),
}
SAMPLE_LINK = ("data/latest.csv", "nested/deep/values.csv")  # a relative symlink inside the tree

COMPRESSORS = {
    "gz": lambda b: gzip.compress(b, compresslevel=1),
    "bz2": lambda b: bz2.compress(b, compresslevel=1),
    "xz": lambda b: lzma.compress(b, preset=0),
    "zst": lambda b: zstandard.ZstdCompressor(level=1).compress(b),
}


def tar_bytes(members: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for m in members:
            info, data = m if isinstance(m, tuple) else (m, None)
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def file_member(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.mtime = 1_700_000_000
    return info, data


def link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def sample_tar() -> bytes:
    members = [file_member(name, data, mode) for name, (data, mode) in SAMPLE.items()]
    members.append(link_member(*SAMPLE_LINK))
    return tar_bytes(members)


def zip_symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (0o120777 << 16)
    return info


def sample_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, (data, mode) in SAMPLE.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 2, 3, 4, 6))
            info.create_system = 3
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
        zf.writestr(zip_symlink_info(SAMPLE_LINK[0]), SAMPLE_LINK[1])
    return buf.getvalue()


def build(fmt: str) -> bytes:
    """An archive of SAMPLE in ``fmt`` (for single-file formats: values.csv alone)."""
    if fmt == "zip":
        return sample_zip()
    if fmt == "tar":
        return sample_tar()
    if fmt.startswith("tar."):
        return COMPRESSORS[fmt[4:]](sample_tar())
    return COMPRESSORS[fmt](SAMPLE["data/nested/deep/values.csv"][0])


def assert_sample_tree(target: Path) -> None:
    for name, (data, mode) in SAMPLE.items():
        path = target / name
        assert path.read_bytes() == data, name
        assert path.stat().st_mode & 0o7777 == mode, name
    link = target / SAMPLE_LINK[0]
    assert link.is_symlink() and os.readlink(link) == SAMPLE_LINK[1]
    assert link.read_bytes() == SAMPLE["data/nested/deep/values.csv"][0]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def leftovers(box: Path, *expected: str) -> set[str]:
    """Names in ``box`` other than the expected ones and our lock file: must be empty after a refusal."""
    return {p.name for p in box.iterdir()} - set(expected) - {p.name for p in box.glob(".*.extract.lock")}
