"""The data part of the training settings: how each dataset is read (format, field mapping),
how the datasets are mixed (weights) and what is held out for evaluation.

Light on purpose (pydantic only): the pipeline validates its config with these before anything
heavy is imported. The readers themselves live in ``train_pipeline.training.formats``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

_MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

# The formats the readers know (train_pipeline.training.formats.registry checks it lists the same).
FORMAT_NAMES = ("imagefolder", "parquet", "arrow", "sharegpt", "llava")
Format = Literal["auto", "imagefolder", "parquet", "arrow", "sharegpt", "llava"]
FIELD_NAMES = ("image", "caption", "question", "answer", "messages")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class DataFields(BaseModel):
    """Which column (parquet/arrow) or key (JSON) holds what. Unset: the format's Hugging Face
    convention (see formats/README in train_pipeline/training/README.md)."""

    model_config = _MODEL_CONFIG

    image: str | None = Field(None, description="image(s): a path, bytes, an HF Image {bytes, path}, or a list of them")
    caption: str | None = Field(None, description="caption text: becomes the assistant's answer to `instruction`")
    question: str | None = Field(None, description="question text (with `answer`): one user turn, one answer")
    answer: str | None = Field(None, description="answer text (with `question`)")
    messages: str | None = Field(None, description="a chat: role/content or ShareGPT from/value turns")

    @field_validator(*FIELD_NAMES)
    @classmethod
    def _check_name(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or _CONTROL.search(v)):
            raise ValueError(f"{v!r} is not a column name; write the column or key as it appears in the data")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> DataFields:
        named = [(k, v) for k in FIELD_NAMES if (v := getattr(self, k)) is not None]
        for i, (key, value) in enumerate(named):
            for other, other_value in named[:i]:
                if value == other_value:
                    raise ValueError(f"{other} and {key} are both {value!r}: name two different columns")
        return self

    def merged(self, override: DataFields | None) -> DataFields:
        """These fields with every field ``override`` sets replaced."""
        if override is None:
            return self
        return self.model_copy(update={k: v for k in FIELD_NAMES if (v := getattr(override, k)) is not None})


def _check_image_dir(v: str | None) -> str | None:
    if v is None:
        return v
    p = PurePosixPath(v)
    if not v.strip() or p.is_absolute() or ".." in p.parts or _CONTROL.search(v):
        raise ValueError(f"{v!r} must be a relative folder inside the dataset (no '..', not absolute)")
    return v


def _check_split(v: str | None) -> str | None:
    if v is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v):
        raise ValueError(f"{v!r} is not a split name; write it as the data names it, e.g. train")
    return v


ImageDir = Annotated[str | None, AfterValidator(_check_image_dir)]
Split = Annotated[str, AfterValidator(_check_split)]


class DatasetSettings(BaseModel):
    """Settings of one dataset of the run (``train.datasets``), by its name. Unset values come
    from the train config's own ``format``, ``fields``, ``image_dir`` and ``split``."""

    model_config = _MODEL_CONFIG

    name: str = Field(min_length=1, description="the dataset's name in the run (registry or inline name)")
    weight: float = Field(1.0, ge=0, le=1000, description="examples per epoch = weight x rows; 0 = not trained on")
    format: Format | None = None
    fields: DataFields | None = None
    image_dir: ImageDir = Field(None, description="folder inside the dataset that image paths are relative to")
    split: Split | None = None


class EvalSettings(BaseModel):
    """An evaluation split: a dataset of the run kept for evaluation only, or a fraction of every
    training dataset held out (a fixed-seed choice); its loss is computed every ``steps`` steps."""

    model_config = _MODEL_CONFIG

    dataset: str | None = Field(None, min_length=1, description="a dataset of the run, used only for evaluation")
    fraction: float | None = Field(None, gt=0, lt=1, description="share of each training dataset held out")
    steps: int | None = Field(None, ge=1, description="evaluate every N optimizer steps (default: save_steps)")
    max_examples: int | None = Field(None, ge=1, description="evaluate on at most this many examples (fixed-seed choice)")

    @model_validator(mode="after")
    def _one_source(self) -> EvalSettings:
        if (self.dataset is None) == (self.fraction is None):
            raise ValueError("set exactly one of eval.dataset (a dataset of the run) or eval.fraction (e.g. 0.05)")
        return self


class DataConfig(BaseModel):
    """Mixin of TrainConfig: the data settings (see the module doc)."""

    format: Format = Field("auto", description="'auto' = chosen by the files present; or one of " + ", ".join(FORMAT_NAMES))
    fields: DataFields = Field(default_factory=DataFields)
    image_dir: ImageDir = Field(None, description="folder inside each dataset that image paths are relative to "
                                                    "(default: the folder of the file naming them)")
    split: Split = Field("train", description="files of other splits (test-*.parquet, validation/...) are left out")
    datasets: tuple[DatasetSettings, ...] = Field((), description="per dataset: weight, format, fields, image_dir, split")
    eval: EvalSettings | None = None

    @field_validator("datasets", mode="before")
    @classmethod
    def _mapping_form(cls, v: Any) -> Any:
        """``datasets: {ads: {weight: 2}}`` is short for ``datasets: [{name: ads, weight: 2}]``."""
        if isinstance(v, Mapping):
            out = []
            for name, spec in v.items():
                if spec is None:
                    spec = {}
                if not isinstance(spec, Mapping):
                    raise ValueError(f"{name}: expected a mapping of settings (weight, format, fields, ...)")
                out.append({"name": name, **spec})
            return out
        return v

    @model_validator(mode="after")
    def _check_datasets(self) -> DataConfig:
        names = [d.name for d in self.datasets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"datasets: {dupes[0]!r} is listed twice; keep one entry per dataset")
        return self

    def dataset_settings(self, name: str) -> DatasetSettings:
        """The settings that read dataset ``name``: its own entry over the config-wide ones."""
        own = next((d for d in self.datasets if d.name == name), None)
        base = DatasetSettings(name=name, format=self.format, fields=self.fields, image_dir=self.image_dir,
                               split=self.split)
        if own is None:
            return base
        return base.model_copy(update={
            "weight": own.weight,
            "format": own.format or self.format,
            "fields": self.fields.merged(own.fields),
            "image_dir": own.image_dir if own.image_dir is not None else self.image_dir,
            "split": own.split or self.split,
        })

    def check_dataset_names(self, names: list[str]) -> str | None:
        """Why these settings do not fit a run of the datasets ``names`` (one line), else None."""
        known = ", ".join(names) or "none"
        for d in self.datasets:
            if d.name not in names:
                return f"train.datasets: {d.name!r} is not a dataset of this run ({known}); fix the name or remove it"
        trained = [n for n in names if self.dataset_settings(n).weight > 0
                   and (self.eval is None or n != self.eval.dataset)]
        if self.eval is not None and self.eval.dataset is not None and self.eval.dataset not in names:
            return f"train.eval.dataset: {self.eval.dataset!r} is not a dataset of this run ({known}); fix the name"
        if not trained:
            return ("train: no dataset left to train on (every one has weight 0 or is the eval dataset); "
                    "give one a weight above 0")
        return None


def repeat_counts(weight: float, rows: int) -> tuple[int, int]:
    """(whole copies, extra rows) a dataset of ``rows`` contributes per epoch at ``weight``."""
    whole = math.floor(weight)
    return whole, round((weight - whole) * rows)
