"""report.html in a real browser: headless Chromium (Debian package) loads the page offline and, through the
DevTools protocol, we read what it rendered: Table 1's rows and cells, and every figure decoded and laid out."""

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from medrl.report import build_report
from tests.support.report_study import full_arms

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: make system-packages")

PROBE = """JSON.stringify({
  ready: document.readyState,
  table1: [...document.querySelectorAll('table.table1 tr')].map(r => [...r.cells].map(c => c.innerText.trim())),
  tables: document.querySelectorAll('table').length,
  images: [...document.images].map(i => ({done: i.complete, w: i.naturalWidth, h: i.naturalHeight,
                                          shown: Math.round(i.getBoundingClientRect().width)}))
})"""


class Browser:
    """Chromium with the DevTools protocol on a free loopback port; one page, driven over a websocket."""

    def __init__(self, profile: Path):
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                 "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", "--remote-allow-origins=*",
                 "--window-size=1200,900", "about:blank"]  # fmt: skip
        self.proc = subprocess.Popen([CHROMIUM, *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("Chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            page = next(t for t in json.load(resp) if t["type"] == "page")
        import websocket

        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg["result"]

    def open(self, path: Path) -> dict:
        self.call("Page.navigate", url=path.as_uri())
        deadline = time.monotonic() + 30
        while True:
            state = json.loads(self.call("Runtime.evaluate", expression=PROBE, returnByValue=True)["result"]["value"])
            if state["ready"] == "complete" or time.monotonic() > deadline:
                return state
            time.sleep(0.1)

    def close(self):
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def test_table_and_figures_render(browser, tmp_path):
    build_report("medrl study", full_arms(), tmp_path, baseline="zero-shot")
    shutil.rmtree(tmp_path / "figures")  # the page must not need the files beside it
    state = browser.open(tmp_path / "report.html")
    assert state["table1"][0][:3] == ["Model", "Fine-tuning data", "Accuracy ↑"]
    assert [row[0] for row in state["table1"][1:]] == ["Base", "GRPO"]
    assert state["table1"][2] == ["GRPO", "2,048", "62.50", "0.40 (± 0.11) †", "n/a", "7.00 (± 1.00) *†",
                                  "39.50 (± 11.50)"]  # fmt: skip
    assert state["tables"] == 5  # Table 1, the comparisons, Findings, provenance, definitions
    assert len(state["images"]) == 5
    for image in state["images"]:
        assert image["done"] and image["w"] > 300 and image["h"] > 200 and image["shown"] > 300


def test_a_broken_figure_is_caught(browser, tmp_path):
    """The check above can fail: a figure whose data is damaged does not decode."""
    build_report("medrl study", full_arms(), tmp_path, baseline="zero-shot")
    page = tmp_path / "report.html"
    page.write_text(page.read_text().replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1))
    images = browser.open(page)["images"]
    assert images[0]["w"] == 0 and all(i["w"] > 0 for i in images[1:])
