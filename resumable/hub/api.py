"""The Hub's metadata API through huggingface_hub's HfApi: retries of transient failures
(resumable.retry.is_transient: 408/425/429/5xx, network errors) that honour ``Retry-After`` and
``RateLimit``, and one-line errors that say what to do."""

from __future__ import annotations

import logging
import os
import re
from typing import Callable

from tenacity import Retrying, retry_if_exception, wait_exponential_jitter

from .. import http
from ..retry import is_network_error, is_transient
from .common import COMMIT, RemoteFile, SnapshotError

log = logging.getLogger("resumable")

DEFAULT_ENDPOINT = "https://huggingface.co"
METADATA_ATTEMPTS = 6  # on 429/5xx: the server is there and says when to come back
NETWORK_ATTEMPTS = 3  # on connection errors: a wrong endpoint should fail in seconds, not minutes
RETRY_WAIT_CAP = 120.0  # never sleep longer than this on one 429, whatever the server asks


class HubAPI:
    """HfApi calls with retries on 429/5xx (honouring Retry-After and RateLimit) and one-line errors."""

    def __init__(self, repo_id: str, repo_type: str, endpoint: str | None, token: str | bool | None):
        from huggingface_hub import HfApi, get_token

        self.repo_id, self.repo_type = repo_id, repo_type
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        http.check_url(self.endpoint)
        self.token = (get_token() if token is None else token) or None
        if token is not False:  # False: send none, whatever the environment holds
            _check_token(self.token, given=isinstance(token, str))
        self.api = HfApi(endpoint=self.endpoint, token=self.token or False)
        self.kind = "dataset" if repo_type == "dataset" else "model"

    def commit_of(self, revision: str) -> str:
        info = self._call(lambda: self.api.repo_info(self.repo_id, revision=revision, repo_type=self.repo_type),
                          revision)
        if not info.sha or not COMMIT.match(info.sha):
            raise SnapshotError(f"{self.endpoint} answered no commit for '{self.repo_id}' at '{revision}'; "
                                "is this a Hugging Face Hub endpoint?", "network")
        return info.sha

    def list_files(self, commit: str, revision: str) -> list[RemoteFile]:
        from huggingface_hub.hf_api import RepoFile

        entries = self._call(lambda: list(self.api.list_repo_tree(
            self.repo_id, recursive=True, expand=False, revision=commit, repo_type=self.repo_type)), revision)
        files = [RemoteFile(e.path, e.size, e.lfs.sha256 if e.lfs else None, None if e.lfs else e.blob_id)
                 for e in entries if isinstance(e, RepoFile)]
        for f in files:
            if not _sound(f):
                raise SnapshotError(f"{self.endpoint} listed {f.path!r} of '{self.repo_id}' with a size or hash that "
                                    "cannot be right; is this a Hugging Face Hub endpoint?", "integrity")
        return files

    def file_url(self, path: str, commit: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo_id, path, repo_type=self.repo_type, revision=commit, endpoint=self.endpoint)

    def headers(self) -> dict:
        # Only for the endpoint's origin: the transfer engine drops it on a redirect elsewhere (the CDN).
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _call(self, fn: Callable, revision: str):
        retrying = Retrying(retry=retry_if_exception(_worth_retrying), wait=_hub_wait,
                            stop=_hub_stop, reraise=True,
                            before_sleep=lambda s: log.warning("%s: %s; retrying", self.endpoint,
                                                               _first_line(s.outcome.exception())))
        try:
            return retrying(fn)
        except Exception as exc:
            raise self._explain(exc, revision) from None

    def _explain(self, exc: Exception, revision: str) -> Exception:
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        what = f"{self.kind} '{self.repo_id}'"
        if isinstance(exc, GatedRepoError):
            return SnapshotError(
                f"{what} is gated: accept its terms at {self.endpoint}/{_page(self)} with your account, then pass "
                "that account's token (HF_TOKEN)", "gated")
        if isinstance(exc, RevisionNotFoundError):
            return SnapshotError(f"revision '{revision}' not found in {what}: use an existing branch, tag or "
                                 "commit sha", "revision")
        status = getattr(getattr(exc, "response", None), "status_code", None)
        message = getattr(getattr(exc, "response", None), "headers", {}).get("X-Error-Message", "")
        if status == 401 and "credentials" in message.lower():
            return SnapshotError(f"{self.endpoint} rejected the token: check HF_TOKEN", "auth")
        if isinstance(exc, RepositoryNotFoundError):
            hint = "check the name" + ("" if self.token else "; if it is private, set HF_TOKEN to a token that can read it")
            return SnapshotError(f"{what} not found on {self.endpoint}: {hint}", "repo")
        if status == 403:
            return SnapshotError(f"access to {what} denied by {self.endpoint}: check that the token (HF_TOKEN) has "
                                 "read access", "auth")
        if isinstance(exc, OfflineModeIsEnabled):
            return SnapshotError(f"offline mode is on (HF_HUB_OFFLINE) but {what} was asked for online: "
                                 "unset HF_HUB_OFFLINE to reach the Hub, or ask for the local snapshot", "offline")
        if isinstance(exc, HfHubHTTPError):
            return SnapshotError(f"{self.endpoint}: {what}: HTTP {status}: {_first_line(exc)}", "network")
        if is_network_error(exc):
            return SnapshotError(f"cannot reach {self.endpoint} ({_first_line(exc)}): check the network or the "
                                 "endpoint (HF_ENDPOINT), or set HF_HUB_OFFLINE=1 to use a complete local snapshot",
                                 "network")
        if isinstance(exc, (ValueError, KeyError, TypeError, AttributeError)):  # JSON that is not the Hub's
            return SnapshotError(f"{self.endpoint} did not answer like the Hugging Face Hub API for {what} "
                                 f"({type(exc).__name__}); check the endpoint (HF_ENDPOINT)", "network")
        return exc


_HEX = re.compile(r"[0-9a-f]+")


def token_problem(token: object) -> str | None:
    """Why ``token`` cannot be sent, else None. It travels in an HTTP header: visible ASCII without
    spaces (Hub tokens are 'hf_' and letters/digits); surrounding whitespace (a file's last newline)
    is dropped by huggingface_hub and harmless."""
    if not isinstance(token, str):
        return None
    token = token.strip()
    if token.isascii() and token.isprintable() and " " not in token:
        return None
    return ("the token contains spaces, control or non-ASCII characters; paste it exactly as shown on the Hub's "
            "Access Tokens page")


def _check_token(token: object, *, given: bool) -> None:
    """One line naming where a malformed token came from -- never the token. From the environment
    the raw value is checked: huggingface_hub silently drops a newline inside it."""
    sources = [("the token passed", token)] if given else [
        ("HF_TOKEN", os.environ.get("HF_TOKEN")), ("HUGGING_FACE_HUB_TOKEN", os.environ.get("HUGGING_FACE_HUB_TOKEN")),
        ("the saved Hugging Face token (HF_TOKEN_PATH, or the login of 'hf auth login')", token)]
    for where, value in sources:
        why = token_problem(value)
        if why:
            raise SnapshotError(f"{where}: {why}", "token")
        if value and not given:
            return  # the first one set is the one huggingface_hub uses


def _sound(f: RemoteFile) -> bool:
    """A listed file we can fetch and verify: a text path, a size in bytes, well-formed digests."""
    def hex_of(value, length: int) -> bool:
        return value is None or (isinstance(value, str) and len(value) == length and bool(_HEX.fullmatch(value)))

    return (isinstance(f.path, str) and type(f.size) is int and 0 <= f.size < 2**63
            and hex_of(f.sha256, 64) and hex_of(f.blob, 40) and (f.sha256 or f.blob))


def _page(hub: HubAPI) -> str:
    return hub.repo_id if hub.repo_type == "model" else f"datasets/{hub.repo_id}"


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip()
    return next((line for line in text.splitlines() if line.strip()), type(exc).__name__)


_BACKOFF = wait_exponential_jitter(max=30)  # 1, 2, 4, ... s (plus up to 1 s of jitter)


def _worth_retrying(exc: BaseException) -> bool:
    # A host name that does not exist, or nothing listening there, is a wrong endpoint: say so now.
    return is_transient(exc) and http.unreachable(exc) is None


def _hub_stop(state) -> bool:
    answered = getattr(state.outcome.exception(), "response", None) is not None
    return state.attempt_number >= (METADATA_ATTEMPTS if answered else NETWORK_ATTEMPTS)


def _hub_wait(state) -> float:
    """The server's word (RateLimit reset, else Retry-After) when it gives one, else backoff."""
    from huggingface_hub.utils import parse_ratelimit_headers

    headers = getattr(getattr(state.outcome.exception(), "response", None), "headers", None) or {}
    info = parse_ratelimit_headers(headers)
    if info is not None and info.remaining == 0:
        return min(float(info.reset_in_seconds), RETRY_WAIT_CAP)
    asked = http.parse_retry_after(headers.get("Retry-After"))
    if asked is not None:
        return min(asked, RETRY_WAIT_CAP)
    return _BACKOFF(state)

