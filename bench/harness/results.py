"""bench/out/results.json: this run's machine, options and scenarios, merged with an earlier run's."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone

from bench.harness.config import OUT
from bench.harness.units import human


class Results:
    """bench/out/results.json. A run of some scenarios keeps the other scenarios' entries of an
    earlier run with the same file size (each entry carries its own date and load average)."""

    def __init__(self, args, size: int):
        self.data = {"date": now(), "machine": machine(), "args": vars(args), "size": size, "scenarios": {}}
        try:
            old = json.loads((OUT / "results.json").read_text())
            if old.get("size") == size and old.get("machine", {}).get("cpus") == os.cpu_count():
                self.data["scenarios"] = {k: v for k, v in old.get("scenarios", {}).items()
                                          if k in {"1", "2", "3", "4", "5", "6", "7", "8"}}
        except (OSError, ValueError, AttributeError):
            pass

    def put(self, key: str, value) -> None:
        value = {"date": now(), "loadavg": [round(x, 2) for x in os.getloadavg()], **value}
        self.data["scenarios"][key] = value
        self.data["scenarios"] = dict(sorted(self.data["scenarios"].items()))
        self.save()

    def save(self) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "results.json").write_text(json.dumps(self.data, indent=2))


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def machine() -> dict:
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory": human(mem), "python": platform.python_version(),
            "kernel": platform.release(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}
