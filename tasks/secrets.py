"""Secrets out of what Prefect records about a run: signed URLs carry tokens in their query, and
URLs can carry credentials as userinfo.

The engine already strips both from every error and log line of its own (resumable.redaction).
This is the Prefect side, for text from anywhere else:

- :func:`install_log_redaction`: run log records (the message and a traceback's text, chained
  causes included) are redacted before any handler sees them -- the terminal and Prefect's API
  (its log table) alike. Installed when the ``tasks`` package is imported, so in every process
  that runs the flow or its tasks (Dask workers too).
- :func:`redacted_errors`: an error leaving a task has its message redacted, so the Failed state's
  message, its events and the stored failure carry no secret either.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from resumable.redaction import redact_text

RUN_LOGGERS = ("prefect", "prefect.flow_runs", "prefect.task_runs")


class RedactingFilter(logging.Filter):
    """Removes URL queries and userinfo from a record's message and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            # Formatters use exc_text when it is set: the traceback is rendered once, redacted.
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return True


_FILTER = RedactingFilter()


def install_log_redaction() -> None:
    """Idempotent: the filter on Prefect's run loggers (records go through a logger's filters
    before its and its parents' handlers)."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def redact_exception(exc: BaseException) -> BaseException:
    """``exc`` with URL queries and userinfo removed from its message (in place: its type, and
    so retry decisions, stay)."""
    text = str(exc)
    clean = redact_text(text)
    if clean != text:
        if isinstance(exc, OSError):  # its str() is built from these when errno is set
            for attr in ("strerror", "filename", "filename2"):
                value = getattr(exc, attr, None)
                if isinstance(value, str):
                    setattr(exc, attr, redact_text(value))
        exc.args = (clean,)
    return exc


@contextmanager
def redacted_errors() -> Iterator[None]:
    """Any error raised inside leaves with its message redacted (see :func:`redact_exception`)."""
    try:
        yield
    except Exception as exc:
        redact_exception(exc)
        raise
