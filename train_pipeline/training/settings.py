"""Training settings: validated before anything heavy is imported (no torch/transformers here)."""

from __future__ import annotations

from collections.abc import Mapping
import re
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


_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def parse_endpoint(text: Any) -> tuple[str, int]:
    """``host:port`` (``[v6-address]:port`` for IPv6) -> (host, port); ValueError with one line otherwise.

    The host is a DNS name or an IP address (no scheme, path or spaces); the port 1-65535."""
    import ipaddress

    fix = "write HOST:PORT, e.g. 10.0.0.1:29500 or node0.example.com:29500 ([::1]:29500 for IPv6)"
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not HOST:PORT: {fix}")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or len(port) > 5:
        raise ValueError(f"{text!r} is not HOST:PORT: {fix}")
    number = int(port)
    if not 1 <= number <= 65535:
        raise ValueError(f"{text!r}: port {number} is outside 1-65535: {fix}")
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1])), number
        except ValueError:
            raise ValueError(f"{text!r}: {host} is not an IPv6 address: {fix}") from None
    if not host.isascii() or not _HOST.match(host):
        raise ValueError(f"{text!r}: {host!r} is not a host name or IPv4 address: {fix}")
    return host, number


def _parse_nproc(value: Any) -> Any:
    """A positive integer (also as a digit string, as a command line writes it) or 'auto'."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "auto":
            return "auto"
        if text.isascii() and text.isdigit():
            value = int(text)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1024:
        return value
    raise ValueError(f"{value!r} is not a process count: use a whole number 1-1024, or 'auto' (every visible GPU; 1 on CPU)")


class DistributedConfig(BaseModel):
    """How many processes train together (torch.distributed, launched with torchrun's elastic agent).

    World size = nproc_per_node x nnodes; 1 (the default) trains in the calling process."""

    model_config = _MODEL_CONFIG

    nproc_per_node: int | Literal["auto"] = Field(1, description="processes on this machine; 'auto' = every visible GPU (1 on CPU)")
    nnodes: int = Field(1, ge=1, le=1024, description="machines training together")
    node_rank: int = Field(0, ge=0, description="this machine's index, 0..nnodes-1; node 0 writes the output")
    rdzv_endpoint: str | None = Field(None, description="HOST:PORT of node 0's rendezvous (c10d); needed when nnodes > 1")
    rdzv_id: str = Field("train-pipeline", description="the same on every node of one training")
    strategy: Literal["ddp", "fsdp"] = Field("ddp", description="ddp = a full replica per process; fsdp = sharded (full fine-tunes too big for one GPU)")
    backend: Literal["auto", "nccl", "gloo"] = Field("auto", description="'auto' = nccl with CUDA, gloo on CPU")
    stop_grace_s: float = Field(30.0, gt=0, le=3600, description="on cancel: SIGTERM, then SIGKILL after this many seconds")

    @field_validator("nproc_per_node", mode="before")
    @classmethod
    def _check_nproc(cls, v: Any) -> Any:
        return _parse_nproc(v)

    @field_validator("rdzv_endpoint")
    @classmethod
    def _check_endpoint(cls, v: str | None) -> str | None:
        if v is not None:
            parse_endpoint(v)
        return v

    @field_validator("rdzv_id")
    @classmethod
    def _check_id(cls, v: str) -> str:
        if not _TOKEN.match(v):
            raise ValueError(f"{v!r} is not a run id: use letters, digits, '_', '.', '-' (at most 128)")
        return v

    @model_validator(mode="after")
    def _check_nodes(self) -> DistributedConfig:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} is not below nnodes {self.nnodes}: number the machines 0..{self.nnodes - 1}")
        if self.nnodes > 1 and self.rdzv_endpoint is None:
            raise ValueError(f"nnodes {self.nnodes} needs rdzv_endpoint: HOST:PORT of node 0, the same on every node (e.g. 10.0.0.1:29500)")
        return self

    @property
    def multi_process(self) -> bool:
        """True unless exactly one process trains (nproc_per_node 1 on one node); 'auto' counts as
        several until resolved (distributed.world_size)."""
        return self.nnodes > 1 or self.nproc_per_node != 1


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
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)

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
