"""The dashboard in a real browser: `streamlit run` on a free loopback port, headless Chromium opens the
propagation view, and the screenshot and the rendered DOM are checked.

Streamlit draws the page from a websocket after load, so `chromium --screenshot` / `--dump-dom` alone capture the
empty shell; the test drives Chromium over the DevTools protocol instead (websockets, a Streamlit dependency) and
waits until the chart is drawn. Chromium comes from Debian (`scripts/setup.sh --test` installs it); without it
the test fails and says so. Set DASHBOARD_SCREENSHOT_DIR to keep the screenshot.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO

FIX = REPO / "tests" / "fixtures" / "dashboard_runs"
RUN = "targeted_ads-20261126-024634"
TEACHER_RGB = (0xE4, 0x57, 0x2E)  # dashboard.charts.ROLE_COLORS["teacher"]
STUDENT_RGB = (0x2E, 0x86, 0xAB)


def chromium_binary() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome",
                 "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen) -> str:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


@pytest.fixture
def streamlit_server(tmp_path):
    port = free_port()
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard" / "app.py"),
         "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none", "--", str(FIX)],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_http(f"http://127.0.0.1:{port}/_stcore/health", 60, proc).strip() == "ok"
        yield f"http://127.0.0.1:{port}", tmp_path / "streamlit.log"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class Browser:
    """Just enough of the Chrome DevTools protocol: navigate, evaluate, screenshot."""

    def __init__(self, binary: str, profile: Path, width: int = 1400, height: int = 1800):
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ws = None
        t0 = time.time()
        while time.time() - t0 < 60 and ws is None:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            ws = m.group(1) if m else None
        if ws is None:
            self.close()
            raise RuntimeError("chromium did not start its DevTools endpoint")
        port = re.search(r":(\d+)/", ws).group(1)
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(p for p in pages if p["type"] == "page")
        from websockets.sync.client import connect

        self.conn = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=20)
        self.ids = itertools.count(1)
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def call(self, method: str, **params):
        i = next(self.ids)
        self.conn.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.conn.recv(timeout=60))
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expr: str):
        return self.call("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value")

    def close(self):
        try:
            self.conn.close()
        except Exception:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


CHART_DRAWN = """(() => {
  const sel = '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg';
  const els = [...document.querySelectorAll(sel)];
  return els.filter(e => e.getBoundingClientRect().width > 100 && e.getBoundingClientRect().height > 100).length;
})()"""
RUNNING = "!!document.querySelector('[data-testid=\"stStatusWidget\"]')"


@pytest.mark.slow
def test_propagation_view_renders_in_chromium(streamlit_server, tmp_path):
    binary = chromium_binary()
    if binary is None:
        pytest.fail("no chromium binary on PATH: run scripts/setup.sh --test (it installs Debian's chromium) or "
                    "apt-get install chromium")
    import numpy as np
    from PIL import Image, ImageStat

    base, server_log = streamlit_server
    browser = Browser(binary, tmp_path / "profile")
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"{base}/?view=propagation&run={RUN}")
        t0, drawn, settled_since = time.time(), 0, None
        while time.time() - t0 < 60:
            drawn, running = browser.js(CHART_DRAWN), browser.js(RUNNING)
            if drawn >= 2 and not running:
                settled_since = settled_since or time.time()
                if time.time() - settled_since > 1.5:  # let Vega finish painting
                    break
            else:
                settled_since = None
            time.sleep(0.3)
        png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        text = browser.js("document.body.innerText") or ""
        dom = browser.js("document.documentElement.outerHTML") or ""
    finally:
        browser.close()
    keep = os.environ.get("DASHBOARD_SCREENSHOT_DIR")
    shot = Path(keep) / "propagation.png" if keep else tmp_path / "propagation.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.write_bytes(png)
    log = server_log.read_text()
    assert drawn >= 2, f"charts not drawn within 60 s; screenshot {shot}\n{text[:2000]}\n{log[-2000:]}"

    # the page rendered the propagation view of the chosen run, with no exception anywhere
    assert "Propagation" in text and "targeted_ads" in text and "student:sft" in text, text[:2000]
    assert "Amplification" in text and "1.13×" in text
    for bad in ("Traceback", "Error", "Exception"):
        assert bad not in text, f"{bad!r} in the page text:\n{text[:3000]}"
    assert 'data-testid="stException"' not in dom and 'data-testid="stAlertContentError"' not in dom
    assert "Traceback" not in log, log[-3000:]

    # the screenshot is not blank: enough non-white pixels and contrast, and the teacher's and the student's
    # bars (their role colours) are actually painted
    img = Image.open(io.BytesIO(png)).convert("RGB")
    assert img.size == (1400, 1800)
    a = np.asarray(img).astype(int)
    nonwhite = float((a.min(axis=2) < 235).mean())
    std = ImageStat.Stat(img.convert("L")).stddev[0]
    assert nonwhite > 0.01 and std > 8, (nonwhite, std, shot)  # a blank page: 0.0 and 0.0
    teacher = int((np.abs(a - TEACHER_RGB).max(axis=2) <= 40).sum())
    student = int((np.abs(a - STUDENT_RGB).max(axis=2) <= 40).sum())
    assert teacher > 2000 and student > 2000, (teacher, student, shot)
