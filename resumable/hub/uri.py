"""``hf://`` sources: the huggingface_hub/fsspec spelling of files in a Hub repository.

    hf://datasets/ORG/NAME[@REVISION][/PATH-OR-GLOB]     a dataset repository
    hf://ORG/NAME[@REVISION][/PATH-OR-GLOB]              a model repository (also hf://models/ORG/NAME...)

As in huggingface_hub's ``HfFileSystem``, a '/' inside the revision is written ``%2F``
(``@refs%2Fpr%2F1``, ``@refs%2Fconvert%2Fparquet``); the path is taken literally. No path: the whole
repository; a path with ``*``, ``?`` or ``[`` is a glob (huggingface_hub's allow_patterns: fnmatch, so
``*`` also matches '/'); a plain path is a file, or a folder when the repository has files under it.

:func:`parse` turns text into an :class:`HfUri` or raises a one-line :class:`UsageError` that names the
input and shows the valid form; ``str(uri)`` is its canonical spelling, and ``parse(str(uri)) == uri``.
No network, no huggingface_hub import here except for the repo id rule (imported when first used).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from ..errors import UsageError

SCHEME = "hf://"
FORM = "hf://datasets/ORG/NAME[@REVISION][/PATH-OR-GLOB] (a model: hf://ORG/NAME...)"
EXAMPLE = "hf://datasets/org/name@main/data/*.parquet"
GLOB_CHARS = "*?["
_BAD_CHAR = re.compile(r"[\x00-\x20\x7f\\]")  # control characters, space, backslash
_NAME_MAX = 255
_PREFIXES = ("datasets", "models", "spaces")  # first components that say the repository type
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class HfUri:
    repo_type: str  # "model" | "dataset"
    repo_id: str  # ORG/NAME
    revision: str | None = None  # None: the default branch (main)
    path: str | None = None  # None: the whole repository; a file, a folder ('x/' or a plain name) or a glob

    def __str__(self) -> str:
        # A model whose org reads like a type prefix keeps 'models/': hf://datasets/name would be a dataset.
        org = self.repo_id.split("/", 1)[0]
        prefix = "datasets/" if self.repo_type == "dataset" else "models/" if org in _PREFIXES else ""
        text = SCHEME + prefix + self.repo_id
        if self.revision is not None:
            text += "@" + self.revision.replace("%", "%25").replace("/", "%2F")
        return text + (f"/{self.path}" if self.path else "")

    @property
    def is_glob(self) -> bool:
        return self.path is not None and any(c in self.path for c in GLOB_CHARS)

    @property
    def single_file(self) -> bool:
        """The path names one file at most (not a glob, not a folder written with a trailing '/')."""
        return self.path is not None and not self.is_glob and not self.path.endswith("/")

    @property
    def patterns(self) -> list[str] | None:
        """The snapshot's ``include`` for this source (None: every file)."""
        return None if self.path is None else [self.path]

    def without_revision(self) -> "HfUri":
        return HfUri(self.repo_type, self.repo_id, None, self.path)

    def revision_hint(self) -> str:
        """For a path with '@' that selects nothing (``.../data/*.parquet@main``): where a revision
        goes, as '; ...' to append to that error; '' when there is nothing to say."""
        if self.path is None or self.revision is not None or "@" not in self.path:
            return ""
        head, _, revision = self.path.rpartition("@")
        head = head.rstrip("/")
        if not revision or "/" in revision or _revision_problem(revision):
            return ""
        fixed = HfUri(self.repo_type, self.repo_id, revision, head or None)
        return (f"; if '{revision}' is a revision, it goes right after the repository name: {fixed} (a path is "
                "taken literally, '@' included)")


def is_hf_uri(text: object) -> bool:
    return isinstance(text, str) and text[:len(SCHEME)].lower() == SCHEME


def parse(text: str) -> HfUri:
    """``text`` as an :class:`HfUri`, else a one-line UsageError naming it and the valid form."""
    if not isinstance(text, str):
        raise UsageError(f"{text!r} is not an hf:// source; write it as {FORM}, e.g. {EXAMPLE}")
    why = None
    try:
        return _parse(text)
    except _Bad as exc:
        why = str(exc)
    shown = text if len(text) <= 200 else text[:200] + "..."
    raise UsageError(f"{shown!r}: {why}; write it as {FORM}, e.g. {EXAMPLE}")


class _Bad(Exception):
    pass


def _parse(text: str) -> HfUri:
    if not is_hf_uri(text):
        raise _Bad("not an hf:// source")
    if not text.startswith(SCHEME):
        raise _Bad(f"write the scheme in lower case ({SCHEME})")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a byte that is no UTF-8 character (read from a file or argv as \udcXX)
        raise _Bad("contains bytes that are not UTF-8 text") from None
    rest = text[len(SCHEME):]
    bad = _BAD_CHAR.search(rest)
    if bad:
        raise _Bad("contains a space" if bad.group() == " " else
                   "contains a backslash" if bad.group() == "\\" else "contains a control character")
    repo_type = "model"
    head, sep, tail = rest.partition("/")
    if head in ("datasets", "models"):
        repo_type = "dataset" if head == "datasets" else "model"
        rest = tail
    elif head == "spaces":
        raise _Bad("Spaces are not datasets or models; only hf://datasets/... and hf://ORG/NAME... are fetched")
    parts = rest.split("/", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise _Bad("expected ORG/NAME after hf://" + ("datasets/" if repo_type == "dataset" else ""))
    org, name_rev = parts[0], parts[1]
    path = parts[2] if len(parts) == 3 else None
    name, at, raw_revision = name_rev.partition("@")
    if "@" in org:
        # Not echoed: 'user:token@' is how credentials are written into URLs.
        raise _Bad("'@' belongs after the repository name (ORG/NAME@REVISION); a token goes in HF_TOKEN, never "
                   "in the source")
    repo_id = f"{org}/{name}"
    _check_repo_id(repo_id)
    revision = None
    if at:
        if not raw_revision:
            raise _Bad("'@' without a revision")
        if _BAD_ESCAPE.search(raw_revision):
            raise _Bad("the revision has a '%' not followed by two hex digits (write '%' as %25, '/' as %2F)")
        try:
            revision = unquote(raw_revision, errors="strict")
        except UnicodeDecodeError:
            raise _Bad("the revision's %-escapes are not UTF-8 text (e.g. %ff); write '/' as %2F, '%' as %25") from None
        _check_revision(revision, path)
    if path == "":
        path = None  # 'hf://datasets/org/name/': the whole repository
    if path is not None:
        _check_path(path)
    return HfUri(repo_type, repo_id, revision, path)


def _check_repo_id(repo_id: str) -> None:
    from .snapshots import check_repo_id

    try:
        check_repo_id(repo_id)
    except UsageError:
        raise _Bad(f"{repo_id!r} is not a Hub repository id (letters, digits, '-', '_', '.'; no '--' or '..', "
                   "at most 96 characters)") from None


def _revision_problem(revision: str) -> str | None:
    from .snapshots import _revision_problem as problem

    return problem(revision)


def _check_revision(revision: str, path: str | None) -> None:
    why = _revision_problem(revision)
    if why:
        raise _Bad(f"revision {revision!r}: {why}")
    if revision == "refs" and path and path.split("/")[0] in ("pr", "convert"):
        raise _Bad(f"the revision 'refs/{path.split('/')[0]}/...' must be written with %2F for '/' "
                   f"(@refs%2F{path.split('/')[0]}%2F...), as huggingface_hub writes it")


def _check_path(path: str) -> None:
    components = path[:-1].split("/") if path.endswith("/") else path.split("/")
    for c in components:
        if c in ("", ".", ".."):
            raise _Bad(f"the path {path!r} has an empty, '.' or '..' component")
        if c == ".resumable":
            raise _Bad(f"the path {path!r} names '.resumable', the engine's own record folder")
        if len(c.encode("utf-8", "surrogatepass")) > _NAME_MAX:
            raise _Bad(f"a component of the path is longer than {_NAME_MAX} bytes")
