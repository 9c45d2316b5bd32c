"""Offline stand-ins for the internet: what the sample profile and the tests download from.

``file_server``: a static HTTP file server that misbehaves on demand (the transfer engine's peer).
``hub_server`` (with ``hub_routes``, ``hub_repos``): a Hugging Face Hub look-alike over folders.
``tiny_model``, ``sample_data``: a tiny random Qwen2-VL and a synthetic billboard dataset.
``sample``: builds the sample profile from those two and serves it on 127.0.0.1.

The application does not depend on this package: it imports it only where the config selects
the sample, lazily (``flows/steps.py::sources``, ``train_pipeline/config/``). ``python -m offline``
builds the tiny model or the synthetic data on disk. The servers are standard library
only; the builders import tokenizers, PIL and, to build, torch and transformers.
"""
