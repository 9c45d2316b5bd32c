"""Where a dataset's archives extract (train_pipeline.config.registry.extract_target): every archive its own
folder, whatever their names share, and an archive's own folder is not nested twice."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import pytest

from resumable.extract import extract
from train_pipeline.config import ConfigError
from train_pipeline.config.registry import archive_folders, custom_dataset, download_path, extract_target, extract_unwrap

from extract_archives import file_member, tar_bytes, write


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def archive_bytes(filename: str, files: dict[str, bytes]) -> bytes:
    if filename.endswith(".zip"):
        return zip_bytes(files)
    return gzip.compress(tar_bytes([file_member(n, d) for n, d in files.items()]), 1)


def tree(folder: Path) -> dict[str, bytes]:
    """The files under ``folder``, without our records and locks (.<target>.extract.*)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and ".extract." not in p.name}


def download_and_extract(data: Path, ds, contents: dict[str, dict[str, bytes]]) -> dict[str, tuple[Path, str]]:
    """What `datasets download` and the flow do once the files are on disk: each archive into its
    target. Returns {file name: (target, status)}."""
    out = {}
    for f in ds.files:
        path = download_path(data, ds, f)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path, archive_bytes(f.filename, contents[f.filename]))
        target = extract_target(data, ds, f)
        if target is not None:
            out[f.filename] = (target, extract(path, target, unwrap=extract_unwrap(ds, f), progress=False).status)
    return out


def test_archives_sharing_a_stem_extract_to_distinct_targets_and_stay_cached(tmp_path):
    names = ["a.tar.gz", "a.zip", "a.v2.zip"]
    ds = custom_dataset([f"https://h.example/files/{n}" for n in names])
    contents = {n: {"which.txt": n.encode(), f"only-in-{n}/x": b"x"} for n in names}
    data = tmp_path / "data"
    first = download_and_extract(data, ds, contents)
    targets = [first[n][0] for n in names]
    assert len(set(targets)) == 3, targets
    assert [t.relative_to(data).as_posix() for t in targets] == ["custom/a.tar.gz", "custom/a.zip", "custom/a.v2"]
    assert {first[n][1] for n in names} == {"extracted"}
    for n in names:
        assert tree(first[n][0]) == contents[n]
    second = download_and_extract(data, ds, contents)
    assert {n: status for n, (_, status) in second.items()} == dict.fromkeys(names, "cached")
    for n in names:
        assert tree(second[n][0]) == contents[n]


@pytest.mark.parametrize("names, folders", [
    (["a.tar.gz", "notes.txt"], None),  # one archive: extract_to itself
    (["a.tar.gz", "b.zip"], {"a.tar.gz": "a", "b.zip": "b"}),
    (["a.tar.gz", "a.zip", "a.v2.zip"], {"a.tar.gz": "a.tar.gz", "a.zip": "a.zip", "a.v2.zip": "a.v2"}),
    (["a.zip", "a.zip.tar"], {"a.zip": "a", "a.zip.tar": "a.zip"}),
    (["a.tar", "a.zip", "a.zip.tar"], {"a.tar": "a.tar", "a.zip": "a.zip", "a.zip.tar": "a.zip.tar"}),
    (["x.TAR.GZ", "y.tgz", "z.tar.zst"], {"x.TAR.GZ": "x", "y.tgz": "y", "z.tar.zst": "z"}),
    ([".hidden.zip", "hidden.zip", "..zip"], {".hidden.zip": "_.hidden", "hidden.zip": "hidden", "..zip": "_."}),
])
def test_the_target_rule(names, folders):
    for order in (names, names[::-1]):  # the file list decides, not its order
        ds = custom_dataset([f"https://h.example/{n}" for n in order])
        got = {f.filename: extract_target(Path("/d"), ds, f) for f in ds.files}
        if folders is None:
            assert got == {"a.tar.gz": Path("/d/custom"), "notes.txt": None}
        else:
            assert got == {n: Path("/d/custom") / folder for n, folder in folders.items()}


def test_names_no_folder_can_tell_apart_are_one_line_config_errors():
    ds = custom_dataset(["https://h.example/.x.zip", "https://h.example/_.x.zip", "https://h.example/_.x.tar"])
    with pytest.raises(ConfigError, match=r"'\.x\.zip' and '_\.x\.zip' would extract into one folder.*'name'"):
        archive_folders(ds)


def test_custom_archives_with_their_own_folder_nest_once(tmp_path):
    """`datasets download custom --urls .../a.tar.gz .../b.zip .../second.tar.gz`: each archive gets
    its own folder; one holding just a folder of that name (a/, b/) is not nested twice."""
    from train_pipeline.training.data_settings import DataConfig
    from train_pipeline.training.formats.detect import detect

    meta = b'{"file_name": "x.png", "text": "t"}\n'
    contents = {"a.tar.gz": {"a/metadata.jsonl": meta, "a/x.png": b"png"},
                "b.zip": {"b/metadata.jsonl": meta, "b/x.png": b"png"},
                "second.tar.gz": {"billboards/metadata.jsonl": meta}}  # a folder of another name stays
    ds = custom_dataset([f"https://h.example/{n}" for n in contents])
    data = tmp_path / "data"
    download_and_extract(data, ds, contents)
    custom = data / "custom"
    assert tree(custom) == {"a/metadata.jsonl": meta, "a/x.png": b"png", "b/metadata.jsonl": meta,
                            "b/x.png": b"png", "second/billboards/metadata.jsonl": meta}
    settings = DataConfig().dataset_settings("custom")  # training finds each archive's metadata, nested or not
    assert detect(custom / "a", settings, "custom").files == [custom / "a" / "metadata.jsonl"]
    assert detect(custom / "second", settings, "custom").files == [custom / "second" / "billboards" / "metadata.jsonl"]
    assert set(s for _, s in download_and_extract(data, ds, contents).values()) == {"cached"}
