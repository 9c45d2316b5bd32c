"""Load the model for training: fp32 weights, optional frozen vision tower, optional LoRA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText

from train_pipeline.training.settings import TrainConfig


def load_model_for_training(model_dir: Path, config: TrainConfig, resume_from: Path | None = None) -> Any:
    """The model to train. When resuming a full fine-tune, weights come from the checkpoint.

    Why not let Trainer load them: checkpoints are saved in the original (Hub) key layout while
    ``Trainer._load_from_checkpoint`` calls ``load_state_dict(strict=False)`` without the key
    conversion ``from_pretrained`` applies, so for Qwen2-VL it silently loads nothing and the run
    restarts from the base weights (transformers issue #43701). ``from_pretrained`` converts.
    LoRA adapters are named the same either way; Trainer restores those.
    """
    source = resume_from if (resume_from is not None and config.lora is None) else model_dir
    # fp32 master weights; bf16 (when on) is autocast by Trainer, which keeps optimizer updates exact.
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32)
    model.config.use_cache = False  # the KV cache is for generation; it only costs memory here
    if config.freeze_vision:
        vision_tower(model).requires_grad_(False)
    if config.lora is not None:
        from peft import LoraConfig, get_peft_model

        if config.gradient_checkpointing:
            # Frozen embeddings give checkpointed blocks inputs without grad; this re-enables it.
            model.enable_input_require_grads()
        model = get_peft_model(
            model,
            LoraConfig(
                r=config.lora.r,
                lora_alpha=config.lora.alpha,
                lora_dropout=config.lora.dropout,
                target_modules=list(config.lora.target_modules),
                task_type="CAUSAL_LM",
            ),
        )
    return model


def vision_tower(model: Any) -> torch.nn.Module:
    inner = getattr(model, "model", model)
    visual = getattr(inner, "visual", None)
    if visual is None:
        raise TypeError(f"{type(model).__name__} has no vision tower at .model.visual: freeze_vision needs a Qwen2-VL model")
    return visual
