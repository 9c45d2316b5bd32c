"""nginx on 127.0.0.1, serving the generated files, and its access log: bytes sent per request."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from bench.harness.tools import tool
from resumable.extract.atomic import remove as rm  # a tree, a file or a link


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


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made at run time: (certificate, key)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def nginx_conf(ngx: Path, log: Path, www: Path, port: int, tls_port: int) -> str:
    """Every temporary path under ``ngx``; ``$bytes_sent`` per request in ``log``; the same files
    over TLS on ``tls_port`` (the certificate in ``ngx``)."""
    return f"""
daemon off;
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 2;
pid {ngx}/nginx.pid;
error_log {ngx}/error.log;
events {{ worker_connections 1024; }}
http {{
    log_format bench '$request_uri $status $bytes_sent $body_bytes_sent "$http_range"';
    access_log {log} bench;
    client_body_temp_path {ngx}/tmp; proxy_temp_path {ngx}/tmp; fastcgi_temp_path {ngx}/tmp;
    uwsgi_temp_path {ngx}/tmp; scgi_temp_path {ngx}/tmp;
    sendfile on; tcp_nopush on; keepalive_requests 100000;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {www};
        location /f/ {{ alias {www}/; }}
        location /slow/ {{ alias {www}/; limit_rate 20m; }}
        location /r50/ {{ alias {www}/; limit_rate 50m; }}
    }}
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {ngx}/cert.pem;
        ssl_certificate_key {ngx}/key.pem;
        root {www};
        location /f/ {{ alias {www}/; }}
    }}
}}
"""


class Nginx:
    """nginx on 127.0.0.1 serving WORK/www: ``/f/`` at full speed, ``/slow/`` capped at 20 MB/s per
    connection, ``/r50/`` at 50 MB/s (resume scenario); ``/f/`` also over TLS (``tls_url``, a
    certificate made at start). The access log records bytes sent per request."""

    def __init__(self, base: Path):
        self.base, self.www, self.port, self.tls_port = base, base / "www", free_port(), free_port()
        self.log = base / "access.log"
        self.proc = None

    def __enter__(self) -> "Nginx":
        ngx = self.base / "nginx"
        rm(ngx)
        (ngx / "tmp").mkdir(parents=True)
        self.www.mkdir(parents=True, exist_ok=True)
        self.cert, _ = make_certificate(ngx)
        conf = ngx / "nginx.conf"
        conf.write_text(nginx_conf(ngx, self.log, self.www, self.port, self.tls_port))
        self.log.write_text("")
        self.proc = subprocess.Popen([tool("nginx"), "-c", str(conf), "-p", str(ngx)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        try:
            wait_for_port(self.port)
            wait_for_port(self.tls_port)
        except RuntimeError:
            self.proc.kill()
            raise RuntimeError(f"nginx did not start: {self.proc.stderr.read().decode()[-500:]}")
        return self

    def url(self, name: str, location: str = "f") -> str:
        return f"http://127.0.0.1:{self.port}/{location}/{name}"

    def tls_url(self, name: str) -> str:
        """The same file over HTTPS (trust ``self.cert``)."""
        return f"https://127.0.0.1:{self.tls_port}/f/{name}"

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
