"""Training settings: validated before anything heavy is imported (no torch/transformers here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from train_pipeline.training.data_settings import DataConfig

# Settings go to transformers' Trainer, numpy and torch: infinities and NaN only make them fail late
# (an infinite epoch count overflows the step count, an infinite weight decay gives NaN weights).
_MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TrainConfigError(ValueError):
    """A training setting is invalid; the message is one line naming the setting and the fix."""


class LoraConfig(BaseModel):
    """LoRA adapter settings (peft). ``None`` in TrainConfig.lora means full fine-tuning."""

    model_config = _MODEL_CONFIG

    r: int = Field(8, ge=1, le=1024, description="adapter rank")
    alpha: int = Field(16, ge=1, description="scaling numerator (lora_alpha)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    # The language model's attention projections; names match Qwen2-VL modules.
    # A tuple keeps the frozen model hashable (Prefect cache keys).
    target_modules: tuple[str, ...] = Field(("q_proj", "k_proj", "v_proj", "o_proj"), min_length=1)

    @field_validator("target_modules")
    @classmethod
    def _check_modules(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not name.strip() or any(c.isspace() for c in name):
                raise ValueError(f"{name!r} is not a module name; use names like 'q_proj'")
        return v


# Settings that were renamed: an old config says which new one to use (not "unknown setting").
RENAMED = {"caption_field": "fields.caption", "messages_field": "fields.messages", "image_field": "fields.image"}


class TrainConfig(DataConfig):
    """Everything that shapes a fine-tuning run. Same config + same inputs = same result.

    The data settings (format, fields, image_dir, split, per-dataset weights, eval) come from
    DataConfig (data_settings.py)."""

    model_config = _MODEL_CONFIG

    # Length of training: max_steps > 0 wins over epochs (Trainer semantics).
    num_train_epochs: float = Field(3.0, gt=0)
    max_steps: int = Field(-1, ge=-1, description="-1 = use num_train_epochs")
    learning_rate: float = Field(1e-5, gt=0, le=1.0)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    per_device_train_batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(8, ge=1)
    # Image bounds in pixels (h*w); the image processor resizes into them. Capping max_pixels
    # is what keeps activations bounded: image tokens are never truncated.
    max_pixels: int = Field(1280 * 28 * 28, ge=1)
    min_pixels: int = Field(56 * 56, ge=1)
    max_length: int = Field(2048, ge=16, description="token limit per example; captions are cut, image tokens never")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="numpy (transformers.set_seed) takes at most 2**32-1")
    bf16: bool | Literal["auto"] = Field("auto", description="'auto' = bf16 on a CUDA GPU, fp32 on CPU")
    lora: LoraConfig | None = None
    freeze_vision: bool = False
    gradient_checkpointing: bool = False
    save_steps: int = Field(50, ge=1)
    save_total_limit: int | None = Field(2, ge=1)
    logging_steps: int = Field(1, ge=1)
    # The user turn of a caption row (a row with a caption column, no question and no chat).
    instruction: str = Field("Describe this advertisement.", min_length=1)
    resume: bool = Field(True, description="continue from the latest complete checkpoint")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for old, new in RENAMED.items():
                if old in data:
                    raise ValueError(f"{old} is now {new}: write `fields: {{{new.split('.')[1]}: {data[old]!r}}}`")
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> TrainConfig:
        if self.max_steps == 0:
            raise ValueError("max_steps is 0: use -1 (train for num_train_epochs) or a positive step count")
        if self.min_pixels > self.max_pixels:
            raise ValueError(
                f"min_pixels ({self.min_pixels}) > max_pixels ({self.max_pixels}): lower min_pixels or raise max_pixels"
            )
        return self


def _one_line(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting; check the spelling against TrainConfig's fields"
        parts.append(f"{where}: {msg}")
    return f"{source}: invalid training config: " + "; ".join(parts)


def parse_train_config(data: Mapping[str, Any] | None, source: str = "train config") -> TrainConfig:
    """Validate a mapping (e.g. the ``train:`` section of the pipeline YAML) into a TrainConfig.

    Raises TrainConfigError with a single line naming every bad setting.
    """
    try:
        return TrainConfig.model_validate(dict(data or {}))
    except ValidationError as exc:
        raise TrainConfigError(_one_line(exc, source)) from None
