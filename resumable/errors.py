"""Errors of the engine. Each message is one line that names the input and the fix."""

from __future__ import annotations

from .redaction import one_line, redact_text


class ResumableError(Exception):
    """Base of every error the engine raises on purpose (never a bug).

    Its text never carries a URL's query or userinfo, whatever built it: messages quote other
    libraries' errors, and they end up in logs, Prefect states and events."""

    def __init__(self, *args):
        super().__init__(*(one_line(redact_text(a)) if isinstance(a, str) else a for a in args))

    def __reduce__(self):
        # Rebuilt as it is, without the subclass's __init__ (whose arguments differ from ``args``):
        # errors cross processes (batch helpers, Dask workers) whole, attributes included.
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type, args: tuple, state: dict) -> ResumableError:
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class UsageError(ResumableError, ValueError):
    """Bad input from the caller: a malformed hash, size, URL or path."""


class TransferError(ResumableError):
    """A transfer failed. ``transient`` says whether trying again can help."""

    transient = True


class HTTPStatusError(TransferError):
    def __init__(self, url: str, status: int, reason: str = "", hint: str = ""):
        self.url, self.status = url, status
        self.transient = transient_status(status)
        text = f"{url}: HTTP {status}{' ' + reason if reason else ''}"
        super().__init__(f"{text}; {hint}" if hint else text)


class ProtocolViolation(TransferError):
    """The server answered something we cannot safely append (wrong Content-Range, short body)."""


class RestartFromZero(ProtocolViolation):
    """The server's answer cannot continue our bytes (a new version, no Range): start over."""


class IntegrityError(TransferError):
    """The bytes do not match the expected size or hash."""


class StalledError(TransferError):
    """The body arrives slower than the speed limit allows (a trickle): reconnect and resume."""


class DiskSpaceError(ResumableError):
    """The destination's file system is (or would be) full."""


class LocalFileError(ResumableError):
    """The destination or a sidecar cannot be written: permissions, a read-only file system, a
    file where a folder should be. Trying again cannot help until the user fixes it."""


TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def transient_status(status: int) -> bool:
    """Whether an HTTP status says the same request may succeed later (a timeout, too early, too many
    requests, any 5xx). Used for the engine's own requests and the Hub API's (resumable.retry.is_transient)."""
    return status in TRANSIENT_STATUSES or status >= 500


STATUS_HINTS = {
    401: "the server wants credentials: pass a token / Authorization header",
    403: "access denied: check the token and that you accepted the resource's terms",
    404: "not found: check the URL",
    410: "gone: the resource was removed; find a new URL or mirror",
}


class ExtractError(ResumableError):
    """An archive could not be extracted: unsupported, corrupt, too large, or the target is unusable."""


class UnsafeArchiveError(ExtractError):
    """A member would land outside the target (traversal, absolute path, link escape) or is a device file."""


class CorruptArchiveError(ExtractError):
    """The archive's bytes do not decode (truncated or damaged). ``problem`` says what is wrong,
    ``fix`` what to do (by default: download it again), so a caller can give another fix."""

    FIX = "delete it and download it again"

    def __init__(self, problem: str, fix: str = FIX):
        self.problem, self.fix = one_line(redact_text(problem)), fix
        super().__init__(f"{problem}; {fix}")

    def __reduce__(self):
        return type(self), (self.problem, self.fix)


class ArchiveTooLargeError(ExtractError):
    """Extraction would pass max_total_size or max_ratio: a possible decompression bomb."""
