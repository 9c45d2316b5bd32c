"""Which archive a file is (from its magic bytes, not its name) and its decompressed byte stream."""

from __future__ import annotations

import bz2
import lzma
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from ..errors import CorruptArchiveError, ExtractError

COMPRESSIONS = ("gz", "bz2", "xz", "zst")
FORMATS = ("zip", "tar") + tuple(f"tar.{c}" for c in COMPRESSIONS) + COMPRESSIONS

# Raw reads of 256 KiB and decompressed chunks of 1 MiB measured best here (bench/bench_extract.py);
# small reads cost more in Python overhead than anything else.
READ_SIZE = 256 << 10
CHUNK_SIZE = 1 << 20

_MAGIC = (
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # empty zip: just the end-of-central-directory record
    (b"PK\x07\x08", "zip"),  # spanned-archive marker before the first entry
    (b"\x1f\x8b", "gz"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zst"),
)


def corrupt(archive: Path | str, fmt: str, exc: BaseException) -> CorruptArchiveError:
    return CorruptArchiveError(f"{archive}: corrupt or truncated {fmt} data ({exc or type(exc).__name__})")


# An empty tar is nothing but zero blocks (10 KiB with tar's default blocking): a longer run of
# zeros is a file of zeros, not a tar.
_EMPTY_TAR_MAX = 2 * tarfile.RECORDSIZE


def detect_format(path: str | Path) -> str:
    """``zip``, ``tar``, ``tar.gz|bz2|xz|zst`` or a lone ``gz|bz2|xz|zst`` file, from the content."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(_EMPTY_TAR_MAX + 1)
    except OSError as exc:
        raise ExtractError(f"{path}: cannot read the archive ({exc.strerror or exc}); check the path") from None
    if not head:
        raise CorruptArchiveError(f"{path}: the archive is an empty file")
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            if fmt == "zip":
                return fmt
            return f"tar.{fmt}" if looks_like_tar(_peek(path, fmt, _EMPTY_TAR_MAX + 1)) else fmt
    if looks_like_tar(head):
        return "tar"
    raise ExtractError(f"{path}: not a supported archive (first bytes {head[:8].hex()}); "
                       f"supported: {', '.join(FORMATS)}")


def looks_like_tar(start: bytes) -> bool:
    """A valid tar header (checksum verified by tarfile), or a short all-zero stream (an empty tar)."""
    if len(start) < tarfile.BLOCKSIZE:
        return False
    header = start[: tarfile.BLOCKSIZE]
    if header.count(0) == tarfile.BLOCKSIZE:
        return 2 * tarfile.BLOCKSIZE <= len(start) <= _EMPTY_TAR_MAX and start.count(0) == len(start)
    try:
        tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _peek(path: Path, fmt: str, n: int) -> bytes:
    out = bytearray()
    with open(path, "rb") as f:
        for _, chunk in decompressed_chunks(f, fmt, str(path)):
            out += chunk
            if len(out) >= n:
                break
    return bytes(out)


class _Tee:
    """A raw file that reports each block it reads (for hashing) and where it is (for progress)."""

    def __init__(self, f: BinaryIO, on_raw: Callable[[bytes], None] | None):
        self._f, self._on_raw, self.pos = f, on_raw, 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(READ_SIZE if n is None or n < 0 else n)
        self.pos += len(data)
        if data and self._on_raw is not None:
            self._on_raw(data)
        return data

    def readable(self) -> bool:  # for bz2/lzma file wrappers
        return True


def decompressed_chunks(f: BinaryIO, fmt: str, name: str,
                        on_raw: Callable[[bytes], None] | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield ``(archive bytes read so far, decompressed chunk)``, chunks of about CHUNK_SIZE.

    Output is bounded per call (``max_length``/``read(n)``) so a bomb never materialises in memory.
    """
    codec = fmt.rpartition(".")[2] if fmt != "tar" else "tar"
    tee = _Tee(f, on_raw)
    try:
        if codec == "tar":
            while chunk := tee.read(CHUNK_SIZE):
                yield tee.pos, chunk
        elif codec == "gz":
            yield from _gunzip(tee)
        elif codec == "zst":
            yield from _unzstd(tee)
        else:
            reader = _codec_reader(codec, tee)
            while chunk := reader.read(CHUNK_SIZE):
                yield tee.pos, chunk
    except ExtractError:
        raise
    except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
        raise corrupt(name, fmt, exc) from None
    except Exception as exc:  # zstandard.ZstdError is not importable without zstandard
        if type(exc).__module__.startswith("zstandard"):
            raise corrupt(name, fmt, exc) from None
        raise


def _codec_reader(codec: str, tee: _Tee):
    if codec == "bz2":
        return bz2.BZ2File(tee)  # handles multi-stream files
    return lzma.LZMAFile(tee)


# zstandard's stream readers end silently on a truncated frame, so frames go through decompressobj
# (which has ``eof``) in small slices: it has no max_length, and one zstd byte can expand ~32000x.
_ZSTD_SLICE = 2048


def _unzstd(tee: _Tee) -> Iterator[tuple[int, bytes]]:
    try:
        import zstandard
    except ImportError:
        raise ExtractError("zstd archives need the zstandard package: pip install zstandard") from None
    dctx = zstandard.ZstdDecompressor()
    d = dctx.decompressobj()
    out: list[bytes] = []
    size = 0
    started = False
    while raw := tee.read(READ_SIZE):
        view = memoryview(raw)
        for i in range(0, len(view), _ZSTD_SLICE):
            piece = view[i:i + _ZSTD_SLICE]
            while piece:
                if d.eof:  # the next frame of a multi-frame file
                    d = dctx.decompressobj()
                started = True
                data = d.decompress(piece)
                piece = d.unused_data if d.eof else b""
                if data:
                    out.append(data)
                    size += len(data)
            if size >= CHUNK_SIZE:
                yield tee.pos, b"".join(out)
                out, size = [], 0
    if out:
        yield tee.pos, b"".join(out)
    if not started or not d.eof:
        raise EOFError("the zstd stream ends before its frame does")


def _gunzip(tee: _Tee) -> Iterator[tuple[int, bytes]]:
    """Gzip through zlib directly (3.11's GzipFile reads 8 KiB at a time); multi-member aware."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip wrapper: zlib checks CRC32 and length
    started = False
    while raw := tee.read(READ_SIZE):
        while raw:
            if d.eof:  # another gzip member follows (cat a.gz b.gz is valid gzip)
                if not raw.strip(b"\0"):  # zero padding after the last member, as gzip -d allows
                    break
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            started = True
            while True:
                out = d.decompress(raw, CHUNK_SIZE)
                if out:
                    yield tee.pos, out
                raw = d.unconsumed_tail
                if d.eof:
                    raw = d.unused_data
                    break
                if not raw and len(out) < CHUNK_SIZE:
                    break
    while started and not d.eof:  # output still held back by max_length
        out = d.decompress(b"", CHUNK_SIZE)
        if not out:
            break
        yield tee.pos, out
    if not started or not d.eof:
        raise EOFError("the gzip stream ends before its end marker")
