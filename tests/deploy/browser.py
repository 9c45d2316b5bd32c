"""Headless Chromium driven through its DevTools protocol (``websockets``, which Prefect already
depends on): enough to open a page, wait for what its JavaScript renders, click, and take a
screenshot. No browser download, no driver: the Debian ``chromium`` package (.ci/run installs it)."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium with one page; ``with Browser() as page: ...``."""

    def __init__(self, width: int = 1280, height: int = 900, timeout: float = 30):
        self.width, self.height, self.timeout = width, height, timeout

    def __enter__(self) -> "Page":
        from websockets.sync.client import connect

        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("Chromium is not installed")
        self._profile = tempfile.mkdtemp(prefix="train-pipeline-chromium-")
        args = [binary, "--headless", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--remote-debugging-port=0", f"--user-data-dir={self._profile}",
                f"--window-size={self.width},{self.height}", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to sandbox as root
        # Chromium keeps scratch folders (org.chromium.Chromium.*) in TMPDIR and never removes them:
        # inside the profile, they go with it.
        # A session of its own: its helper processes (network service, renderer) go with it at the end.
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      env={**os.environ, "TMPDIR": self._profile}, start_new_session=True)
        try:  # whatever fails from here on, Chromium and its profile go
            port_file = Path(self._profile) / "DevToolsActivePort"
            deadline = time.monotonic() + self.timeout
            while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("Chromium did not start (no DevToolsActivePort)")
                time.sleep(0.05)
            port = int(port_file.read_text().splitlines()[0])
            self._page = Page(connect(f"ws://127.0.0.1:{port}{self._page_path(port)}", max_size=None), self.timeout)
            self._page.call("Page.enable")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self._page

    def _page_path(self, port: int) -> str:
        import urllib.request

        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages:
                    return "/" + pages[0]["webSocketDebuggerUrl"].split("/", 3)[3]
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Chromium has no page to drive")
            time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        page = getattr(self, "_page", None)
        if page is not None:
            page.close()
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        # Chromium's helpers outlive it for a moment and write into the profile as they go (its network
        # service saves "Network Persistent State"): the rest of its group goes before the profile does.
        _kill_group(self._proc.pid)
        for _ in range(3):  # a file written while the folder was emptied makes its removal fail: again
            shutil.rmtree(self._profile, ignore_errors=True)
            if not os.path.lexists(self._profile):
                break
            time.sleep(0.2)


def _kill_group(pgid: int, timeout: float = 10) -> None:
    """SIGKILL what is left of process group ``pgid``, and wait until no member runs (a zombie whose
    new parent has not reaped it yet counts as gone)."""
    import signal

    deadline = time.monotonic() + timeout
    while _group_members(pgid) and time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _group_members(pgid: int) -> list[int]:
    """The pids of group ``pgid``'s members that have not exited (from /proc)."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                state, _ppid, pgrp = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[:3]
            except (OSError, ValueError):
                continue
            if int(pgrp) == pgid and state != "Z":
                members.append(int(entry.name))
    return members


class Page:
    def __init__(self, ws, timeout: float):
        self.ws, self.timeout = ws, timeout
        self._ids = itertools.count(1)

    def call(self, method: str, **params):
        n = next(self._ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=self.timeout))
            if msg.get("id") == n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression[:80]}: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for(self, expression: str, what: str, timeout: float | None = None):
        """Poll ``expression`` until it is truthy; its value. AssertionError naming ``what`` and
        the page's text when it never is."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                value = self.js(expression)
            except RuntimeError:
                value = None  # the page is navigating
            if value:
                return value
            if time.monotonic() > deadline:
                text = self.js("document.body ? document.body.innerText.slice(0, 1500) : ''")
                raise AssertionError(f"the page never showed {what}; url {self.js('location.href')}; text:\n{text}")
            time.sleep(0.25)

    def click_text(self, text: str, inside: str = "*") -> str:
        """Click the innermost element showing exactly ``text`` (its closest ``inside`` ancestor,
        e.g. ``a`` for a card that is a link) once the page shows it (a page that is still
        rendering, on a busy machine, may not yet); what was clicked."""
        return self.wait_for(f"""(() => {{
            const leaf = Array.from(document.querySelectorAll('*'))
                .find(e => e.children.length === 0 && e.textContent.trim() === {json.dumps(text)});
            const target = leaf && leaf.closest({json.dumps(inside)});
            if (!target) return '';
            target.scrollIntoView();
            target.click();
            return target.tagName + ' ' + (target.href || '');
        }})()""", f"an element showing {text!r} inside {inside!r}")

    def screenshot(self, path: Path) -> Path:
        shot = self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass
