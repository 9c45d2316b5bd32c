"""GPU check for issue 6: the real Qwen2-VL-2B architecture (random weights, no download) trained
in bf16 for a few steps at a realistic image size, through ``finetune.train``.

    python bench/train_qwen2vl_2b.py --work /tmp/q2b [--steps 8] [--batch 1] [--max-pixels 1003520]
                                     [--activation-checkpointing] [--freeze-vision] [--arch 2b|tiny]
                                     [--lora] [--nproc-per-node N|auto] [--strategy ddp|fsdp]

``--nproc-per-node`` above 1 (or ``auto`` = every GPU) trains through the distributed path
(torchrun workers, as the pipeline's train step does); ``--strategy fsdp`` shards a full
fine-tune (GPUs only). Tokens/s are the whole job's; peak memory is rank 0's GPU.

Prints one JSON object: device, parameter count, median step time (first 2 steps excluded as
warm-up), tokens/s, peak GPU memory, and the settings. ``--arch tiny`` runs the same path with the
tiny model on CPU, to check the script itself. Needs about 40 GB of GPU memory for full fine-tuning
of 2B parameters (fp32 master weights + AdamW, bf16 autocast) plus activations.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Qwen2-VL-2B-Instruct's published architecture.
QWEN2VL_2B_TEXT = {
    "vocab_size": 151936,
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
}
QWEN2VL_2B_VISION = {"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "mlp_ratio": 4, "num_heads": 16}


def build_random_2b(work: Path, tiny_dir: Path) -> Path:
    """Random-initialised 2B weights, saved with the tiny model's tokenizer and processor."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from train_pipeline.training.processor import load_processor

    dest = work / "qwen2vl-2b-random"
    if (dest / "model.safetensors.index.json").exists() or (dest / "model.safetensors").exists():
        return dest
    tiny = json.loads((tiny_dir / "config.json").read_text())
    ids = {k: tiny[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")}
    text = {**QWEN2VL_2B_TEXT, **{k: tiny["text_config"][k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}}
    config = Qwen2VLConfig(text_config=text, vision_config=QWEN2VL_2B_VISION, tie_word_embeddings=True, **ids)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration(config).to(torch.bfloat16)  # bf16 on disk: half the bytes
    model.save_pretrained(dest)
    load_processor(tiny_dir, max_pixels=None).save_pretrained(dest)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return dest


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--arch", choices=("2b", "tiny"), default="2b")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--max-pixels", type=int, default=1280 * 28 * 28)
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--freeze-vision", action="store_true")
    parser.add_argument("--lora", action="store_true", help="LoRA r=16 on the language model's attention (else full)")
    parser.add_argument("--nproc-per-node", default="1", help="processes (GPUs); 'auto' = every visible GPU")
    parser.add_argument("--strategy", choices=("ddp", "fsdp"), default="ddp")
    return parser.parse_args()


def summarize(args: argparse.Namespace, model_dir: Path, config, result, build_s: float) -> dict:
    """The printed JSON: device, model size, step time and tokens/s past the warm-up, peak memory."""
    import torch
    from transformers import AutoConfig

    from train_pipeline.training.metrics import read_metrics

    rows = [r for r in read_metrics(result.metrics_path) if "loss" in r]
    timed = rows[2:] or rows
    peak = max((r.get("peak_gpu_memory_bytes") or 0 for r in rows), default=0)
    cfg = AutoConfig.from_pretrained(model_dir)
    return {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "arch": args.arch,
        "text_hidden": cfg.text_config.hidden_size,
        "text_layers": cfg.text_config.num_hidden_layers,
        "vision_depth": cfg.vision_config.depth,
        "settings": config.model_dump(mode="json", include={"per_device_train_batch_size", "max_pixels", "max_length", "gradient_checkpointing", "freeze_vision", "bf16", "lora", "distributed"}),
        "world_size": result.world_size,
        "steps": result.steps,
        "median_step_s": statistics.median(r["seconds_per_step"] for r in timed),
        "median_tokens_per_s": statistics.median(r["tokens_per_second"] for r in timed),
        "tokens_per_step": statistics.median(
            b["num_input_tokens_seen"] - a["num_input_tokens_seen"] for a, b in zip(rows, rows[1:])
        ) if len(rows) > 1 else None,
        "median_tokens_per_s_per_process": statistics.median(r["tokens_per_second"] for r in timed) / result.world_size,
        "peak_gpu_memory_gib": round(peak / 2**30, 2) if peak else None,
        "losses": [round(r["loss"], 4) for r in rows],
        "build_s": round(build_s, 1),
    }


def main() -> None:
    args = parse_args()

    import torch

    from train_pipeline.training.settings import TrainConfig
    from train_pipeline.training.finetune import train
    from offline.sample_data import build_sample_dataset
    from offline.tiny_model import build_tiny_qwen2vl

    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tiny = build_tiny_qwen2vl(args.work / "tiny")
    model_dir = tiny if args.arch == "tiny" else build_random_2b(args.work, tiny)
    # Billboard photos of realistic size: 640-1280 px a side, resized into max_pixels.
    data = build_sample_dataset(args.work / "data", n_images=64, seed=0, sizes=(640, 800, 960, 1120, 1280))
    build_s = time.perf_counter() - t0

    config = TrainConfig(
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        learning_rate=1e-5,
        max_pixels=args.max_pixels,
        max_length=max(2048, args.max_pixels // 784 + 256),
        save_steps=10**6,  # a 2B checkpoint with optimizer is ~26 GB; not what is measured here
        gradient_checkpointing=args.activation_checkpointing,
        freeze_vision=args.freeze_vision,
        resume=False,
        lora={"r": 16, "alpha": 32, "dropout": 0.05} if args.lora else None,
        distributed={"nproc_per_node": args.nproc_per_node, "strategy": args.strategy},
    )
    out = args.work / (f"out-{args.arch}-{'lora' if args.lora else 'full'}-n{args.nproc_per_node}-{args.strategy}"
                       f"-b{args.batch}-px{args.max_pixels}-ac{int(args.activation_checkpointing)}")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = train(model_dir, data, out, config, log=lambda line: print(line, file=sys.stderr, flush=True))
    summary = summarize(args, model_dir, config, result, build_s)
    text = json.dumps(summary, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], out.name + ".json").write_text(text)


if __name__ == "__main__":
    main()
