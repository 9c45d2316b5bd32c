"""resumable.hub.snapshot against the Hub-compatible server: verified files, cache hits, offline,
repair, token hygiene, rate limits, concurrency and the errors users hit."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest

from resumable.hub import MANIFEST, SnapshotError, snapshot, snapshot_is_complete

FILES = ["README.md", "config.json", "model.safetensors", "sub/notes.txt"]


def same_files(got: Path, want: Path, names=FILES) -> bool:
    return all(filecmp.cmp(got / n, want / n, shallow=False) for n in names)


def metadata(hub, since: int = 0) -> list:
    return [r for r in hub.settle()[since:] if r.path.startswith("/api/")]


def test_snapshot_downloads_every_file_verified_with_manifest(hub, repos_root, tmp_path):
    result = snapshot("org/tiny", dest_root=tmp_path, endpoint=hub.endpoint, progress=False)
    commit = hub.repo("org/tiny").commit
    assert (result.commit, result.status, result.files) == (commit, "downloaded", 4)
    assert result.path == tmp_path / "org--tiny" / commit
    assert result.bytes_transferred == result.bytes_total == sum((repos_root / "org/tiny" / n).stat().st_size for n in FILES)
    assert same_files(result.path, repos_root / "org" / "tiny")
    assert (tmp_path / "org--tiny" / "refs" / "main").read_text() == commit
    manifest = json.loads((result.path / MANIFEST).read_text())
    assert manifest["repo_id"] == "org/tiny" and manifest["revision"] == "main" and manifest["commit"] == commit
    assert sorted(manifest["files"]) == FILES
    assert manifest["tree"]["model.safetensors"]["sha256"] and manifest["tree"]["config.json"]["blob"]
    assert snapshot_is_complete(result.path)


def test_second_run_is_one_metadata_request_and_zero_bytes(hub, tmp_path):
    first = snapshot("org/tiny", dest_root=tmp_path, endpoint=hub.endpoint, progress=False)
    mark = len(hub.settle())
    again = snapshot("org/tiny", dest_root=tmp_path, endpoint=hub.endpoint, progress=False)
    assert (again.status, again.bytes_transferred, again.path) == ("cached", 0, first.path)
    assert [r.path for r in hub.settle()[mark:]] == ["/api/models/org/tiny/revision/main"]
    mark = len(hub.log)
    by_sha = snapshot("org/tiny", revision=first.commit, dest_root=tmp_path, endpoint=hub.endpoint, progress=False)
    assert (by_sha.status, by_sha.bytes_transferred, by_sha.path) == ("cached", 0, first.path)
    assert hub.settle()[mark:] == []  # a commit sha needs no request at all


def test_offline_works_from_the_manifest_alone(hub, tmp_path, monkeypatch):
    first = snapshot("org/tiny", revision="v1.0", dest_root=tmp_path, endpoint=hub.endpoint, progress=False)
    mark = len(hub.settle())
    flag = snapshot("org/tiny", revision="v1.0", dest_root=tmp_path, offline=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    env = snapshot("org/tiny", revision="v1.0", dest_root=tmp_path, include="*.json")
    assert flag.path == env.path == first.path and flag.status == env.status == "cached"
    assert env.files == 1 and hub.settle()[mark:] == []


def test_offline_incomplete_snapshot_lists_what_is_missing(hub, tmp_path):
    with pytest.raises(SnapshotError, match="no snapshot .* run once online") as err:
        snapshot("org/tiny", dest_root=tmp_path, offline=True)
    assert err.value.reason == "offline"
    first = snapshot("org/tiny", dest_root=tmp_path, endpoint=hub.endpoint, progress=False)
    (first.path / "sub" / "notes.txt").unlink()
    assert not snapshot_is_complete(first.path)
    with pytest.raises(SnapshotError, match=r"missing or damaged 1 file\(s\): sub/notes.txt") as err:
        snapshot("org/tiny", dest_root=tmp_path, offline=True)
    assert "\n" not in str(err.value)
    # online, the missing file alone comes back
    mark = len(hub.settle())
    again = snapshot("org/tiny", dest_root=tmp_path, endpoint=hub.endpoint, progress=False)
    assert again.status == "downloaded" and snapshot_is_complete(again.path)
    assert [r.path.rsplit("/", 1)[-1] for r in hub.settle()[mark:] if "/resolve/" in r.path] == ["notes.txt"]


def test_offline_notices_a_damaged_file(hub, tmp_path):
    first = snapshot("org/tiny", dest_root=tmp_path, endpoint=hub.endpoint, progress=False)
    path = first.path / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[7] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match=r"damaged 1 file\(s\): model.safetensors"):
        snapshot("org/tiny", dest_root=tmp_path, offline=True)


def test_endpoint_from_hf_endpoint_and_dataset_repos(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)  # read at call time, unlike huggingface_hub's constant
    result = snapshot("org/tinyset", repo_type="dataset", dest_root=tmp_path, progress=False)
    assert result.path == tmp_path / "datasets--org--tinyset" / hub.repo("org/tinyset", "dataset").commit
    assert (result.path / "train.jsonl").read_text() == '{"x": 1}\n'


def test_corrupted_files_on_disk_are_fetched_again(hub, repos_root, tmp_path):
    first = snapshot("org/tiny", dest_root=tmp_path, endpoint=hub.endpoint, progress=False)
    for name in ("model.safetensors", "config.json"):  # same size, different bytes: LFS and plain git file
        path = first.path / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    mark = len(hub.settle())
    again = snapshot("org/tiny", dest_root=tmp_path, endpoint=hub.endpoint, progress=False)
    assert same_files(again.path, repos_root / "org" / "tiny")
    fetched = sorted(r.path.rsplit("/", 1)[-1] for r in hub.settle()[mark:] if "/resolve/" in r.path and r.method == "GET")
    assert fetched == ["config.json", "model.safetensors"] and again.status == "downloaded"


@pytest.mark.slow
def test_dropped_connection_is_resumed_within_the_run(hub, repos_root, tmp_path):
    hub.cut_after = 1024 * 1024
    result = snapshot("org/tiny", dest_root=tmp_path, endpoint=hub.endpoint, include="*.safetensors", progress=False)
    assert same_files(result.path, repos_root / "org" / "tiny", ["model.safetensors"])
    gets = [r for r in hub.settle() if r.path.endswith("model.safetensors")]
    assert [r.range for r in gets] == [None, f"bytes={1024 * 1024}-"] and gets[-1].status == 206


@pytest.mark.slow
def test_signed_cdn_url_expired_between_retries_is_resolved_again(repos_root, tmp_path):
    """The CDN cuts the body, and the signed URL it was fetched with dies at that moment (not after
    some seconds of a clock): the retry must go back to the Hub for a fresh one. An engine that
    retried the URL it had been redirected to would get 403 and fail."""
    import urllib.error
    import urllib.request

    from hub_faults import FaultyHub

    with FaultyHub(repos_root, cdn=True) as hub:
        hub.cut_after, hub.expire_on_cut = 1024 * 1024, True
        result = snapshot("org/tiny", dest_root=tmp_path, endpoint=hub.endpoint, include="*.safetensors",
                          progress=False)
        log = [r for r in hub.settle() if r.path.endswith("model.safetensors")]
        with pytest.raises(urllib.error.HTTPError, match="403"):  # the URL of the cut body is dead indeed
            urllib.request.urlopen(f"{hub.cdn_endpoint}{log[1].path}?{log[1].query}", timeout=30)
    assert same_files(result.path, repos_root / "org" / "tiny", ["model.safetensors"])
    # one Hub resolve per CDN request: every attempt asked the Hub for a URL first
    assert [(r.server, r.status) for r in log] == [("hub", 302), ("cdn", 200), ("hub", 302), ("cdn", 206)]
    assert log[1].query != log[3].query and log[3].range == f"bytes={1024 * 1024}-"


def test_server_bytes_that_never_match_the_listing_are_a_clear_error(hub, tmp_path):
    from resumable.errors import IntegrityError

    hub.corrupt_at = 3  # every copy of config.json differs from its git blob sha1
    with pytest.raises(IntegrityError, match="config.json .* git blob sha1") as err:
        snapshot("org/tiny", dest_root=tmp_path, endpoint=hub.endpoint, include="config.json", progress=False)
    assert "\n" not in str(err.value)
    assert len([r for r in hub.settle() if r.path.endswith("config.json")]) == 2  # fetched again once, then the error
    hub.corrupt_at = None
    result = snapshot("org/tiny", dest_root=tmp_path, endpoint=hub.endpoint, include="config.json", progress=False)
    assert result.status == "downloaded" and snapshot_is_complete(result.path)


def test_include_exclude_then_the_rest_without_listing_again(hub, tmp_path):
    part = snapshot("org/tiny", dest_root=tmp_path, endpoint=hub.endpoint, include=["*.json", "sub/*"],
                    exclude="*.md", progress=False)
    assert part.files == 2 and snapshot_is_complete(part.path)
    assert sorted(p.relative_to(part.path).as_posix() for p in part.path.rglob("*") if p.is_file()
                  and ".resumable" not in p.parts and p.name != MANIFEST) == ["config.json", "sub/notes.txt"]
    mark = len(hub.settle())
    rest = snapshot("org/tiny", dest_root=tmp_path, endpoint=hub.endpoint, progress=False)
    assert rest.files == 4 and rest.bytes_transferred == rest.bytes_total - part.bytes_total
    assert [r.path for r in metadata(hub, mark)] == ["/api/models/org/tiny/revision/main"]  # tree from the manifest
    assert sorted(json.loads((rest.path / MANIFEST).read_text())["files"]) == FILES


def test_concurrent_runs_share_the_folder_and_the_manifest(hub, repos_root, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    filters = [["*.json", "*.md"], ["*.safetensors", "sub/*"], None, None]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda inc: snapshot("org/tiny", dest_root=tmp_path, endpoint=hub.endpoint,
                                                     include=inc, progress=False), filters))
    assert len({r.path for r in results}) == 1 and same_files(results[0].path, repos_root / "org" / "tiny")
    assert sorted(json.loads((results[0].path / MANIFEST).read_text())["files"]) == FILES


def test_new_commit_downloads_only_the_changed_files(tmp_path, make_repos):
    from offline.hub_server import HubServer

    root = make_repos(tmp_path / "repos", large_size=200_000)
    with HubServer(root) as hub:
        old = snapshot("org/tiny", dest_root=tmp_path / "cache", endpoint=hub.endpoint, progress=False)
        (root / "org/tiny/README.md").write_text("# tiny, edited\n")  # a new commit on main
        mark = len(hub.settle())
        new = snapshot("org/tiny", dest_root=tmp_path / "cache", endpoint=hub.endpoint, progress=False)
        fetched = [r.path.rsplit("/", 1)[-1] for r in hub.settle()[mark:] if "/resolve/" in r.path]
    assert new.commit != old.commit and new.path != old.path
    assert fetched == ["README.md"] and new.bytes_transferred == len("# tiny, edited\n")
    assert same_files(new.path, root / "org" / "tiny") and snapshot_is_complete(old.path)
    assert (new.path / "model.safetensors").stat().st_ino == (old.path / "model.safetensors").stat().st_ino


def test_token_goes_to_the_hub_only_never_to_the_cdn(cdn_hub, repos_root, tmp_path):
    result = snapshot("org/tiny", dest_root=tmp_path, endpoint=cdn_hub.endpoint, token="hf_good", progress=False)
    assert same_files(result.path, repos_root / "org" / "tiny")
    log = cdn_hub.settle()
    cdn = [r for r in log if r.server == "cdn"]
    assert [r.path.rsplit("/", 1)[-1] for r in cdn] == ["model.safetensors"]
    assert all(not r.authorization for r in cdn)
    assert all(r.authorization for r in log if r.server == "hub")


def test_private_repo_with_token(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_good")  # read at call time
    result = snapshot("org/private", dest_root=tmp_path, endpoint=hub.endpoint, progress=False)
    assert result.files == 1 and snapshot_is_complete(result.path)


@pytest.mark.slow
def test_rate_limited_metadata_waits_what_the_hub_asks(hub, tmp_path):
    # 429 with Retry-After: 3 and RateLimit t=3; our own backoff would come back after 1-2 s
    hub.rate_limit, hub.retry_after = 1, 3
    result = snapshot("org/tiny", dest_root=tmp_path, endpoint=hub.endpoint, progress=False, include="*.json")
    api = metadata(hub)
    assert [(r.path.split("/")[-2], r.status) for r in api[:2]] == [("revision", 429), ("revision", 200)]
    assert api[1].started - api[0].started >= 3 - 0.05  # as the server saw it: asked again after 3 s
    assert result.files == 1 and snapshot_is_complete(result.path)


@pytest.mark.slow
def test_rate_limited_file_waits_what_the_hub_asks(hub, repos_root, tmp_path):
    first = snapshot("org/tiny", dest_root=tmp_path, endpoint=hub.endpoint, progress=False, include="*.json")
    hub.rate_limit, hub.retry_after = 1, 3  # now the file request gets 429: the transfer engine waits
    mark = len(hub.settle())
    result = snapshot("org/tiny", revision=first.commit, dest_root=tmp_path, endpoint=hub.endpoint,
                      include="README.md", progress=False)
    log = hub.settle()[mark:]
    assert [(r.path.rsplit("/", 1)[-1], r.status) for r in log] == [("README.md", 429), ("README.md", 200)]
    assert log[1].started - log[0].started >= 3 - 0.05
    assert same_files(result.path, repos_root / "org" / "tiny", ["README.md"])


def test_files_download_concurrently_within_the_bound(big_root, tmp_path):
    from offline.hub_server import HubServer

    def peak(records) -> int:
        spans = [(r.started, r.ended) for r in records if "/resolve/" in r.path]
        return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)

    with HubServer(big_root) as hub:
        hub.slow = 2_000_000.0  # 256 KiB per file takes a while, so overlaps are certain
        snapshot("org/multi", dest_root=tmp_path / "a", endpoint=hub.endpoint, max_workers=4, progress=False)
        assert peak(hub.settle()) >= 2
        mark = len(hub.log)
        snapshot("org/multi", dest_root=tmp_path / "b", endpoint=hub.endpoint, max_workers=1, progress=False)
        assert peak(hub.settle()[mark:]) == 1


def test_progress_callback_reports_the_whole_snapshot(hub, tmp_path):
    seen = []
    result = snapshot("org/tiny", dest_root=tmp_path, endpoint=hub.endpoint, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (result.bytes_total, result.bytes_total)
    assert all(t == result.bytes_total for _, t in seen)


@pytest.mark.parametrize(
    "repo, kwargs, reason, words",
    [
        ("org/missing", {}, "repo", "not found"),
        ("org/tiny", {"revision": "nope"}, "revision", "revision 'nope' not found"),
        ("org/tiny", {"include": "nope.bin"}, "file", "'nope.bin' is not in"),
        ("org/tiny", {"include": "*.nothing"}, "filter", "matches"),
        ("org/private", {}, "repo", "set HF_TOKEN to a token that can read it"),
        ("org/gated", {}, "gated", "accept its terms"),
        ("org/denied", {"token": "hf_good"}, "gated", "accept its terms"),
        ("org/tiny", {"token": "hf_bad"}, "auth", "rejected the token"),
    ],
    ids=["repo", "revision", "file", "filter", "private", "gated", "gated-denied", "bad-token"],
)
def test_errors_are_one_line_and_say_what_to_do(hub, tmp_path, repo, kwargs, reason, words):
    with pytest.raises(SnapshotError) as err:
        snapshot(repo, dest_root=tmp_path, endpoint=hub.endpoint, progress=False, **kwargs)
    assert err.value.reason == reason and words in str(err.value)
    assert "\n" not in str(err.value)


def test_unreachable_endpoint_is_a_one_line_error(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SnapshotError, match="cannot reach") as err:
        snapshot("org/tiny", dest_root=tmp_path, endpoint=f"http://127.0.0.1:{port}", progress=False)
    assert err.value.reason == "network" and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs, words",
    [({"repo_id": "a//b"}, "repo id"), ({"repo_id": "a/b", "max_workers": 0}, "max_workers"),
     ({"repo_id": "a/b", "repo_type": "space"}, "repo type")],
)
def test_bad_arguments_are_usage_errors(tmp_path, kwargs, words):
    with pytest.raises(ValueError, match=words):
        snapshot(dest_root=tmp_path, **kwargs)


@pytest.mark.parametrize(
    "headers, wait",
    [({"RateLimit": '"api";r=0;t=7', "Retry-After": "3"}, 7.0), ({"Retry-After": "5"}, 5.0),
     ({"ratelimit": '"api";r=0;t=99999'}, 120.0)],
    ids=["ratelimit-wins", "retry-after", "capped"],
)
def test_metadata_retry_waits_what_the_server_asks(headers, wait):
    """The rule on its own (the waits above are it, end to end): RateLimit's reset wins over
    Retry-After, and no wait exceeds the cap (which a test through the Hub would sit out)."""
    from types import SimpleNamespace

    from resumable.hub.api import _hub_wait

    exc = SimpleNamespace(response=SimpleNamespace(headers=headers, status_code=429))
    assert _hub_wait(SimpleNamespace(outcome=SimpleNamespace(exception=lambda: exc), attempt_number=1)) == wait
