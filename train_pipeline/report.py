"""The download summary: one row per file (and one for the model snapshot), for the terminal and
for a Prefect table artifact."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from resumable.progress import human_size
from resumable.redaction import redact

COLUMNS = ("file", "size", "source", "status", "transferred", "speed", "verified hash")


@dataclass(frozen=True)
class Row:
    file: str
    size: int
    source: str
    status: str  # downloaded | resumed | cached | failed
    transferred: int
    seconds: float
    digest: str

    def cells(self) -> dict[str, str]:
        speed = self.transferred / self.seconds if self.seconds > 0 and self.transferred else 0.0
        return {
            "file": self.file,
            "size": human_size(self.size) if self.size >= 0 else "?",
            "source": self.source,
            "status": self.status,
            "transferred": human_size(self.transferred),
            "speed": f"{human_size(speed)}/s" if speed else "-",
            "verified hash": _short(self.digest),
        }


def source_of(url: str) -> str:
    """Host and port of ``url`` (never its userinfo or query: the table is printed and stored)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        return f"{host}:{parts.port}" if parts.port else host or redact(url)
    except ValueError:
        return redact(url)


def _short(digest: str) -> str:
    if not digest:
        return "-"
    alg, _, hexdigest = digest.partition(":")
    return f"{alg}:{hexdigest[:16]}…" if len(hexdigest) > 16 else digest


def file_row(path: str, url: str, size: int, status: str, transferred: int, seconds: float, digest: str | None) -> Row:
    return Row(Path(path).name, size, source_of(url), status, transferred, seconds, digest or "")


def hub_row(source: str, endpoint: str | None, result=None) -> Row:
    """One row for an hf:// source: its files together, the Hub's host, the commit they come from
    (``result`` None: it failed)."""
    import os

    host = source_of(endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    if result is None:
        return Row(source, -1, host, "failed", 0, 0.0, "")
    return Row(f"{source} ({len(result.files)} file{'s' if len(result.files) != 1 else ''})", result.bytes_total, host,
               result.status, result.bytes_transferred, result.seconds, f"commit:{result.commit}")


def table(rows: list[Row]) -> list[dict[str, str]]:
    return [r.cells() for r in rows]


def render(rows: list[Row]) -> str:
    """A plain-text table for the terminal."""
    cells = table(rows)
    widths = {c: max([len(c)] + [len(r[c]) for r in cells]) for c in COLUMNS}
    line = "  ".join(c.ljust(widths[c]) for c in COLUMNS)
    out = [line, "  ".join("-" * widths[c] for c in COLUMNS)]
    out += ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS) for r in cells]
    total = sum(r.transferred for r in rows)
    out.append(f"{len(rows)} item(s), {human_size(total)} transferred")
    return "\n".join(out)


def markdown(rows: list[Row]) -> str:
    cells = table(rows)
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in cells]
    return "\n".join(out)
