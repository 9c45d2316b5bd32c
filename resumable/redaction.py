"""Secrets out of every message: URL queries (signed URLs carry tokens there) and userinfo."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit


def redact(url: str) -> str:
    """The URL without its query and userinfo: signed URLs carry tokens there, logs must not."""
    try:
        p = urlsplit(url)
        netloc = p.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if p.port:
            netloc += f":{p.port}"
        return urlunsplit((p.scheme, netloc, p.path, "…" if p.query else "", ""))
    except (ValueError, TypeError, AttributeError):
        return redact_text(str(url))  # unparseable: still never show a query or userinfo


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@'\"<>]*@")
# A query after anything path-like ("https://h/p?", "url: /p?", "h/p?"): signed URLs keep tokens there.
_PATH_QUERY = re.compile(r"((?:[a-z][a-z0-9+.-]*://|/)[^\s?'\"<>]*)\?[^\s'\"<>]+", re.I)


def redact_text(text: str) -> str:
    """``text`` with every URL query and userinfo replaced: for messages built from other libraries'
    errors (requests and urllib3 quote the whole request target, query included)."""
    return _PATH_QUERY.sub(r"\1?…", _USERINFO.sub(r"\1", text))
