"""The final model folder as a user meets it (issue 16, items 4 and 5): every file readable like
the other outputs (the umask decides, not safetensors' 0600), and loadable on a machine without
torchvision -- the weights and our processor loader with stock transformers; stock AutoProcessor
there fails on transformers' video processor, as the hint printed beside the path says; where
torchvision exists, the folder holds the video processor settings stock AutoProcessor reads."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_final_files_follow_the_umask(finished_run):
    result, _, _ = finished_run
    final = result.final_model_dir
    probe = final.parent / "umask-probe"
    probe.touch()
    expected = _mode(probe)  # what this process's umask gives a new file (0644 under 022)
    probe.unlink()
    modes = {p.name: _mode(p) for p in final.iterdir() if p.is_file()}
    assert modes["model.safetensors"] == expected
    assert set(modes.values()) == {expected}, modes
    assert _mode(result.metrics_path) == expected and _mode(result.curve_path) == expected


# A machine without torchvision, made by a meta-path finder that refuses to import it (nothing is
# uninstalled; where torchvision is installed this hides it, where it is not this changes nothing).
NO_TORCHVISION = textwrap.dedent("""
    import importlib.abc, sys

    class NoTorchvision(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torchvision" or name.startswith("torchvision."):
                raise ModuleNotFoundError("No module named 'torchvision'", name=name)
            return None

    sys.meta_path.insert(0, NoTorchvision())
    import importlib.util
    _find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *a, **k: None if name.split(".")[0] == "torchvision" else _find_spec(name, *a, **k)
""")

LOAD = NO_TORCHVISION + textwrap.dedent("""
    import json, sys
    from PIL import Image
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, Qwen2VLForConditionalGeneration
    from transformers.video_processing_utils import BaseVideoProcessor
    from train_pipeline.training.processor import load_processor

    final = sys.argv[1]
    out = {"torchvision": "torchvision" in sys.modules}
    Qwen2VLForConditionalGeneration.from_pretrained(final)
    AutoTokenizer.from_pretrained(final)
    out["image_processor"] = type(AutoImageProcessor.from_pretrained(final)).__name__
    p = load_processor(final)
    text = p.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
                                 tokenize=False)
    batch = p(text=[text], images=[Image.new("RGB", (56, 56))], return_tensors="pt")
    out["image_tokens"] = int((batch["input_ids"] == p.image_token_id).sum())
    # What stock AutoProcessor would read for the video processor (where torchvision exists):
    settings, _ = BaseVideoProcessor.get_video_processor_dict(final)
    out["video_settings_from"] = settings.get("image_processor_type")
    try:
        AutoProcessor.from_pretrained(final)
        out["stock"] = "loaded"
    except Exception as exc:
        out["stock"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_the_final_model_loads_without_torchvision(finished_run):
    from train_pipeline.training.processor import LOAD_HINT

    result, _, _ = finished_run
    final = result.final_model_dir
    saved = json.loads((final / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "Qwen2VLImageProcessor"
    assert json.loads((final / "processor_config.json").read_text())["processor_class"] == "Qwen2VLProcessor"
    run = subprocess.run([sys.executable, "-c", LOAD, str(final)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["torchvision"] is False
    assert out["image_processor"].startswith("Qwen2VLImageProcessor")
    assert out["image_tokens"] == 4  # 56x56 px = 4x4 patches, merged 2x2
    # Stock AutoProcessor finds the video processor's settings (so it loads where torchvision is)...
    assert out["video_settings_from"] == "Qwen2VLImageProcessor"
    # ...and here fails for want of torchvision alone, which is what the printed hint says.
    assert out["stock"] != "loaded" and "torchvision" in out["stock"].lower(), out["stock"]
    assert "AutoProcessor needs torchvision" in LOAD_HINT and "load_processor(PATH)" in LOAD_HINT
