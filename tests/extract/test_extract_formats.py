"""Each format round-trips; detection goes by content; bad input names the file."""

from __future__ import annotations

import gzip
import os

import pytest

from resumable.errors import CorruptArchiveError, ExtractError, UsageError
from resumable.extract import FORMATS, detect_format, extract

from extract_archives import SAMPLE, assert_sample_tree, build, write

SINGLE = ("gz", "bz2", "xz", "zst")


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(sandbox, fmt):
    archive = write(sandbox / f"sample.{fmt}", build(fmt))
    assert detect_format(archive) == fmt
    result = extract(archive, sandbox / "out", progress=False)
    assert (result.status, result.format) == ("extracted", fmt)
    assert result.archive_digest.startswith("sha256:")
    if fmt in SINGLE:
        assert [p.name for p in (sandbox / "out").iterdir()] == ["sample"]
        assert (sandbox / "out" / "sample").read_bytes() == SAMPLE["data/nested/deep/values.csv"][0]
        assert (result.files, result.bytes) == (1, len(SAMPLE["data/nested/deep/values.csv"][0]))
    else:
        assert_sample_tree(sandbox / "out")
        assert result.files == len(SAMPLE) + 1  # files plus the symlink
        assert result.bytes == sum(len(d) for d, _ in SAMPLE.values())


def test_digest_is_the_archive_sha256(sandbox):
    from resumable.hashes import file_digest

    for fmt in ("tar.gz", "zip", "tar"):
        archive = write(sandbox / f"a.{fmt}", build(fmt) + (b"\0" * 4096 if fmt == "tar" else b""))
        result = extract(archive, sandbox / f"out-{fmt}", progress=False)
        assert result.archive_digest == f"sha256:{file_digest(archive)}"


def test_format_comes_from_content_not_name(sandbox):
    archive = write(sandbox / "download.bin", build("tar.xz"))
    assert detect_format(archive) == "tar.xz"
    assert_sample_tree(extract(archive, sandbox / "out", progress=False).target)


def test_single_file_keeps_name_without_the_suffix(sandbox):
    archive = write(sandbox / "train.jsonl.gz", gzip.compress(b'{"a": 1}\n'))
    extract(archive, sandbox / "out", progress=False)
    assert (sandbox / "out" / "train.jsonl").read_bytes() == b'{"a": 1}\n'


def test_multi_member_gzip(sandbox):
    archive = write(sandbox / "joined.gz", gzip.compress(b"first\n") + gzip.compress(b"second\n"))
    extract(archive, sandbox / "out", progress=False)
    assert (sandbox / "out" / "joined").read_bytes() == b"first\nsecond\n"


def test_progress_callback_reaches_the_archive_size(sandbox):
    archive = write(sandbox / "a.tar.gz", build("tar.gz"))
    seen = []
    extract(archive, sandbox / "out", progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (archive.stat().st_size, archive.stat().st_size)


@pytest.mark.parametrize("content", [b"just some text, not an archive\n" * 40, os.urandom(2048)], ids=["text", "random"])
def test_unsupported_file_names_the_file(sandbox, content):
    archive = write(sandbox / "mystery.tar.gz", content)
    with pytest.raises(ExtractError, match="mystery.tar.gz: not a supported archive"):
        extract(archive, sandbox / "out", progress=False)
    assert not (sandbox / "out").exists()


def test_empty_file(sandbox):
    with pytest.raises(CorruptArchiveError, match="empty.zip: the archive is an empty file"):
        extract(write(sandbox / "empty.zip", b""), sandbox / "out", progress=False)


@pytest.mark.parametrize("fmt", ["tar.gz", "tar.bz2", "tar.xz", "tar.zst", "gz", "zip"])
def test_truncated_archive_is_a_clear_error(sandbox, fmt):
    data = build(fmt)
    archive = write(sandbox / f"cut.{fmt}", data[: int(len(data) * 0.6)])
    with pytest.raises(CorruptArchiveError, match=r"cut\..*corrupt or truncated") as err:
        extract(archive, sandbox / "out", progress=False)
    assert "download it again" in str(err.value) and "\n" not in str(err.value)
    assert not (sandbox / "out").exists()
    assert not list(sandbox.glob(".out.extracting-*"))


def test_corrupt_member_data_in_zip(sandbox):
    data = bytearray(build("zip"))
    start = data.index(b"a,b") if b"a,b" in data else len(data) // 3  # stored data or mid-stream
    data[start + 10: start + 20] = b"\xff" * 10
    archive = write(sandbox / "bad.zip", bytes(data))
    with pytest.raises(CorruptArchiveError, match="bad.zip.*corrupt or truncated"):
        extract(archive, sandbox / "out", progress=False)
    assert not (sandbox / "out").exists()


def test_missing_archive_is_a_usage_error(sandbox):
    with pytest.raises(UsageError, match="nope.zip.*no such file"):
        extract(sandbox / "nope.zip", sandbox / "out")


def test_tar_hard_links_are_kept(sandbox):
    from extract_archives import file_member, link_member, tar_bytes

    archive = write(sandbox / "links.tar", tar_bytes([file_member("dir/a.bin", b"payload"),
                                                       link_member("b.bin", "dir/a.bin", b"1")]))  # LNKTYPE
    result = extract(archive, sandbox / "out", progress=False)
    a, b = sandbox / "out" / "dir" / "a.bin", sandbox / "out" / "b.bin"
    assert b.read_bytes() == b"payload" and a.stat().st_ino == b.stat().st_ino
    assert result.files == 2


def test_zip_made_on_windows_uses_backslash_folders(sandbox):
    import io
    import zipfile

    from resumable.errors import UnsafeArchiveError

    def dos_zip(name: str) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            info = zipfile.ZipInfo(name)
            info.create_system = 0
            zf.writestr(info, b"dos")
        return buf.getvalue()

    extract(write(sandbox / "win.zip", dos_zip("dir\\file.txt")), sandbox / "out", progress=False)
    assert (sandbox / "out" / "dir" / "file.txt").read_bytes() == b"dos"
    with pytest.raises(UnsafeArchiveError, match=r"'\.\./evil\.txt' climbs out"):
        extract(write(sandbox / "evil.zip", dos_zip("..\\evil.txt")), sandbox / "out2", progress=False)
    assert not (sandbox / "evil.txt").exists()
