"""The dashboard in a real browser, as a new researcher opens it at 1400 px: the command `python -m dashboard`
builds (``dashboard.__main__.command``) serves the fixture runs on a free loopback port, headless Chromium opens the
views, and the screenshots and the rendered DOM are checked: the propagation view's charts are painted (the
amplification's log axis has a tick at 1, the undefined ratio is written out), the overview's key columns lie
within the viewport, and the distillation set highlights the injected span in a <mark>.

Streamlit draws the page from a websocket after load, so `chromium --screenshot` / `--dump-dom` alone capture the
empty shell; the test drives Chromium over the DevTools protocol instead (websockets, a Streamlit dependency) and
waits until the page is drawn. Chromium comes from Debian (`scripts/setup.sh --test` installs it); without it
the tests fail and say so. Set DASHBOARD_SCREENSHOT_DIR to keep the screenshots.
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
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO

FIX = REPO / "tests" / "fixtures" / "dashboard_runs"
RUN = "targeted_ads-20261126-024634"
DEFENDED = "targeted_ads_defended-20261126-070000"
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


@pytest.fixture(scope="module")
def streamlit_server(tmp_path_factory):
    """One server for the module, started with the command `python -m dashboard FIX ...` runs."""
    from dashboard.__main__ import command

    tmp = tmp_path_factory.mktemp("streamlit")
    port = free_port()
    log = open(tmp / "streamlit.log", "w")
    cmd = command([str(FIX), "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port",
                   str(port), "--server.fileWatcherType", "none"])
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_http(f"http://127.0.0.1:{port}/_stcore/health", 60, proc).strip() == "ok"
        yield f"http://127.0.0.1:{port}", tmp / "streamlit.log"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def chromium() -> str:
    binary = chromium_binary()
    if binary is None:
        pytest.fail("no chromium binary on PATH: run scripts/setup.sh --test (it installs Debian's chromium) or "
                    "apt-get install chromium")
    return binary


def save_shot(png: bytes, name: str, tmp_path: Path) -> Path:
    keep = os.environ.get("DASHBOARD_SCREENSHOT_DIR")
    shot = Path(keep) / name if keep else tmp_path / name
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.write_bytes(png)
    return shot


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
# per chart: its axis titles and axis labels, and every text Vega drew (the charts render as SVG)
CHART_TEXT = """(() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"] svg')].map(svg => ({
  titles: [...svg.querySelectorAll('.role-axis-title text')].map(t => t.textContent),
  labels: [...svg.querySelectorAll('.role-axis-label text')].map(t => t.textContent),
  texts: [...svg.querySelectorAll('text')].map(t => t.textContent)})))()"""


def settle(browser: Browser, ready: str, timeout: float = 60) -> bool:
    """Wait until the JS expression ``ready`` is truthy and Streamlit has stopped running, for 1.5 s."""
    t0, since = time.time(), None
    while time.time() - t0 < timeout:
        if browser.js(ready) and not browser.js(RUNNING):
            since = since or time.time()
            if time.time() - since > 1.5:  # let Vega finish painting
                return True
        else:
            since = None
        time.sleep(0.3)
    return False


def page_problems(text: str, dom: str, log: str, words: tuple[str, ...] = ("Traceback", "Error", "Exception")):
    for bad in words:
        assert bad not in text, f"{bad!r} in the page text:\n{text[:3000]}"
    assert 'data-testid="stException"' not in dom and 'data-testid="stAlertContentError"' not in dom
    assert "Traceback" not in log, log[-3000:]
    assert "Deploy" not in text  # python -m dashboard: --client.toolbarMode minimal


@pytest.mark.slow
def test_propagation_view_renders_in_chromium(streamlit_server, tmp_path):
    import numpy as np
    from PIL import Image, ImageStat

    base, server_log = streamlit_server
    browser = Browser(chromium(), tmp_path / "profile")
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"{base}/?view=propagation&run={RUN}")
        settle(browser, f"{CHART_DRAWN} >= 2")
        drawn = browser.js(CHART_DRAWN)
        png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        text = browser.js("document.body.innerText") or ""
        dom = browser.js("document.documentElement.outerHTML") or ""
        charts = browser.js(CHART_TEXT) or []
    finally:
        browser.close()
    shot = save_shot(png, "propagation.png", tmp_path)
    log = server_log.read_text()
    assert drawn >= 2, f"charts not drawn within 60 s; screenshot {shot}\n{text[:2000]}\n{log[-2000:]}"

    # the page rendered the propagation view of the chosen run, with no exception anywhere
    assert "Propagation" in text and "targeted_ads" in text and "student:sft" in text, text[:2000]
    assert "Amplification" in text and "1.13×" in text
    page_problems(text, dom, log)

    # the amplification chart: a log axis with a tick labelled 1 (the dashed rule's value); the run's undefined ratio
    # (teacher rate 0 on the other tasks) is written as text instead of a whisker
    amp = next(c for c in charts if "student rate / teacher rate (log)" in c["titles"])
    assert "1" in amp["labels"] and {"0.1", "10"} <= set(amp["labels"]), amp
    assert "1.13×" in amp["texts"] and "undefined" in amp["texts"], amp

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


KEY_HEADERS = """(() => {
  const t = document.querySelector('table[data-table="runs-overview"]');
  if (!t) return null;
  const box = e => { const r = e.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top,
                                                                   bottom: r.bottom, width: r.width}; };
  const out = {wrap: box(t.parentElement), cols: {}, cells: [...t.querySelectorAll('td')].map(td => td.innerText)};
  for (const th of t.querySelectorAll('th')) out.cols[th.dataset.col] = {...box(th), text: th.innerText};
  return out;
})()"""


@pytest.mark.slow
def test_overview_key_columns_fit_the_viewport(streamlit_server, tmp_path):
    """At 1400 x 1000 the teacher's and the student's target rate with their intervals and the amplification are on
    screen without scrolling: their headers' boxes lie inside the viewport and inside the table's scroll area."""
    base, server_log = streamlit_server
    browser = Browser(chromium(), tmp_path / "profile", width=1400, height=1000)
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"{base}/?view=overview")
        settle(browser, "!!document.querySelector('table[data-table=\"runs-overview\"] td')")
        got = browser.js(KEY_HEADERS)
        png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        text = browser.js("document.body.innerText") or ""
        dom = browser.js("document.documentElement.outerHTML") or ""
    finally:
        browser.close()
    shot = save_shot(png, "overview.png", tmp_path)
    assert got, f"no overview table; screenshot {shot}\n{text[:2000]}"
    page_problems(text, dom, server_log.read_text(), ("Traceback",))  # a failed fixture run quotes its error
    wrap = got["wrap"]
    for col in ("run", "teacher_target", "student_target", "amplification_target", "teacher_sampled",
                "student_sampled"):
        b = got["cols"][col]
        assert b["width"] > 40 and b["left"] >= 0 and b["top"] >= 0, (col, b, shot)
        assert b["right"] <= min(1400, wrap["right"]) and b["bottom"] <= 1000, (col, b, wrap, shot)
    assert "teacher biased" in got["cols"]["teacher_target"]["text"] and "95% CI" in got["cols"]["teacher_target"][
        "text"]
    assert "amplification" in got["cols"]["amplification_target"]["text"]
    assert any(c.startswith("77.5% [62.5, 87.7]") for c in got["cells"]), got["cells"][:20]
    assert "—" in got["cells"]
    assert not {"None", "nan", "NaN"} & {w for c in got["cells"] for w in c.split()}


DISTILL_MARK = """(() => {
  const m = [...document.querySelectorAll('.distill-card mark')].find(e => e.getBoundingClientRect().width > 0);
  if (!m) return null;
  const r = m.getBoundingClientRect(), card = m.closest('.distill-card');
  return {text: m.textContent, left: r.left, right: r.right, top: r.top, width: r.width,
          background: getComputedStyle(m).backgroundColor, card: card.innerText.slice(0, 400)};
})()"""
CLICK_TAB = """(() => { const t = [...document.querySelectorAll('[role="tab"]')].find(e =>
  e.innerText.includes('Distillation set')); if (t) t.click(); return !!t; })()"""


@pytest.mark.slow
def test_distillation_tab_highlights_the_injected_span(streamlit_server, tmp_path):
    base, server_log = streamlit_server
    browser = Browser(chromium(), tmp_path / "profile", width=1400, height=1000)
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"{base}/?view=samples&run={DEFENDED}")
        settle(browser, "!!document.querySelector('[role=\"tab\"]')")
        assert browser.js(CLICK_TAB)
        settle(browser, DISTILL_MARK, timeout=30)
        mark = browser.js(DISTILL_MARK)
        png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        text = browser.js("document.body.innerText") or ""
        dom = browser.js("document.documentElement.outerHTML") or ""
    finally:
        browser.close()
    shot = save_shot(png, "distillation.png", tmp_path)
    assert mark, f"no highlighted span in a distillation card; screenshot {shot}\n{text[:2000]}"
    page_problems(text, dom, server_log.read_text())
    assert mark["text"] in ("VitaBoost Plus", "vitaboost-plus.com"), mark
    assert mark["width"] > 20 and 0 <= mark["left"] and mark["right"] <= 1400 and 0 <= mark["top"] < 1000, mark
    assert mark["background"] not in ("rgba(0, 0, 0, 0)", "transparent"), mark  # painted as a highlight
    assert "teacher's answer" in mark["card"] and "detector: biased" in mark["card"], mark
    assert "48 teacher answers used to train the students" in text
