"""Read one dataset (one or more folders: extracted archives, a downloads folder) into examples,
with a report of every skipped row and why. Nothing usable is a one-line DataError that names
the columns found and the settings to set."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from train_pipeline.training.data_settings import DatasetSettings
from train_pipeline.training.formats.common import BadRow, DataError, DataReport, Example, SkippedRow, UnreadableFile
from train_pipeline.training.formats.detect import Found, detect
from train_pipeline.training.formats.registry import valid_formats
from train_pipeline.training.formats.rows import columns_wanted, example_from_row, resolve_fields

logger = logging.getLogger(__name__)


def read_dataset(folders: Sequence[Path], settings: DatasetSettings, instruction: str,
                 label: str | None = None) -> tuple[list[Example], DataReport]:
    """Every usable row of the data files in ``folders`` (a folder without any is passed over
    when another has some); DataError when there is no data file or no usable row."""
    label = label or settings.name
    found = [detect(Path(f), settings, label) for f in folders]
    with_data = [f for f in found if f.format is not None]
    if not with_data:
        raise DataError(_no_layout(found, settings, label))
    files = [(f, p) for f in with_data for p in f.files]
    report = DataReport(metadata_path=files[0][1] if len(files) == 1 else with_data[0].root, name=settings.name,
                        format="+".join(dict.fromkeys(f.format.NAME for f in with_data)),
                        files=[str(p) for _, p in files], left_out=[x for f in with_data for x in f.left_out])
    examples: list[Example] = []
    for part, path in files:
        examples += _read_file(part, path, settings, instruction, report, name_files=len(files) > 1)
    if report.left_out:
        logger.info("%s: left out the data files of other splits than %r: %s", label, settings.split,
                    ", ".join(report.left_out[:5]) + (" ..." if len(report.left_out) > 5 else ""))
    if report.skipped:
        logger.warning(report.summary())
    if not examples:
        raise DataError(_nothing_usable(report, with_data[0], settings))
    return examples, report


def _read_file(part: Found, path: Path, settings: DatasetSettings, instruction: str, report: DataReport,
               name_files: bool) -> list[Example]:
    fmt = part.format
    fields = resolve_fields(fmt.DEFAULTS, settings.fields)
    base = part.root / settings.image_dir if settings.image_dir else path.parent
    rel = path.relative_to(part.root).as_posix()
    kind = fmt.row_kind(path)
    out: list[Example] = []
    try:
        for number, row in fmt.rows(path, columns_wanted(fields), report):
            report.total_rows += 1
            try:
                if isinstance(row, BadRow):
                    raise row
                out.append(example_from_row(row, fields, base, part.root, instruction, f"{rel}:{number}"))
            except BadRow as bad:
                report.skipped.append(SkippedRow(number, bad.file_name, str(bad), rel if name_files else None, kind))
    except UnreadableFile as exc:
        report.skipped.append(SkippedRow(0, None, str(exc), rel, kind))
    return out


def _no_layout(found: list[Found], settings: DatasetSettings, label: str) -> str:
    roots = ", ".join(str(f.root) for f in found)
    others = [x for f in found for x in f.others][:8]
    total = sum(f.n_others for f in found)
    seen = ", ".join(others) + (f" and {total - len(others)} more" if total > len(others) else "") or "no files"
    what = (f"no {settings.format} data files" if settings.format != "auto" else "no known dataset layout")
    return (f"{label}: {what} in {roots} (found: {seen}); valid formats: {valid_formats()}; "
            "point the dataset at such files, or set train.format (train.datasets.<name>.format for one dataset)")


def _nothing_usable(report: DataReport, part: Found, settings: DatasetSettings) -> str:
    fields = resolve_fields(part.format.DEFAULTS, settings.fields)
    looked = ", ".join(f"{k}={'|'.join(v)}" for k, v in fields.items())
    columns = ", ".join(report.columns) or "none"
    if report.total_rows == 0 and not report.skipped:
        return (f"{report.metadata_path}: no rows: add one row per example, each with an image and a caption, "
                f"question+answer or messages (looked for {looked})")
    head = "no rows" if report.total_rows == 0 else "no usable rows"
    return (f"{report.metadata_path}: {head} ({report.summary(limit=3, where=False)}); columns found: {columns}; "
            f"looked for {looked}: set train.fields.image and train.fields.caption, train.fields.question + "
            "train.fields.answer or train.fields.messages to the columns that hold them "
            "(train.datasets.<name>.fields for one dataset)")
