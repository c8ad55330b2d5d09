"""The Snakemake report a person reads: the smoke grid (every family, 1 seed; run once per session), its
`snakemake --report`, and the page opened in headless Chromium and clicked through as a reader would: the comparison matrix is the first
category and its page shows one row per family of the grid, as rendered text; every table and figure has a caption
of its own. Chromium (Debian package `chromium`) is driven over the DevTools protocol on a pipe, so no browser
driver or websocket library is needed; without Chromium the browser tests are skipped with that reason.

DGMBENCH_REPORT_SCREENSHOTS=<dir> saves what the browser showed (the matrix, a table, a figure) as PNGs there."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import SMOKE, snakemake

from dgmbench.tables import html_page

MODELS = ["arm", "vae"]  # an exact and a bound family of the smoke grid: two rows that differ in every column
RESULTS = yaml.safe_load(SMOKE.read_text())["results_dir"]  # results/smoke
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")
slow = pytest.mark.slow  # the tests on the grid run the pipeline: about a minute on 2 idle cores, many under load


@pytest.fixture(scope="module")
def grid_run(smoke_run) -> Path:
    """The smoke grid's run (conftest: every family, one seed, made once per session) and its report beside it."""
    proc = snakemake(smoke_run, "--configfile", str(SMOKE), "--report", "report.html", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Missing metadata" not in proc.stderr + proc.stdout
    return smoke_run


class Browser:
    """Headless Chromium on the DevTools protocol over a pipe (--remote-debugging-pipe: it reads commands on fd 3
    and writes replies and events on fd 4, each one JSON message ended by a NUL byte), with one page open."""

    def __init__(self, profile: Path):
        cmd_read, self.cmd = os.pipe()
        self.out, out_write = os.pipe()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-features=IsolateOrigins,site-per-process",  # the report's frames in the page's process
                 f"--user-data-dir={profile}", "--window-size=1600,1000", "--remote-debugging-pipe"]
        # bash puts the pipe ends on fds 3 and 4, whatever numbers they have here (dash reads one digit only).
        self.proc = subprocess.Popen(["bash", "-c", f'exec "$0" "$@" 3<&{cmd_read} 4>&{out_write}', CHROMIUM, *flags],
                                     pass_fds=(cmd_read, out_write), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(cmd_read)
        os.close(out_write)
        self.buffer, self.last_id, self.session = b"", 0, None
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Page.enable")

    def send(self, method: str, timeout: float = 120, **params) -> dict:
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self.cmd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:  # events arrive between replies; only the reply matters here
            while b"\0" not in self.buffer:
                if not select.select([self.out], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    raise TimeoutError(f"Chromium did not answer {method} in {timeout} s")
                chunk = os.read(self.out, 1 << 20)
                if not chunk:
                    raise EOFError(f"Chromium exited (status {self.proc.poll()})")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def js(self, expression: str, context: int | None = None):
        args = {"contextId": context} if context is not None else {}
        reply = self.send("Runtime.evaluate", expression=expression, returnByValue=True, **args)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60, context: int | None = None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.js(expression, context)
            except RuntimeError:  # e.g. a frame still loading
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"still false after {timeout} s: {expression}")

    def open(self, url: str, ready: str) -> object:
        """Load ``url`` afresh and wait until the JavaScript expression ``ready`` is truthy there; returns its value."""
        self.js("window.replaced = true")  # the old page answers until the new one is in
        self.send("Page.navigate", url=url)
        return self.wait_for(f"!window.replaced && document.readyState === 'complete' && ({ready})")

    def frame_context(self) -> int:
        """A JavaScript context in the page's one frame (the report shows a result's HTML in an iframe)."""
        def frame():
            children = self.send("Page.getFrameTree")["frameTree"].get("childFrames", [])
            return children[0]["frame"]["id"] if children else None
        deadline = time.monotonic() + 60
        while (frame_id := frame()) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert frame_id, "the report opened no frame for the result"
        return self.send("Page.createIsolatedWorld", frameId=frame_id, worldName="test")["executionContextId"]

    def screenshot(self, name: str) -> None:
        where = os.environ.get("DGMBENCH_REPORT_SCREENSHOTS")
        if where:
            Path(where).mkdir(parents=True, exist_ok=True)
            (Path(where) / f"{name}.png").write_bytes(base64.b64decode(self.send("Page.captureScreenshot")["data"]))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (TimeoutError, EOFError, RuntimeError):
            self.proc.kill()
        self.proc.wait(timeout=30)
        os.close(self.cmd)
        os.close(self.out)


# The reader's clicks, on the report's own elements: a menu entry or link by its text, a result's buttons by the
# label in its row ("eye" shows the result, "information-circle" its caption and details).
REPORT_SHOWN = "typeof app !== 'undefined' && document.querySelector('#app').innerText.includes('RESULTS')"
CLICK_TEXT = """(text => { const el = [...document.querySelectorAll('#app a, #app span')]
    .find(e => e.textContent.trim() === text); if (!el) return false; (el.closest('a') || el).click(); return true; })"""
CLICK_RESULT = """((label, icon) => { const row = [...document.querySelectorAll('#app tbody tr')]
    .find(r => r.cells[0] && r.cells[0].textContent.trim() === label);
    const button = row && row.querySelector(`a[iconname="${icon}"]`); if (!button) return false; button.click();
    return true; })"""


@pytest.fixture(scope="module")
def browser(grid_run, tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("needs Chromium (Debian: apt-get install chromium)")
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def open_result(browser: Browser, url: str, category: str, label: str) -> str:
    """Open the report afresh, click the category in the menu, show the result labelled ``label`` and its caption;
    returns the caption panel's text."""
    browser.open(url, REPORT_SHOWN)
    assert browser.js(f"{CLICK_TEXT}({json.dumps(category)})"), f"no menu entry {category!r}"
    browser.wait_for(f"{CLICK_RESULT}({json.dumps(label)}, 'eye')")
    browser.wait_for(f"{CLICK_RESULT}({json.dumps(label)}, 'information-circle')")
    return browser.wait_for("document.querySelector('#app').innerText.includes('DESCRIPTION') && "
                            "document.querySelector('#app').innerText")


@slow
@needs_chromium
def test_report_opens_on_the_matrix_with_one_row_per_family(grid_run, browser):
    url = (grid_run / "report.html").as_uri()
    text = browser.open(url, f"{REPORT_SHOWN} && document.querySelector('#app').innerText")
    menu = text.split("RESULTS", 1)[1].split("\n")
    assert [m for m in menu if m.strip()][0] == "Comparison matrix", menu  # the first category a reader sees

    caption = open_result(browser, url, "Comparison matrix", "matrix")
    assert "The comparison matrix" in caption
    frame = browser.frame_context()
    rows = browser.wait_for("document.readyState === 'complete' && document.querySelector('tbody') && "
                            "[...document.querySelectorAll('tr')].map(r => [...r.cells].map(c => c.innerText.trim()))",
                            context=frame)
    header, body = rows[0], rows[1:]
    shown = sorted((r[header.index("family")], r[header.index("model")]) for r in body)
    runs = [json.loads(p.read_text()) for p in grid_run.glob(f"{RESULTS}/runs/**/metrics.json")]
    generative = [m["run"] for m in runs if "sampling" in m or m["likelihood"]["type"] != "none"]  # not the encoders
    assert len(generative) >= 7 and len(generative) < len(runs)
    assert shown == sorted((r["family"], r["model"]) for r in generative)  # every matrix family, as rendered text
    browser.screenshot("report_matrix")


@slow
@needs_chromium
def test_every_table_and_figure_has_its_own_caption(grid_run, browser):
    url = (grid_run / "report.html").as_uri()
    browser.open(url, REPORT_SHOWN)
    shown = browser.js("JSON.stringify(Object.fromEntries(Object.entries(results).map(([p, r]) => [p, r.caption])))")
    captions = json.loads(shown)
    tables = sorted(f"{RESULTS}/tables/{p.name}" for p in (grid_run / RESULTS / "tables").glob("*.html"))
    figures = sorted(f"{RESULTS}/figures/{p.name}" for p in (grid_run / RESULTS / "figures").glob("*.png"))
    assert sorted(captions) == sorted(tables + figures)  # every table as HTML, every figure, nothing else
    assert not [p for p, c in captions.items() if "no caption written" in c]
    first_paragraphs = [c.split("</p>", 1)[0] for c in captions.values()]
    assert len(set(first_paragraphs)) == len(captions)  # each its own

    caption = open_result(browser, url, "Tables", "likelihood")
    assert "Test negative log-likelihood" in caption
    text = browser.wait_for("document.body && document.body.innerText", context=browser.frame_context())
    assert all(model in text for model in MODELS) and "per-pixel histogram" in text
    browser.screenshot("report_table")

    caption = open_result(browser, url, "Figures", "samples")
    assert "Samples of every family" in caption
    size = browser.wait_for("(i => i && i.complete && i.naturalWidth > 0 && [i.naturalWidth, i.naturalHeight])"
                            "(document.querySelector('#app img[src^=\"data:image/png\"]'))")
    assert size[0] > size[1] > 0  # the figure decoded: models side by side
    browser.screenshot("report_figure")


@slow
def test_a_checkout_without_run_records_says_so_once(grid_run, tmp_path):
    """A fresh clone has the results but no .snakemake/metadata: one note, not one warning per file."""
    fresh = tmp_path / "fresh"
    shutil.copytree(grid_run, fresh, ignore=shutil.ignore_patterns(".snakemake", "report.html"))
    proc = snakemake(fresh, "--configfile", str(SMOKE), "--report", "report.html", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "Missing metadata" not in log and log.count("No Snakemake run record") == 1, log[-3000:]
    assert (fresh / "report.html").stat().st_size > 0


class CellText(HTMLParser):
    """The text of each table cell (rows of th/td) and of each list item of a page, as a browser would show it."""

    def __init__(self):
        super().__init__()
        self.rows, self.items, self.text = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th", "li"):
            self.text = ""

    def handle_data(self, data):
        if self.text is not None:
            self.text += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self.text)
        elif tag == "li":
            self.items.append(self.text)
        if tag in ("td", "th", "li"):
            self.text = None


def test_html_page_shows_every_cell_and_note_as_written():
    """The page a report shows: the header and every cell as the table holds them (markup in a value is text, not
    HTML), the notes below as list items."""
    df = pd.DataFrame({"model": ["arm", "<b>vae</b>"], "NLL (bits/dim)": ["1.83 ± 0.01", "2 & more"], "seeds": [3, 1]})
    notes = ["bits/dim = nats / (D ln 2)", "a <note> & more"]
    page = CellText()
    page.feed(html_page(df, "likelihood", notes))
    assert page.rows == [list(df.columns), *[[str(v) for v in row] for row in df.itertuples(index=False)]]
    assert page.items == notes
    empty = CellText()
    empty.feed(html_page(df.iloc[:0], "likelihood"))
    assert empty.rows == [] and empty.items == []
