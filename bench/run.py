"""Issue 8 benchmarks: train-pipeline against curl, wget, aria2c, huggingface_hub and tar, one command.

    python bench/run.py                      # every scenario, 2 GiB file, 5 runs each (~25 min)
    python bench/run.py --quick              # 256 MiB, 3 runs, the long peers trimmed (~5 min)
    python bench/run.py --scenarios 1,2 --size 1G --runs 3

Sets up nginx on 127.0.0.1 (installs the Debian package if it is missing) with every temporary
path in a bench folder under /tmp, serves generated files, and runs each scenario with its peers
in the same run: contenders interleaved (order alternates run to run), each run started from the
same state (previous output removed, then a pause so freed memory has returned to the host: see
the field notes), medians reported with the ratio against the peer named by the target. Wall
time, CPU seconds (user+sys of the process tree) and peak RSS come from ``os.wait4`` on each
contender's process. Results also go to ``bench/out/results.json``. Never run by the tests.

Scenarios (issue 8):
  1  one file, 1 connection: ``train-pipeline fetch --hash`` vs curl -o, wget, aria2c -x1/-x8,
     curl -o && sha256sum
  2  nginx ``limit_rate 20m`` per connection: ``--connections 8`` vs aria2c -x8 -s8 (and curl once)
  3  resume: SIGKILL at random offsets; bytes nginx sent beyond the file size, per interruption,
     vs curl -C -
  4  1,000 files of 64 KiB: ``train-pipeline datasets download custom --urls ...`` vs aria2c -i -j8
  5  fully cached re-run of the flow (small and big dataset) vs a one-task Prefect flow
  6  Hub snapshot (~1 GiB): bench_snapshot.py (ours vs huggingface_hub.snapshot_download, kill at 50 %)
  7  extraction of a ~1 GiB tar.gz with ~10k files: bench_extract.py (ours vs tar -xf)
  8  ``train-pipeline fetch --help`` startup
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's engine, also when run before `pip install -e .`
from resumable.extract.atomic import remove as rm  # noqa: E402  (a tree, a file or a link)
OUT = ROOT / "bench" / "out"
WORK = Path(os.environ.get("BENCH_WORK", "/tmp/train-pipeline-bench"))
MIB = 1 << 20
PAUSE = 2.5  # seconds after deleting the previous output: the host takes freed memory back after ~2 s


# -- helpers -----------------------------------------------------------------------------------
def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("B").rstrip("I")
    return int(float(text[:-1]) * units[text[-1]]) if text and text[-1] in units else int(text)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def measure(cmd, *, env=None, cwd=None, shell: bool = False) -> dict:
    """Run ``cmd``: wall seconds, CPU seconds (user+sys of the process tree) and its peak RSS.

    Peak RSS comes from GNU time (``/usr/bin/time -f %M``) where present: a child forked from
    this Python process would otherwise inherit the parent's high-water mark.
    """
    if shell:
        cmd = ["sh", "-c", cmd]
    rss_file = None
    if os.path.exists("/usr/bin/time"):
        rss_file = WORK / f".rss-{os.getpid()}"
        cmd = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *cmd]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd or ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, status, ru = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        raise
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))[:300]} exited {proc.returncode}: {err[-800:]}")
    rss = ru.ru_maxrss / 1024
    if rss_file is not None:
        try:
            rss = int(rss_file.read_text().split()[-1]) / 1024
        except (OSError, ValueError, IndexError):
            pass
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mib": rss}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def make_random_file(path: Path, size: int) -> str:
    """A file of random bytes (kept between runs); returns its sha256 (cached beside it)."""
    meta = path.with_name(path.name + ".sha256")
    if path.is_file() and path.stat().st_size == size and meta.is_file():
        return meta.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 * MIB))
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    meta.write_text(h.hexdigest())
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()


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


class Nginx:
    """nginx on 127.0.0.1 serving WORK/www: ``/f/`` at full speed, ``/slow/`` capped at 20 MB/s per
    connection, ``/r50/`` at 50 MB/s (resume scenario). The access log records bytes sent per request."""

    def __init__(self, base: Path):
        self.base, self.www, self.port = base, base / "www", free_port()
        self.log = base / "access.log"
        self.proc = None

    def __enter__(self) -> "Nginx":
        ngx = self.base / "nginx"
        rm(ngx)
        (ngx / "tmp").mkdir(parents=True)
        self.www.mkdir(parents=True, exist_ok=True)
        conf = ngx / "nginx.conf"
        conf.write_text(f"""
daemon off;
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 2;
pid {ngx}/nginx.pid;
error_log {ngx}/error.log;
events {{ worker_connections 1024; }}
http {{
    log_format bench '$request_uri $status $bytes_sent $body_bytes_sent "$http_range"';
    access_log {self.log} bench;
    client_body_temp_path {ngx}/tmp; proxy_temp_path {ngx}/tmp; fastcgi_temp_path {ngx}/tmp;
    uwsgi_temp_path {ngx}/tmp; scgi_temp_path {ngx}/tmp;
    sendfile on; tcp_nopush on; keepalive_requests 100000;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{self.port};
        root {self.www};
        location /f/ {{ alias {self.www}/; }}
        location /slow/ {{ alias {self.www}/; limit_rate 20m; }}
        location /r50/ {{ alias {self.www}/; limit_rate 50m; }}
    }}
}}
""")
        self.log.write_text("")
        self.proc = subprocess.Popen([tool("nginx"), "-c", str(conf), "-p", str(ngx)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        try:
            wait_for_port(self.port)
        except RuntimeError:
            self.proc.kill()
            raise RuntimeError(f"nginx did not start: {self.proc.stderr.read().decode()[-500:]}")
        return self

    def url(self, name: str, location: str = "f") -> str:
        return f"http://127.0.0.1:{self.port}/{location}/{name}"

    def mark(self) -> int:
        return self.log.stat().st_size

    def sent_since(self, mark: int, settle: float = 0.3, paths: tuple[str, ...] | None = None) -> tuple[int, int]:
        """(bytes sent, requests) logged since ``mark`` (waits for the log to settle), only for the
        request paths in ``paths`` when given."""
        time.sleep(settle)
        with open(self.log, "rb") as f:
            f.seek(mark)
            lines = [ln.split() for ln in f.read().decode().splitlines() if ln.strip()]
        if paths is not None:
            lines = [ln for ln in lines if ln[0].split("?")[0] in paths]
        return sum(int(ln[2]) for ln in lines), len(lines)

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait()


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


def interleaved(contenders: dict, runs: int, prepare, label: str) -> dict:
    """Run every contender ``runs`` times, order alternating; returns name -> list of measures."""
    results = {name: [] for name in contenders}
    names = list(contenders)
    for i in range(runs):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            prepare(name)
            # No contender pays for another's disk writes (the generated file's, a deleted output's).
            os.sync()
            time.sleep(PAUSE)
            results[name].append(contenders[name]())
        print(f"  [{label}] run {i + 1}/{runs}: " + ", ".join(f"{n} {results[n][-1]['wall']:.2f}s" for n in names),
              flush=True)
    return results


def summarize(results: dict, base: str | None) -> dict:
    out = {}
    base_wall = statistics.median(r["wall"] for r in results[base]) if base else None
    for name, runs in results.items():
        wall = statistics.median(r["wall"] for r in runs)
        out[name] = {"wall": wall, "walls": [round(r["wall"], 3) for r in runs],
                     "cpu": statistics.median(r["cpu"] for r in runs),
                     "rss_mib": max(r["rss_mib"] for r in runs),
                     "ratio": wall / base_wall if base_wall else None}
    return out


def print_table(title: str, summary: dict, base: str | None, size: int | None = None) -> None:
    print(f"\n{title}")
    head = f"  {'contender':44s} {'median':>8s} {'MB/s':>7s} {'CPU s':>6s} {'RSS MiB':>8s}"
    print(head + (f" {'vs ' + base:>18s}" if base else ""))
    for name, s in summary.items():
        rate = f"{size / s['wall'] / 1e6:7.0f}" if size else f"{'':>7s}"
        ratio = f" {s['ratio']:17.2f}x" if base and s.get("ratio") is not None else ""
        print(f"  {name:44s} {s['wall']:7.2f}s {rate} {s['cpu']:6.2f} {s['rss_mib']:8.0f}{ratio}")


TP = [sys.executable, "-m", "train_pipeline.cli"]  # same as the console script, without relying on PATH


def train_pipeline_cmd() -> list[str]:
    exe = shutil.which("train-pipeline")
    return [exe] if exe else TP


# -- scenario 1: one big file ------------------------------------------------------------------
def scenario1(ngx: Nginx, big: str, digest: str, size: int, runs: int, res: Results) -> None:
    print(f"\n== 1: one {human(size)} file over one connection ==", flush=True)
    d = WORK / "s1"
    d.mkdir(parents=True, exist_ok=True)
    url, dest = ngx.url(big), d / big
    tp = train_pipeline_cmd()
    aria = [tool("aria2c"), "-q", "--allow-overwrite=true", "--auto-file-renaming=false", "--file-allocation=none",
            "-d", str(d), "-o", big]
    contenders = {
        "train-pipeline fetch --hash (1 connection)": lambda: measure(
            [*tp, "fetch", url, "-o", str(dest), "--hash", f"sha256:{digest}", "-q"]),
        "curl -o": lambda: measure([tool("curl"), "-sS", "-o", str(dest), url]),
        "wget -O": lambda: measure([tool("wget"), "-q", "-O", str(dest), url]),
        "aria2c -x1": lambda: measure([*aria, "-x1", url]),
        "aria2c -x8 -s8": lambda: measure([*aria, "-x8", "-s8", url]),
        "curl -o && sha256sum": lambda: measure(
            f"{tool('curl')} -sS -o {dest} {url} && sha256sum {dest} > /dev/null", shell=True),
    }

    def prepare(_name):
        for p in d.iterdir():
            rm(p)

    results = interleaved(contenders, runs, prepare, "1")
    prepare(None)
    s = summarize(results, "curl -o")
    ours = s["train-pipeline fetch --hash (1 connection)"]
    checks = {
        "vs curl -o (target <= 1.0)": ours["wall"] / s["curl -o"]["wall"],
        "vs curl -o && sha256sum (target <= 0.45)": ours["wall"] / s["curl -o && sha256sum"]["wall"],
        "peak RSS MiB (target <= 100)": ours["rss_mib"],
    }
    print_table(f"1: {human(size)}, medians of {runs}", s, "curl -o", size)
    for k, v in checks.items():
        print(f"  ours {k}: {v:.2f}")
    res.put("1", {"size": size, "runs": runs, "contenders": s, "targets": checks})


# -- scenario 2: per-connection cap --------------------------------------------------------------
def scenario2(ngx: Nginx, big: str, digest: str, size: int, runs: int, curl_runs: int, res: Results) -> None:
    print(f"\n== 2: server capping each connection at 20 MB/s, {human(size)} ==", flush=True)
    d = WORK / "s2"
    d.mkdir(parents=True, exist_ok=True)
    url, dest = ngx.url(big, "slow"), d / big
    tp = train_pipeline_cmd()
    aria = [tool("aria2c"), "-q", "--allow-overwrite=true", "--auto-file-renaming=false", "--file-allocation=none",
            "-d", str(d), "-o", big]
    contenders = {
        "train-pipeline fetch --connections 8 --hash": lambda: measure(
            [*tp, "fetch", url, "-o", str(dest), "--hash", f"sha256:{digest}", "--connections", "8", "-q"]),
        "aria2c -x8 -s8": lambda: measure([*aria, "-x8", "-s8", url]),
    }

    def prepare(_name):
        for p in d.iterdir():
            rm(p)

    results = interleaved(contenders, runs, prepare, "2")
    if curl_runs:
        curl = interleaved({"curl -o (1 connection)": lambda: measure([tool("curl"), "-sS", "-o", str(dest), url])},
                           curl_runs, prepare, "2")
        results.update(curl)
    prepare(None)
    s = summarize(results, "aria2c -x8 -s8")
    ours = s["train-pipeline fetch --connections 8 --hash"]
    throughput = s["aria2c -x8 -s8"]["wall"] / ours["wall"]
    checks = {"throughput vs aria2c -x8 -s8 (target >= 0.95)": throughput}
    print_table(f"2: limit_rate 20m, {human(size)}, medians of {runs}", s, "aria2c -x8 -s8", size)
    for k, v in checks.items():
        print(f"  ours {k}: {v:.2f}")
    res.put("2", {"size": size, "runs": runs, "contenders": s, "targets": checks})


# -- scenario 3: resume after interruptions ---------------------------------------------------------
def scenario3(ngx: Nginx, big: str, digest: str, size: int, kills: int, rounds: int, res: Results) -> None:
    print(f"\n== 3: resume after {kills} SIGKILLs at random offsets, {human(size)} at 50 MB/s ==", flush=True)
    d = WORK / "s3"
    d.mkdir(parents=True, exist_ok=True)
    url, dest = ngx.url(big, "r50"), d / big
    tp = train_pipeline_cmd()
    rng = random.Random(8)
    from resumable.state import part_path

    ours_part = part_path(dest)
    contenders = {
        "train-pipeline fetch --hash": ([*tp, "fetch", url, "-o", str(dest), "--hash", f"sha256:{digest}", "-q"],
                                        ours_part),
        "curl -C -": ([tool("curl"), "-sS", "-C", "-", "-o", str(dest), url], dest),
        "wget -c": ([tool("wget"), "-q", "-c", "-O", str(dest), url], dest),
    }
    out = {name: [] for name in contenders}
    for r in range(rounds):
        offsets = sorted(rng.uniform(0.05, 0.95) * size for _ in range(kills))
        for name, (cmd, growing) in contenders.items():
            for p in d.iterdir():
                rm(p)
            mark = ngx.mark()
            killed = 0
            for target in offsets:
                proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                while proc.poll() is None:
                    try:
                        if growing.stat().st_size >= target:
                            break
                    except FileNotFoundError:
                        pass
                    time.sleep(0.002)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    killed += 1
                proc.wait()
            time.sleep(0.3)
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            sent, requests = ngx.sent_since(mark, settle=0.5)
            ok = sha256_of(dest) == digest
            extra = sent - size
            out[name].append({"kills": killed, "sent": sent, "requests": requests, "extra": extra,
                              "per_kill_mib": extra / max(killed, 1) / MIB, "sha256_ok": ok})
            print(f"  [3] round {r + 1}: {name}: {killed} kills, {requests} requests, {extra / MIB:.2f} MiB re-sent "
                  f"({extra / max(killed, 1) / MIB:.2f} MiB per kill), sha256 {'ok' if ok else 'WRONG'}", flush=True)
    for p in d.iterdir():
        rm(p)
    s = {name: {"per_kill_mib_median": statistics.median(x["per_kill_mib"] for x in v),
                "per_kill_mib_max": max(x["per_kill_mib"] for x in v),
                "all_sha256_ok": all(x["sha256_ok"] for x in v), "rounds": v} for name, v in out.items()}
    print(f"\n3: bytes re-sent per interruption (nginx $bytes_sent - file size) / kills, {rounds} rounds of {kills}")
    for name, v in s.items():
        print(f"  {name:32s} median {v['per_kill_mib_median']:6.2f} MiB  max {v['per_kill_mib_max']:6.2f} MiB  "
              f"sha256 {'ok' if v['all_sha256_ok'] else 'WRONG'}")
    checks = {"MiB re-sent per interruption (target <= 1)": s["train-pipeline fetch --hash"]["per_kill_mib_max"]}
    print(f"  ours MiB re-sent per interruption, worst round (target <= 1): "
          f"{checks['MiB re-sent per interruption (target <= 1)']:.2f}")
    res.put("3", {"size": size, "kills": kills, "rounds": rounds, "contenders": s, "targets": checks})


# -- scenario 4: many small files ---------------------------------------------------------------------
def scenario4(ngx: Nginx, count: int, runs: int, res: Results) -> None:
    print(f"\n== 4: {count} files of 64 KiB ==", flush=True)
    small = ngx.www / "small"
    if len(list(small.glob("*.bin"))) != count:
        rm(small)
        small.mkdir(parents=True)
        for i in range(count):
            (small / f"s{i:05d}.bin").write_bytes(os.urandom(64 << 10))
    urls = [ngx.url(f"small/s{i:05d}.bin") for i in range(count)]
    d = WORK / "s4"
    d.mkdir(parents=True, exist_ok=True)
    listing = WORK / "s4-urls.txt"
    listing.write_text("\n".join(urls) + "\n")
    tp = train_pipeline_cmd()
    contenders = {
        "train-pipeline datasets download custom --urls": lambda: measure(
            [*tp, "datasets", "download", "custom", "--urls", *urls, "--data-dir", str(d / "ours"), "--no-extract",
             "--quiet"]),
        "aria2c -i LIST -j8": lambda: measure(
            [tool("aria2c"), "-q", "-i", str(listing), "-j8", "-d", str(d / "aria2c"), "--allow-overwrite=true",
             "--auto-file-renaming=false", "--file-allocation=none"]),
        "wget -i LIST": lambda: measure([tool("wget"), "-q", "-i", str(listing), "-P", str(d / "wget")]),
    }

    def prepare(_name):
        for p in d.iterdir():
            rm(p)

    results = interleaved(contenders, runs, prepare, "4")
    got = sum(1 for p in (d / "ours").rglob("*.bin")) if (d / "ours").exists() else None
    prepare(None)
    s = summarize(results, "aria2c -i LIST -j8")
    checks = {"vs aria2c -i -j8 (target <= 2.0)": s["train-pipeline datasets download custom --urls"]["ratio"]}
    print_table(f"4: {count} x 64 KiB, medians of {runs}", s, "aria2c -i LIST -j8")
    for k, v in checks.items():
        print(f"  ours {k}: {v:.2f}")
    res.put("4", {"files": count, "runs": runs, "contenders": s, "targets": checks, "last_ours_files": got})


# -- scenario 5: fully cached re-run of the flow ------------------------------------------------------
ONE_TASK_FLOW = '''
import sys
from prefect import flow, task

@task
def step(x):
    return x

@flow(name="one-task")
def one_task():
    return step(1)

if __name__ == "__main__":
    one_task()
'''


def scenario5(ngx: Nginx, big: str, digest: str, size: int, runs: int, res: Results) -> None:
    print(f"\n== 5: fully cached re-run of the flow (small dataset, {human(size)} dataset) ==", flush=True)
    d = WORK / "s5"
    rm(d)
    d.mkdir(parents=True)
    small_digest = make_random_file(ngx.www / "flow-small.bin", 1 * MIB)
    prefect_home = d / "prefect-home"
    env = {**os.environ, "PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "WARNING", "TRAIN_PIPELINE_RESULT_STORAGE": str(d / "results-storage")}
    configs = {}
    for name, fname, dg, sz in (("small", "flow-small.bin", small_digest, MIB), ("big", big, digest, size)):
        cfg = d / f"{name}.yaml"
        cfg.write_text(json.dumps({
            "datasets": [{"name": f"bench-{name}", "files": [{"url": ngx.url(fname), "size": sz,
                                                              "hash": f"sha256:{dg}"}]}],
            "train": None, "data_dir": str(d / f"data-{name}"), "models_cache": str(d / "models"),
            "results_dir": str(d / f"results-{name}")}))
        configs[name] = cfg
    one_task = d / "one_task_flow.py"
    one_task.write_text(ONE_TASK_FLOW)
    flow_cmd = [sys.executable, str(ROOT / "flows" / "pipeline.py"), "--config"]
    # First runs: download (and warm PREFECT_HOME, so the measured runs all find it initialised).
    for name, cfg in configs.items():
        t0 = time.perf_counter()
        measure([*flow_cmd, str(cfg)], env=env)
        print(f"  [5] first run ({name}): {time.perf_counter() - t0:.1f} s", flush=True)
    measure([sys.executable, str(one_task)], env=env)
    sent = {}
    contenders = {f"flow re-run, {name} dataset": (lambda c=cfg: measure([*flow_cmd, str(c)], env=env))
                  for name, cfg in configs.items()}
    contenders["one-task Prefect flow"] = lambda: measure([sys.executable, str(one_task)], env=env)
    mark = ngx.mark()
    served = ("/f/flow-small.bin", f"/f/{big}")
    results = {name: [] for name in contenders}
    names = list(contenders)
    for i in range(runs):
        for name in (names if i % 2 == 0 else names[::-1]):
            m0 = ngx.mark()
            results[name].append(contenders[name]())
            sent.setdefault(name, []).append(ngx.sent_since(m0, settle=0.1, paths=served)[0])
        print(f"  [5] run {i + 1}/{runs}: " + ", ".join(f"{n} {results[n][-1]['wall']:.2f}s" for n in names),
              flush=True)
    total_sent = ngx.sent_since(mark, paths=served)[0]
    s = summarize(results, "one-task Prefect flow")
    for name in s:
        s[name]["bytes_sent"] = max(sent.get(name, [0]))
    small, bigr, one = (s["flow re-run, small dataset"], s["flow re-run, big dataset"], s["one-task Prefect flow"])
    checks = {
        "bytes transferred by the re-runs (target 0)": total_sent,
        "big re-run / small re-run (target <= 1.2)": bigr["wall"] / small["wall"],
        "big re-run - one-task flow, s (target <= 2)": bigr["wall"] - one["wall"],
    }
    print_table(f"5: cached re-runs (temporary local Prefect server, warm PREFECT_HOME), medians of {runs}", s,
                "one-task Prefect flow")
    for k, v in checks.items():
        print(f"  ours {k}: {v:.2f}")
    res.put("5", {"size": size, "runs": runs, "contenders": s, "targets": checks})


# -- scenarios 6 and 7: the existing benches ------------------------------------------------------------
def run_script(args: list[str]) -> str:
    print(f"  $ {' '.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    sys.stdout.write("".join(f"    {line}\n" for line in proc.stdout.splitlines()))
    if proc.returncode:
        raise RuntimeError(f"{args[0]} exited {proc.returncode}: {proc.stderr[-800:]}")
    return proc.stdout


def scenario6(size: str, runs: int, res: Results) -> None:
    print(f"\n== 6: Hub snapshot of a {size} repository (bench/bench_snapshot.py) ==", flush=True)
    out = run_script(["bench/bench_snapshot.py", "--size", size, "--runs", str(runs)])
    rows = {}
    for m in re.finditer(r"^\s*(\S+): fresh\s+([\d.]+) s .*?cached\s+([\d.]+) s, (\d+) requests; after kill at 50 %:"
                         r"\s+([\d.]+) MiB re-sent", out, re.M):
        rows[m.group(1)] = {"fresh_wall": float(m.group(2)), "cached_wall": float(m.group(3)),
                            "cached_requests": int(m.group(4)), "resent_after_kill_mib": float(m.group(5))}
    ratio = float(re.search(r"fresh wall ratio ours / huggingface_hub: ([\d.]+)", out).group(1))
    checks = {"fresh wall vs snapshot_download (target <= 1.0)": ratio}
    if "ours" in rows:
        checks["ours MiB re-sent after kill at 50 % (resumes)"] = rows["ours"]["resent_after_kill_mib"]
    if "huggingface_hub" in rows:
        checks["huggingface_hub MiB re-sent after kill at 50 % (restarts)"] = rows["huggingface_hub"][
            "resent_after_kill_mib"]
    res.put("6", {"size": size, "runs": runs, "contenders": rows, "targets": checks, "output": out})


def scenario7(size: str, files: int, runs: int, res: Results) -> None:
    print(f"\n== 7: extraction of a {size} tar.gz with {files} files (bench/bench_extract.py) ==", flush=True)
    out = run_script(["bench/bench_extract.py", "--size", size, "--files", str(files), "--runs", str(runs)])
    rows = {}
    for m in re.finditer(r"^\s*(.{28}) +([\d.]+)s +([\d.]+)x(?: +([\d.]+)s +([\d.]+)x)?", out, re.M):
        rows[m.group(1).strip()] = {"wall": float(m.group(2)), "ratio": float(m.group(3))}
        if m.group(4):
            rows[m.group(1).strip()].update(cpu=float(m.group(4)), cpu_ratio=float(m.group(5)))
    checks = {f"{name} vs tar -xf (target <= 1.3)": v["ratio"] for name, v in rows.items() if name != "tar -xf"}
    res.put("7", {"size": size, "files": files, "runs": runs, "contenders": rows, "targets": checks, "output": out})


# -- 8: startup ----------------------------------------------------------------------------------------------
def startup(runs: int, res: Results) -> None:
    print("\n== 8: train-pipeline fetch --help ==", flush=True)
    tp = train_pipeline_cmd()
    measure([*tp, "fetch", "--help"])  # warm the bytecode cache
    walls = [measure([*tp, "fetch", "--help"]) for _ in range(runs)]
    s = summarize({"train-pipeline fetch --help": walls}, None)
    print_table(f"8: startup, medians of {runs}", s, None)
    checks = {"seconds (target <= 0.5)": s["train-pipeline fetch --help"]["wall"]}
    res.put("8", {"runs": runs, "contenders": s, "targets": checks})


TARGETS = {  # scenario -> (how ours is compared, target) as in issue 8
    "1": "≤ 1.0× curl -o; ≤ 0.45× curl -o && sha256sum; peak RSS ≤ 100 MiB",
    "2": "≥ 0.95× aria2c -x8 -s8 throughput",
    "3": "≤ 1 MiB re-transferred per interruption",
    "4": "≤ 2× aria2c -i -j8",
    "5": "0 bytes; 2 GiB re-run ≤ 1.2× small; ≤ one-task flow + 2 s",
    "6": "≤ 1.0× snapshot_download; resumes after a kill",
    "7": "≤ 1.3× tar -xf",
    "8": "≤ 0.5 s",
}


def markdown(data: dict) -> str:
    """The results as Markdown tables (bench/out/results.md; the README's table comes from it)."""
    m = data["machine"]
    lines = [f"Measured {data['date']} on {m['cpus']} cores ({m['cpu']}), {m['memory']} RAM, Python {m['python']}, "
             f"Linux {m['kernel']}; big file {human(data.get('size', 0))}; load average at start "
             f"{m.get('loadavg_at_start')}, at end {data.get('loadavg_at_end')}.", ""]
    lines += ["| scenario | check | ours | target | measured |", "|---|---|---|---|---|"]
    for key, sc in data["scenarios"].items():
        for name, value in sc.get("targets", {}).items():
            shown = f"{value:.2f}" if isinstance(value, float) else str(value)
            when = sc.get("date", data["date"]) + (f", load {sc['loadavg'][0]}" if sc.get("loadavg") else "")
            lines.append(f"| {key} | {name} | {shown} | {TARGETS.get(key, '')} | {when} |")
    for key, sc in data["scenarios"].items():
        rows = sc.get("contenders", {})
        if not rows:
            continue
        lines += ["", f"Scenario {key}:", ""]
        first = next(iter(rows.values()))
        if isinstance(first, dict) and "walls" in first:
            lines += ["| contender | median wall | runs | CPU s | peak RSS MiB | ratio |", "|---|---|---|---|---|---|"]
            for name, r in rows.items():
                ratio = f"{r['ratio']:.2f}×" if r.get("ratio") is not None else ""
                lines.append(f"| {name} | {r['wall']:.2f} s | {', '.join(f'{w:.2f}' for w in r['walls'])} | "
                             f"{r['cpu']:.2f} | {r['rss_mib']:.0f} | {ratio} |")
        else:
            lines += ["| contender | " + " | ".join(k for k in first if k != "rounds") + " |",
                      "|---|" + "---|" * len([k for k in first if k != "rounds"])]
            for name, r in rows.items():
                vals = [f"{v:.2f}" if isinstance(v, float) else str(v) for k, v in r.items() if k != "rounds"]
                lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="256 MiB, 3 runs, fewer kills, curl skipped in scenario 2")
    ap.add_argument("--scenarios", default="1,2,3,4,5,6,7,8", help="comma-separated list (default all: 1-8)")
    ap.add_argument("--size", help="size of the big file (default 2G; --quick: 256M)")
    ap.add_argument("--runs", type=int, help="runs per contender (default 5; --quick: 3)")
    ap.add_argument("--markdown", action="store_true", help="only print bench/out/results.json as Markdown")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads((OUT / "results.json").read_text())), end="")
        return 0
    wanted = {int(x) for x in args.scenarios.split(",") if x.strip()}
    size = parse_size(args.size or ("256M" if args.quick else "2G"))
    runs = args.runs or (3 if args.quick else 5)
    os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
    free = shutil.disk_usage(WORK.parent).free
    if free < 4 * size:
        print(f"warning: {human(free)} free under {WORK.parent}; the scenarios need about {human(4 * size)}",
              file=sys.stderr)
    ensure_packages()
    WORK.mkdir(parents=True, exist_ok=True)
    res = Results(args, size)
    print(f"machine: {res.data['machine']}; big file {human(size)}; {runs} runs; work dir {WORK}", flush=True)
    with Nginx(WORK) as ngx:
        big = f"big-{size}.bin"
        digest = None
        if wanted & {1, 2, 3, 5}:
            t0 = time.perf_counter()
            digest = make_random_file(ngx.www / big, size)
            print(f"served {big} ({human(size)}, sha256 {digest[:16]}..., ready in {time.perf_counter() - t0:.1f} s)",
                  flush=True)
        if 1 in wanted:
            scenario1(ngx, big, digest, size, runs, res)
        if 2 in wanted:
            scenario2(ngx, big, digest, size, runs, 0 if args.quick else 1, res)
        if 3 in wanted:
            scenario3(ngx, big, digest, size, kills=3 if args.quick else 5, rounds=1, res=res)
        if 4 in wanted:
            scenario4(ngx, 1000, runs, res)
        if 5 in wanted:
            scenario5(ngx, big, digest, size, runs, res)
    if 6 in wanted:
        scenario6("256M" if args.quick else "1G", 2 if args.quick else 3, res)
    if 7 in wanted:
        scenario7("200M" if args.quick else "1G", 2000 if args.quick else 10_000, 3, res)
    if 8 in wanted:
        startup(7, res)
    res.data["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    res.save()
    print("\n== targets ==")
    for key, sc in res.data["scenarios"].items():
        for name, value in sc.get("targets", {}).items():
            print(f"  {key}: {name}: {value:.2f}" if isinstance(value, float) else f"  {key}: {name}: {value}")
    (OUT / "results.md").write_text(markdown(res.data))
    print(f"\nresults: {OUT / 'results.json'}, {OUT / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
