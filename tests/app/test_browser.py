"""One real-browser smoke test: the dashboard served by ``streamlit run``, driven by Chromium.

The path a researcher takes: train a small JR model on the embedded MNIST subset while its curves
update, open it on the Cells page next to the plain zoo model and draw a cross section, play the
film of the zoo pair's cells through training, measure a small robustness curve, then look at the
Models and Jacobian pages. It needs Debian's Chromium
(``apt-get install -y chromium``) and the Python package playwright (no browser download).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
BUDGET_S = 180.0

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="Debian's Chromium is not installed at /usr/bin/chromium "
                              "(apt-get install -y chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200 and r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"streamlit did not become healthy in {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture()
def server(snapshot_zoo: Path, tmp_path: Path) -> Iterator[str]:
    """``streamlit run app/main.py`` on a free port, with the tmp zoo (lenet-none and lenet-jr with
    per-epoch snapshots) and runs folders."""
    port = _free_port()
    log = tmp_path / "streamlit.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GIT_PYTHON_REFRESH": "quiet",
           "JACREG_MODELS_DIR": str(snapshot_zoo), "JACREG_RUNS_DIR": os.environ["JACREG_RUNS_DIR"]}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue


def test_train_open_on_cells_robustness_models_jacobian(server: str, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    t0 = time.monotonic()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    timings: dict[str, float] = {}

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            _journey(page, server, shots, timings, t0)
        except BaseException:
            page.screenshot(path=str(shots / "failure.png"))
            print(f"\nfailure screenshot: {shots / 'failure.png'}")
            raise
        finally:
            browser.close()

    elapsed = time.monotonic() - t0
    print(f"\nbrowser smoke test: {elapsed:.1f} s (cumulative: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + f"); screenshots in {shots}")
    assert elapsed < BUDGET_S


def _journey(page, server: str, shots: Path, timings: dict[str, float], t0: float) -> None:
    """Train -> Cells -> the film -> Robustness -> Models -> Jacobian, as a user clicks through them."""
    main = page.get_by_test_id("stMain")

    def heading(name: str) -> None:
        main.get_by_role("heading", name=name).first.wait_for()

    def go(nav_label: str, title: str) -> None:
        page.get_by_test_id("stSidebarNav").get_by_text(nav_label, exact=True).click()
        heading(title)

    def number(label: str, value: str) -> None:
        # the live element: while the page reruns, Streamlit keeps the previous run's elements (stale)
        fresh = main.locator('[data-testid="stElementContainer"][data-stale="false"]')
        box = fresh.get_by_role("spinbutton", name=label, exact=True)
        box.fill(value)
        box.press("Tab")

    def choose(select_label: str, option: str) -> None:
        main.get_by_test_id("stSelectbox").filter(has_text=select_label).click()
        page.get_by_role("option", name=option, exact=True).click()

    def no_exception(where: str) -> None:
        assert page.get_by_test_id("stException").count() == 0, f"exception on the {where} page"

    page.goto(server)
    heading("jacreg")
    no_exception("home")

    # Train a small JR model and watch it.
    go("Train", "Train")
    choose("Preset", "Jacobian (JR)")
    number("Epochs", "2")
    number("Batch size", "50")
    number("Test samples per epoch", "50")
    main.get_by_text("Advanced", exact=True).click()
    number("Batches per epoch (0 = all)", "4")
    choose("Device", "cpu")
    main.get_by_role("button", name="Start training").click()
    main.get_by_test_id("stProgress").wait_for()          # the poller shows progress
    main.get_by_text("Finished 2 epoch(s)").wait_for(timeout=90_000)
    curves = main.get_by_test_id("stPlotlyChart").first
    curves.wait_for()                                       # its curves
    no_exception("train")
    timings["train"] = time.monotonic() - t0
    curves.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "train.png"))

    # Open it on the Cells page, next to the plain zoo model.
    main.get_by_role("button", name="Open on Cells").click()
    heading("Decision cells")
    picker = page.get_by_test_id("stSidebar").get_by_test_id("stMultiSelect").locator("input")
    picker.click()
    picker.fill("lenet-none")
    page.get_by_role("option", name="lenet-none (zoo)").click()
    page.keyboard.press("Escape")
    page.get_by_test_id("stSidebar").get_by_text("lenet-none (zoo)").wait_for()  # both selected
    number("Test sample index (0..999)", "3")                   # a new cross section
    main.get_by_text("#3: label").wait_for()
    main.get_by_test_id("stPlotlyChart").first.wait_for(timeout=60_000)
    main.get_by_text("model evaluations for the maps").wait_for()
    no_exception("cells")
    timings["cells"] = time.monotonic() - t0
    page.screenshot(path=str(shots / "cells.png"))

    # The film of the zoo pair through training, from a shared link: press play, reach the last epoch.
    page.goto(f"{server}/cells?models=zoo:lenet-none,zoo:lenet-jr&sample=2&extent=3&res=41")
    heading("Cells through training")
    main.get_by_role("button", name="Make the film").click()
    main.get_by_text("Radii (CSV)").wait_for(timeout=90_000)
    current = "() => Array.from(document.querySelectorAll('.slider-label')).map(t => t.textContent)"
    page.wait_for_function(current + ".includes('epoch 1')")
    play = main.get_by_text("▶ Play", exact=True)
    play.scroll_into_view_if_needed()
    play.click()
    page.wait_for_function(current + ".includes('epoch 3')", timeout=30_000)   # it played to the end
    no_exception("cells (film)")
    timings["film"] = time.monotonic() - t0
    page.screenshot(path=str(shots / "film.png"))

    # A small FGSM curve for both.
    go("Robustness", "Robustness")
    attacks = main.get_by_test_id("stMultiSelect").filter(has_text="Attacks")
    attacks.locator("input").click()
    for _ in range(6):  # remove the default attacks
        page.keyboard.press("Backspace")
    page.get_by_role("option", name="FGSM (L-inf)", exact=True).click()
    page.keyboard.press("Escape")
    text = main.get_by_role("textbox", name="L-inf epsilons", exact=True)
    text.fill("0,0.1,0.2")
    text.press("Enter")
    number("Samples (first N of the test set)", "30")
    main.get_by_text("Gradient-masking check").click()  # off: one attack only
    main.get_by_role("button", name="Run", exact=True).click()
    main.get_by_role("heading", name="Results").wait_for(timeout=60_000)
    main.get_by_test_id("stPlotlyChart").first.wait_for()
    no_exception("robustness")
    timings["robustness"] = time.monotonic() - t0
    page.screenshot(path=str(shots / "robustness.png"))

    go("Models", "Models")
    main.get_by_test_id("stDataFrame").first.wait_for()
    no_exception("models")

    go("Jacobian", "Jacobian")
    number("Test samples", "40")
    number("Draws per n_proj", "3")
    number("Single samples to estimate", "2")
    number("Timing batch size", "20")
    number("Timed steps", "1")
    main.get_by_role("button", name="Compute", exact=True).click()
    main.get_by_text("Estimator cost on this device").wait_for(timeout=60_000)
    no_exception("jacobian")

    # The cell radius the Jacobian predicts against the measured one: the scatter renders.
    number("Samples", "2")
    main.get_by_role("button", name="Compute the scatter").click()
    main.get_by_text("Spearman ρ", exact=False).first.wait_for(timeout=60_000)
    no_exception("jacobian (scatter)")
    timings["jacobian"] = time.monotonic() - t0
    main.get_by_text("Spearman ρ", exact=False).first.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "jacobian.png"))
