"""The test Hub is faithful: the real huggingface_hub client downloads from it, and its protocol
details (ranges, errors, redirects, faults) behave like the Hub's."""

from __future__ import annotations

import filecmp
import hashlib
import http.client
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from offline.hub_server import HubServer

FILES = ["README.md", "config.json", "model.safetensors", "sub/notes.txt"]


def request(url: str, method: str = "GET", headers: dict | None = None) -> tuple[int, dict, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def assert_same_files(got: Path, want: Path) -> None:
    for name in FILES:
        assert filecmp.cmp(got / name, want / name, shallow=False), name


@pytest.mark.parametrize("server", ["hub", "cdn_hub"])
def test_real_client_snapshot_download(server, repos_root, tmp_path, request):
    hub = request.getfixturevalue(server)
    cached = Path(snapshot_download("org/tiny", endpoint=hub.endpoint, cache_dir=tmp_path / "cache"))
    assert cached.name == hub.repo("org/tiny").commit
    assert_same_files(cached, repos_root / "org" / "tiny")
    assert not (cached / ".hub.json").exists()  # the server's own config is never served
    local = Path(snapshot_download("org/tiny", endpoint=hub.endpoint, local_dir=tmp_path / "local"))
    assert_same_files(local, repos_root / "org" / "tiny")
    # never a Xet hint, or the real client would leave plain HTTP
    assert all("xet" not in r.path.lower() for r in hub.log)
    if server == "cdn_hub":  # the LFS file came from the CDN port, without the token
        cdn = hub.requests(server="cdn")
        assert cdn and all(not r.authorization for r in cdn)


def test_real_client_tags_branches_commits_datasets_and_paging(hub, repos_root, tmp_path):
    commit = hub.repo("org/tiny").commit
    for rev in ("v1.0", "dev", commit):
        path = Path(snapshot_download("org/tiny", revision=rev, endpoint=hub.endpoint, cache_dir=tmp_path / rev))
        assert path.name == commit
    hub.tree_page_size = 2  # the client follows Link: rel="next"
    files = sorted(f.path for f in HfApi(endpoint=hub.endpoint).list_repo_tree("org/tiny", recursive=True) if hasattr(f, "lfs"))
    assert files == FILES
    data = Path(snapshot_download("org/tinyset", repo_type="dataset", endpoint=hub.endpoint, cache_dir=tmp_path / "d"))
    assert (data / "train.jsonl").read_text() == '{"x": 1}\n'


def test_tree_reports_lfs_sha256_and_git_blob_sha1(hub, repos_root):
    api = HfApi(endpoint=hub.endpoint)
    info = {f.path: f for f in api.list_repo_tree("org/tiny", recursive=True, expand=True) if hasattr(f, "lfs")}
    weights = (repos_root / "org/tiny/model.safetensors").read_bytes()
    assert info["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert info["model.safetensors"].lfs.size == len(weights)
    config = (repos_root / "org/tiny/config.json").read_bytes()
    assert info["config.json"].lfs is None
    assert info["config.json"].blob_id == hashlib.sha1(b"blob %d\0" % len(config) + config).hexdigest()
    paths = api.get_paths_info("org/tiny", ["config.json", "model.safetensors"])
    assert {p.path for p in paths} == {"config.json", "model.safetensors"}


def test_commit_changes_with_content(tmp_path, make_repos):
    root = make_repos(tmp_path / "repos", large_size=1000)
    with HubServer(root) as hub:
        before = hub.repo("org/tiny").commit
        (root / "org/tiny/config.json").write_text("{}")
        after = hub.repo("org/tiny").commit
    assert before != after and len(after) == 40


def test_resolve_head_headers_and_ranges(hub, repos_root):
    url = f"{hub.endpoint}/org/tiny/resolve/main/model.safetensors"
    data = (repos_root / "org/tiny/model.safetensors").read_bytes()
    status, headers, body = request(url, "HEAD")
    assert status == 200 and body == b""
    assert headers["x-repo-commit"] == hub.repo("org/tiny").commit
    assert headers["etag"].strip('"') == hashlib.sha256(data).hexdigest()
    assert int(headers["content-length"]) == len(data) and headers["accept-ranges"] == "bytes"
    assert "x-xet-hash" not in headers
    status, headers, body = request(url, headers={"Range": "bytes=1000-"})
    assert status == 206 and body == data[1000:]
    assert headers["content-range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    status, _, body = request(url, headers={"Range": "bytes=10-19"})
    assert (status, body) == (206, data[10:20])
    status, headers, _ = request(url, headers={"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(data)}"
    # If-Range with a stale validator: the whole, current file
    status, _, body = request(url, headers={"Range": "bytes=5-", "If-Range": '"stale"'})
    assert (status, body) == (200, data)


def test_cdn_redirect_is_absolute_signed_and_expires(cdn_hub, repos_root):
    url = f"{cdn_hub.endpoint}/org/tiny/resolve/main/model.safetensors"
    data = (repos_root / "org/tiny/model.safetensors").read_bytes()
    status, headers, _ = request(url, "HEAD", {"Authorization": "Bearer hf_good"})
    assert status == 302 and headers["location"].startswith(cdn_hub.cdn_endpoint + "/")
    assert int(headers["x-linked-size"]) == len(data)
    assert headers["x-linked-etag"].strip('"') == hashlib.sha256(data).hexdigest()
    assert headers["x-repo-commit"] == cdn_hub.repo("org/tiny").commit
    status, _, body = request(headers["location"], headers={"Range": "bytes=7-"})
    assert (status, body) == (206, data[7:])
    status, _, _ = request(headers["location"].replace("signature=", "signature=0"))
    assert status == 403
    cdn_hub.cdn_ttl = -1  # already expired when handed out
    status, headers, _ = request(url)
    assert status == 302
    status, _, body = request(headers["location"])
    assert status == 403 and b"expired" in body
    # small files are served by the hub itself, like the Hub does for non-LFS files
    status, _, body = request(f"{cdn_hub.endpoint}/org/tiny/resolve/main/config.json")
    assert status == 200 and body == (repos_root / "org/tiny/config.json").read_bytes()


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda api, d: api.repo_info("org/missing"), RepositoryNotFoundError),
        (lambda api, d: api.repo_info("org/tiny", revision="nope"), RevisionNotFoundError),
        (lambda api, d: hf_hub_download("org/tiny", "nope.bin", endpoint=api.endpoint, cache_dir=d), EntryNotFoundError),
        (lambda api, d: api.repo_info("org/private"), RepositoryNotFoundError),
        (lambda api, d: api.repo_info("org/gated"), GatedRepoError),
        (lambda api, d: HfApi(endpoint=api.endpoint, token="hf_good").repo_info("org/denied"), GatedRepoError),
        (lambda api, d: HfApi(endpoint=api.endpoint, token="hf_bad").repo_info("org/tiny"), HfHubHTTPError),
    ],
    ids=["repo", "revision", "entry", "private", "gated-no-token", "gated-denied", "bad-token"],
)
def test_errors_map_to_huggingface_hub_exceptions(hub, tmp_path, call, error):
    with pytest.raises(error):
        call(HfApi(endpoint=hub.endpoint, token=False), tmp_path)


def test_token_opens_private_and_gated(hub):
    api = HfApi(endpoint=hub.endpoint, token="hf_good")
    assert api.repo_info("org/private").sha and api.repo_info("org/gated").sha
    assert hub.log[-1].authorization


def test_fault_cut_after_drops_the_connection_once(hub, repos_root):
    url = f"{hub.endpoint}/org/tiny/resolve/main/model.safetensors"
    hub.cut_after = 1000
    with pytest.raises(http.client.IncompleteRead):
        request(url)
    assert hub.settle()[-1].bytes_sent == 1000
    status, _, body = request(url)  # one-shot: the next answer is whole
    assert status == 200 and len(body) == (repos_root / "org/tiny/model.safetensors").stat().st_size


@pytest.mark.slow
def test_fault_rate_limit_then_real_client_retries_listing(hub):
    hub.rate_limit, hub.retry_after = 1, 0
    status, headers, _ = request(f"{hub.endpoint}/api/models/org/tiny/revision/main")
    assert status == 429 and headers["retry-after"] == "0" and headers["ratelimit"] == '"api";r=0;t=0'
    assert request(f"{hub.endpoint}/api/models/org/tiny/revision/main")[0] == 200
    hub.rate_limit = 1  # huggingface_hub's tree listing backs off on 429 and succeeds
    assert len(list(HfApi(endpoint=hub.endpoint).list_repo_tree("org/tiny", recursive=True))) >= 4


def test_fault_slow_throttles_and_logs_bytes(hub):
    hub.slow = 1_000_000.0
    status, _, body = request(f"{hub.endpoint}/org/tiny/resolve/main/model.safetensors", headers={"Range": "bytes=0-99999"})
    assert status == 206 and len(body) == 100_000 and hub.settle()[-1].bytes_sent == 100_000


@pytest.mark.slow
def test_real_client_resumes_a_cut_download_with_range(big_root, tmp_path):
    # huggingface_hub reads 10 MiB chunks, so only a cut past 10 MiB leaves it something to resume from
    with HubServer(big_root) as hub:
        hub.cut_after = 12 * 1024 * 1024
        path = hf_hub_download("org/big", "model.safetensors", endpoint=hub.endpoint, cache_dir=tmp_path)
        gets = [r for r in hub.settle() if r.method == "GET" and r.path.endswith("model.safetensors")]
    assert filecmp.cmp(path, big_root / "org/big/model.safetensors", shallow=False)
    assert [(r.status, r.range) for r in gets] == [(200, None), (206, f"bytes={10 * 1024 * 1024}-")]


def test_real_client_private_repo_through_the_cdn_with_a_token(cdn_hub, tmp_path):
    path = Path(snapshot_download("org/private", endpoint=cdn_hub.endpoint, cache_dir=tmp_path, token="hf_good"))
    assert (path / "config.json").read_text() == "{}"
    assert all(r.authorization for r in cdn_hub.settle() if r.server == "hub")
