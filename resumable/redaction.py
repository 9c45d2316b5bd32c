"""Secrets out of every message: URL queries (signed URLs carry tokens there) and userinfo."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit


def redact(url: str) -> str:
    """The URL without its query and userinfo: signed URLs carry tokens there, logs must not.
    An hf:// source has neither (its '?' is a glob character; the parser refuses userinfo): it
    is shown in its canonical spelling, whole."""
    hub = _hf_source(url)
    if hub is not None:
        return hub
    try:
        p = urlsplit(url)
        if not p.netloc:  # not a URL we can take apart: cut what could be a query or userinfo
            return redact_text(url.split("?", 1)[0]) + ("?…" if "?" in url else "")
        netloc = p.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if p.port:
            netloc += f":{p.port}"
        return urlunsplit((p.scheme, netloc, p.path, "…" if p.query else "", ""))
    except (ValueError, TypeError, AttributeError):
        return redact_text(str(url))  # unparseable: still never show a query or userinfo


# What ends a URL inside a message: a space, a line break, a quote or an angle bracket. (Not \s:
# it also matches \x1c-\x1f, which would end the URL early and leave its query in the text.)
_END = " \t\r\n'\"<>"
_USERINFO = re.compile(f"//[^/@{_END}]*@")  # scheme://user:password@host
# A query after anything path-like ("https://h/p?", "url: /p?", "h/p?"): signed URLs keep tokens there.
_PATH_QUERY = re.compile(f"((?:[a-z][a-z0-9+.-]*://|/)[^?{_END}]*)\\?[^{_END}]+", re.I)
_ANY_QUERY = re.compile(f"[?&][^?&={_END}]*=[^{_END}]*")  # key=value after a '?' or '&' wherever it stands


def redact_text(text: str) -> str:
    """``text`` with every URL query and userinfo replaced: for messages built from other libraries'
    errors (requests and urllib3 quote the whole request target, query included). An hf:// source
    in it keeps its '?' and '=' (glob characters of a repository path, never a query); only
    userinfo is taken out of it."""
    parts = _HF_SPAN.split(text)  # odd items: hf:// spans
    return "".join(_USERINFO.sub("//", p) if i % 2 and "://" not in p[5:] else _redact_plain(p)
                   for i, p in enumerate(parts))


def _redact_plain(text: str) -> str:
    text = _PATH_QUERY.sub(r"\1?…", _USERINFO.sub("//", text))
    return _ANY_QUERY.sub("?…", text)


_HF_SPAN = re.compile(f"((?<![a-z0-9+.-])hf://[^{_END}]*)", re.I)


def _hf_source(url: object) -> str | None:
    """``url``'s canonical spelling when it is a well-formed hf:// source, else None."""
    if not isinstance(url, str) or url[:5].lower() != "hf://":
        return None
    from .errors import UsageError
    from .hub.uri import parse

    try:
        return str(parse(url))
    except UsageError:
        return None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """``text`` with control characters (a newline in a file name, a URL, a server's reason
    phrase) written as ``\\xNN``: an error message stays one line whatever it quotes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
