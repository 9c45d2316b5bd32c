"""The contenders' programs: ours (``train-pipeline``), the peers' (installed from Debian packages when
missing) and the other bench scripts that scenarios 6 and 7 run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from bench.harness.config import ROOT

TP = [sys.executable, "-m", "train_pipeline.cli"]  # same as the console script, without relying on PATH


def train_pipeline_cmd() -> list[str]:
    """This checkout's command, run by the real interpreter (``TP``, from the repository root).
    Not the ``train-pipeline`` on PATH: that may belong to another checkout, and on machines with
    pyenv it is a shim, a bash script that runs ``pyenv exec`` first (~50 ms per start that a
    user's installed command does not pay; the peers run no wrapper either)."""
    return TP


def compile_package() -> None:
    """Byte-compile our modules, as ``pip install`` does. An editable install does not, and where
    PYTHONDONTWRITEBYTECODE is set (these machines) every start would compile them again (~35 ms
    that no installed copy pays)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "resumable", "train_pipeline", "flows", "tasks"],
                   cwd=ROOT, check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})


def tool(name: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if not found:
        raise RuntimeError(f"{name} is not installed")
    return found


def ensure_packages() -> None:
    """nginx, aria2c, curl, wget from Debian packages when missing (as .ci/run does)."""
    missing = [t for t in ("nginx", "aria2c", "curl", "wget")
               if not (shutil.which(t) or os.path.exists(f"/usr/sbin/{t}"))]
    if not missing:
        return
    pkgs = ["aria2" if t == "aria2c" else t for t in missing]
    print(f"installing {' '.join(pkgs)} (apt-get)", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *pkgs], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def run_script(args: list[str]) -> str:
    """Run another bench script (``bench/bench_snapshot.py ...``), echo its output indented, return it."""
    print(f"  $ {' '.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    sys.stdout.write("".join(f"    {line}\n" for line in proc.stdout.splitlines()))
    if proc.returncode:
        raise RuntimeError(f"{args[0]} exited {proc.returncode}: {proc.stderr[-800:]}")
    return proc.stdout
