"""Session-wide test isolation.

Prefect reads its settings at import time, so the isolated PREFECT_HOME, result storage and
server timeouts are set here, before any test module imports prefect. Everything a session
writes outside pytest's own tmp_path lives under one folder, removed when the session ends
(also after ``--collect-only``); only a session that is killed leaves it behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="train-pipeline-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_ROOT / "prefect-home")
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(_SESSION_ROOT / "prefect-results")
os.environ["TRAIN_PIPELINE_RESULT_STORAGE"] = str(_SESSION_ROOT / "prefect-results")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)  # never talk to a server the developer happens to run
os.environ["DO_NOT_TRACK"] = "1"
# No test may reach a real hub.
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HOME"] = str(_SESSION_ROOT / "hf-home")
os.environ.pop("HF_TOKEN", None)
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Dask's LocalCluster spills into <tmp>/dask-scratch-space unless told otherwise (also in subprocesses).
os.environ["DASK_TEMPORARY_DIRECTORY"] = str(_SESSION_ROOT / "dask")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_unconfigure(config):
    """After the session's fixtures (the Prefect test server among them) have stopped."""
    shutil.rmtree(_SESSION_ROOT, ignore_errors=True)
