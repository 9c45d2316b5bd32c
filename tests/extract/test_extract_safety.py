"""Malicious archives are refused, name the offending member, and write nothing outside the target.

Every archive sits in ``sandbox`` with a sentinel file beside it; after a refusal the sandbox must
hold exactly the archive, the sentinel (unchanged) and our lock file: no target, no temp folder,
nothing escaped.
"""

from __future__ import annotations

import gzip
import io
import shutil
import stat
import subprocess
import tarfile
import zipfile

import pytest

from resumable.errors import ArchiveTooLargeError, UnsafeArchiveError
from resumable.extract import extract

from extract_archives import file_member, leftovers, link_member, tar_bytes, write, zip_symlink_info

SENTINEL = b"do not touch\n"


def zip_bytes(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


def zip_info(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def device(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info


# (id, archive suffix, builder(sandbox) -> bytes, member named in the error)
CASES = [
    ("tar-traversal", "tar", lambda box: tar_bytes([file_member("../escaped.txt", b"x")]), "../escaped.txt"),
    ("tar-nested-traversal", "tar.gz",
     lambda box: gzip.compress(tar_bytes([file_member("ok.txt", b"fine"),
                                          file_member("sub/../../escaped.txt", b"x")])), "sub/../../escaped.txt"),
    ("tar-absolute", "tar", lambda box: tar_bytes([file_member(str(box / "escaped.txt"), b"x")]), "escaped.txt"),
    ("tar-symlink-escape", "tar",
     lambda box: tar_bytes([link_member("up", ".."), file_member("up/escaped.txt", b"x")]), "up"),
    ("tar-symlink-absolute", "tar",
     lambda box: tar_bytes([link_member("abs", str(box)), file_member("abs/escaped.txt", b"x")]), "abs"),
    ("tar-hardlink-escape", "tar",
     lambda box: tar_bytes([link_member("hl", "../sentinel.txt", tarfile.LNKTYPE),
                            file_member("hl", b"overwritten")]), "hl"),
    ("tar-hardlink-absolute", "tar",
     lambda box: tar_bytes([link_member("hl", str(box / "sentinel.txt"), tarfile.LNKTYPE)]), "hl"),
    ("tar-char-device", "tar", lambda box: tar_bytes([device("null", tarfile.CHRTYPE)]), "null"),
    ("tar-block-device", "tar", lambda box: tar_bytes([device("disk", tarfile.BLKTYPE)]), "disk"),
    ("tar-fifo", "tar", lambda box: tar_bytes([device("pipe", tarfile.FIFOTYPE)]), "pipe"),
    # Each symlink looks inside on its own; together 'a' resolves through 'x' (= '.') to ../escaped.txt
    # (the shape of the 3.11 data-filter bypasses): refused because a symlink path passes a symlink.
    ("tar-symlink-chain", "tar",
     lambda box: tar_bytes([link_member("a", "x/y/../../escaped.txt"), link_member("x", ".")]), "a"),
    ("tar-write-through-symlink", "tar",
     lambda box: tar_bytes([link_member("x", "."), link_member("a", "x/y/../../escaped.txt"),
                            file_member("a", b"x")]), "a"),
    # Inside, so tarfile's filter allows it; refused anyway: nothing is ever written through a symlink.
    ("tar-write-through-inner-symlink", "tar",
     lambda box: tar_bytes([file_member("sub/keep", b"k"), link_member("d", "sub"), file_member("d/f", b"x")]), "d/f"),
    ("zip-symlink-chain", "zip",
     lambda box: zip_bytes([(zip_symlink_info("a"), b"x/y/../../escaped.txt"), (zip_symlink_info("x"), b".")]), "a"),
    ("zip-traversal", "zip", lambda box: zip_bytes([("../escaped.txt", b"x")]), "../escaped.txt"),
    ("zip-absolute", "zip", lambda box: zip_bytes([(str(box / "escaped.txt"), b"x")]), "escaped.txt"),
    ("zip-symlink-escape", "zip",
     lambda box: zip_bytes([(zip_symlink_info("up"), b".."), ("up/escaped.txt", b"x")]), "up"),
    ("zip-symlink-absolute", "zip",
     lambda box: zip_bytes([(zip_symlink_info("abs"), str(box).encode()), ("abs/escaped.txt", b"x")]), "abs"),
    ("zip-char-device", "zip", lambda box: zip_bytes([(zip_info("null", stat.S_IFCHR | 0o666), b"")]), "null"),
    ("zip-fifo", "zip", lambda box: zip_bytes([(zip_info("pipe", stat.S_IFIFO | 0o666), b"")]), "pipe"),
]


@pytest.mark.parametrize("suffix,builder,member", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malicious_archive_is_refused(sandbox, suffix, builder, member):
    sentinel = write(sandbox / "sentinel.txt", SENTINEL)
    archive = write(sandbox / f"evil.{suffix}", builder(sandbox))
    with pytest.raises(UnsafeArchiveError) as err:
        extract(archive, sandbox / "target", progress=False)
    message = str(err.value)
    assert "\n" not in message and "evil." in message and member in message
    assert sentinel.read_bytes() == SENTINEL
    assert leftovers(sandbox, "evil." + suffix, "sentinel.txt") == set()


def test_high_mode_bits_and_group_write_are_stripped(sandbox):
    archive = write(sandbox / "modes.tar", tar_bytes([file_member("suid", b"x", 0o6777),
                                                       file_member("plain", b"x", 0o666)]))
    extract(archive, sandbox / "target", progress=False)
    assert (sandbox / "target" / "suid").stat().st_mode & 0o7777 == 0o755
    assert (sandbox / "target" / "plain").stat().st_mode & 0o7777 == 0o644


def test_zip_high_mode_bits_are_stripped(sandbox):
    archive = write(sandbox / "modes.zip", zip_bytes([(zip_info("suid", stat.S_IFREG | 0o6777), b"x"),
                                                       (zip_info("ro", stat.S_IFREG | 0o444), b"x")]))
    extract(archive, sandbox / "target", progress=False)
    assert (sandbox / "target" / "suid").stat().st_mode & 0o7777 == 0o755
    assert (sandbox / "target" / "ro").stat().st_mode & 0o7777 == 0o644  # owner read+write, as tar's filter


ZEROS = b"\0" * (20 << 20)  # 20 MiB that compress ~1000x: past the default ratio of 200


def zip_bomb() -> bytes:
    return zip_bytes([(f"zeros{i}.bin", ZEROS) for i in range(2)])


BOMBS = [
    ("zip-bomb", "zip", zip_bomb, {}),
    ("tar-gz-bomb", "tar.gz", lambda: gzip.compress(tar_bytes([file_member("zeros.bin", ZEROS)]), 1), {}),
    ("gz-bomb", "gz", lambda: gzip.compress(ZEROS, 1), {}),
    ("over-max-total-size", "tar.gz",
     lambda: gzip.compress(tar_bytes([file_member("zeros.bin", ZEROS)]), 1), {"max_total_size": 1 << 20}),
    ("zip-over-max-total-size", "zip", zip_bomb, {"max_ratio": 1e6, "max_total_size": 30 << 20}),
]


@pytest.mark.parametrize("suffix,builder,limits", [b[1:] for b in BOMBS], ids=[b[0] for b in BOMBS])
def test_bomb_is_stopped(sandbox, suffix, builder, limits):
    archive = write(sandbox / f"bomb.{suffix}", builder())
    with pytest.raises(ArchiveTooLargeError, match="decompression bomb") as err:
        extract(archive, sandbox / "target", progress=False, **limits)
    assert "\n" not in str(err.value) and "bomb." in str(err.value)
    assert "max_total_size" in str(err.value) if "max_total_size" in limits else "max_ratio" in str(err.value)
    assert leftovers(sandbox, f"bomb.{suffix}") == set()


def test_raising_the_ratio_lets_a_trusted_archive_through(sandbox):
    archive = write(sandbox / "zeros.gz", gzip.compress(ZEROS, 1))
    result = extract(archive, sandbox / "target", progress=False, max_ratio=1e6)
    assert result.bytes == len(ZEROS)


def test_a_lying_tar_header_is_not_trusted(sandbox):
    """The streamed byte count stops a bomb whose headers are small: sizes come from the data."""
    members = [file_member(f"z{i}.bin", b"\0" * (4 << 20)) for i in range(8)]
    archive = write(sandbox / "many.tar.gz", gzip.compress(tar_bytes(members), 1))
    with pytest.raises(ArchiveTooLargeError, match="decompression bomb"):
        extract(archive, sandbox / "target", progress=False, max_total_size=10 << 20, max_ratio=1e6)
    assert leftovers(sandbox, "many.tar.gz") == set()


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar to write a sparse member")
def test_sparse_member_bomb_is_stopped_by_its_declared_size(sandbox):
    """A sparse member of 2 GiB is ~100 bytes of archive: its declared size is what stops it."""
    img = sandbox / "big.img"
    with open(img, "wb") as f:
        f.truncate(2 << 30)
    subprocess.run(["tar", "--sparse", "-czf", "sparse.tar.gz", "big.img"], cwd=sandbox, check=True)
    img.unlink()
    with pytest.raises(ArchiveTooLargeError, match="member 'big.img' takes the declared size past max_ratio"):
        extract(sandbox / "sparse.tar.gz", sandbox / "target", progress=False)
    assert leftovers(sandbox, "sparse.tar.gz") == set()
