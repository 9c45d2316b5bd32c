"""The snapshot folder is what a plain transformers `from_pretrained(path)` loads."""

from __future__ import annotations

import pytest

from offline.hub_server import HubServer
from resumable.hub import snapshot


@pytest.mark.slow
def test_from_pretrained_loads_the_snapshot_folder(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=32, vocab_size=64)
    model = transformers.GPT2LMHeadModel(config)
    model.save_pretrained(tmp_path / "repos" / "org" / "gpt-tiny")  # config.json + model.safetensors (LFS)
    with HubServer(tmp_path / "repos", cdn=True) as hub:
        result = snapshot("org/gpt-tiny", dest_root=tmp_path / "cache", endpoint=hub.endpoint, progress=False)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(result.path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
