"""The explorer in a real browser: `sfhkit app` (Voila) on localhost, Debian's chromium driven by
Playwright.  Every request that is not to the local server is answered with an empty response,
so the test never touches the network (Voila's template links fonts from a CDN).

Artifacts (screenshot, slider latency JSON) go to $SFHKIT_TEST_ARTIFACTS (default
test-artifacts/).  Without chromium or Playwright the test is skipped, unless
SFHKIT_REQUIRE_BROWSER=1 (set by .ci/run), where that is a failure."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("SFHKIT_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# Bokeh keeps one document per figure widget; find a data source by name in any of them.
READ_SOURCE = """([name, column]) => {
    if (!window.Bokeh) return null;
    for (const doc of Bokeh.documents) {
        const model = doc.get_model_by_name(name);
        if (model) return Array.from(model.data[column] || []);
    }
    return null;
}"""


# In-page timing: the time of the last key press, and every change of a named source's data.
WATCH_SOURCE = """([name]) => {
    window.__sfhkit_keydown = -1;
    window.__sfhkit_changes = [];
    document.addEventListener("keydown", () => { window.__sfhkit_keydown = performance.now(); }, true);
    for (const doc of Bokeh.documents) {
        const model = doc.get_model_by_name(name);
        if (model) {
            model.properties.data.change.connect(() => window.__sfhkit_changes.push(performance.now()));
            return true;
        }
    }
    return false;
}"""
LAST_LATENCY = """() => {
    const after = window.__sfhkit_changes.filter(t => t > window.__sfhkit_keydown);
    return after.length ? after[0] - window.__sfhkit_keydown : null;
}"""


def _unavailable(reason):
    if os.environ.get("SFHKIT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser test required but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    port = _free_port()
    out = tmp_path_factory.mktemp("app_out")
    log = open(out / "voila.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "sfhkit.cli", "app", "--port", str(port), "--out", str(out)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the app did not start: {(out / 'voila.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    # Terminating `sfhkit app` stops Voila too: nothing answers on the port afterwards.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
        except OSError:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"Voila still answers at {url} after `sfhkit app` was terminated")


def _wait_for(page, name, column, predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        values = page.evaluate(READ_SOURCE, [name, column])
        if values is not None and predicate(values):
            return values
        page.wait_for_timeout(50)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_explorer_in_chromium(app_url):
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright's Python package is not installed")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 2600})
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(app_url)
                   else route.fulfill(status=200, body=""))
        page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
        page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
        try:
            page.goto(app_url, timeout=120_000)
            load = page.get_by_role("button", name="Load")
            load.wait_for(timeout=120_000)
            load.click()                                       # the default: test-set galaxy 2122
            model = _wait_for(page, "model_spectrum", "y", lambda y: len(y) > 1000, 300, "the model spectrum")

            # move the A_V slider with the keyboard, one step (0.01 mag) at a time; the latency of each
            # step is timed inside the page: key press -> new data in the model spectrum's source
            assert page.evaluate(WATCH_SOURCE, ["model_spectrum"])
            slider = page.locator(".widget-slider", has_text="A_V [mag]").locator(".noUi-handle")
            slider.click()
            latencies_ms = []
            for _ in range(12):
                before = model
                page.keyboard.press("ArrowRight")
                model = _wait_for(page, "model_spectrum", "y", lambda y: not np.allclose(y, before), 30,
                                  "the spectrum to follow the slider")
                latency = page.evaluate(LAST_LATENCY)
                assert latency is not None
                latencies_ms.append(latency)
                page.wait_for_timeout(300)                     # a user's pace, not a key held down
            assert page.locator(".widget-slider", has_text="A_V [mag]").locator(".widget-readout").inner_text() != "0.20"

            # sample with small settings typed into the panel, and wait for the posterior figures
            for label, value in (("draws", "24"), ("keep best", "20"), ("steps", "100")):
                field = page.locator(".widget-inline-hbox", has_text=label).locator("input").first
                field.fill(value)
                field.press("Enter")
            page.get_by_role("button", name="Start").click()
            bands = _wait_for(page, "posterior_sfh_bands", "median", lambda y: len(y) == 128, 600,
                              "the posterior SFH bands")
            assert np.all(np.isfinite(bands))
            _wait_for(page, "zoom_model", "median", lambda y: len(y) > 10, 60, "the zoom panel's model")
            page.screenshot(path=str(ARTIFACTS / "explorer.png"), full_page=True)
        finally:
            browser.close()
    report = {"a_v_slider_latency_ms": {"median": float(np.median(latencies_ms)), "max": float(np.max(latencies_ms)),
                                        "all": [round(x, 1) for x in latencies_ms]},
              "what": "key press on the A_V slider -> new data in the model spectrum's bokeh source, timed in the "
                      "page (performance.now), kernel round trip included"}
    (ARTIFACTS / "browser_latency.json").write_text(json.dumps(report, indent=1))
    assert not problems, problems
