"""The web page in headless Chromium: a photo upload, and the live mode fed by a fake camera.

Needs Debian's chromium at /usr/bin/chromium (CI installs it); Playwright drives it, with no browser
download of its own.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from conftest import MASKED_JPG
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect, sync_playwright
from webserver import Server, running_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"no Chromium at {CHROMIUM}: apt-get install -y chromium")

# Reads an overlay canvas: its size, the share of pixels painted, and the RGBA at points given in the
# picture's pixels (the canvas has the resolution it is shown at, not the picture's).
CANVAS_PROBE = """(canvas, [points, pictureWidth]) => {
  const ctx = canvas.getContext("2d");
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
  const k = canvas.width / pictureWidth;
  const at = ([x, y]) => Array.from(ctx.getImageData(Math.round(x * k), Math.round(y * k), 1, 1).data);
  return {width: canvas.width, height: canvas.height, painted: painted / (data.length / 4),
          points: points.map(at)};
}"""


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with running_server("--workers", "2") as running:
        yield running


@pytest.fixture(scope="module")
def camera_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Y4M video of the masked test photo, letterboxed to 640x480, for Chromium's fake camera."""
    photo = cv2.imread(str(MASKED_JPG))
    scale = min(640 / photo.shape[1], 480 / photo.shape[0])
    width, height = round(photo.shape[1] * scale) // 2 * 2, round(photo.shape[0] * scale) // 2 * 2
    frame = np.full((480, 640, 3), 40, np.uint8)
    left, top = (640 - width) // 2, (480 - height) // 2
    frame[top:top + height, left:left + width] = cv2.resize(photo, (width, height),
                                                             interpolation=cv2.INTER_AREA)
    planes = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes()
    path = tmp_path_factory.mktemp("camera") / "masked.y4m"
    path.write_bytes(b"YUV4MPEG2 W640 H480 F10:1 Ip A1:1 C420jpeg\n" + (b"FRAME\n" + planes) * 2)
    return path


@pytest.fixture(scope="module")
def browser(camera_file: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            *CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera_file}",
        ])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    """A fresh page whose every request must stay on the server and whose console must stay clean."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.grant_permissions(["camera"], origin=server.url)
    tab = context.new_page()
    requests: list[str] = []
    problems: list[str] = []
    tab.on("request", lambda request: requests.append(request.url))
    tab.on("console", lambda message: _note_console(message, problems))
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    yield tab
    context.close()
    own = (f"{server.url}/", f"blob:{server.url}/")  # blob: previews of the photos picked
    assert [url for url in requests if not url.startswith(own)] == [], "the page must work offline"
    assert problems == []


def _note_console(message: ConsoleMessage, problems: list[str]) -> None:
    if message.type == "error":
        problems.append(f"console: {message.text}")


def test_upload_shows_labels_and_draws_boxes(page: Page, server: Server, tmp_path: Path) -> None:
    page.goto(f"{server.url}/")
    expect(page).to_have_title("maskwatch · who wears a mask")
    expect(page.locator("#server-status")).to_have_text("Server ready · 2 workers")
    page.get_by_label("Choose photos").set_input_files(str(MASKED_JPG))  # found by its accessible label
    card = page.locator(".result.done")
    card.wait_for(timeout=60_000)
    expect(card.locator("h2")).to_have_text(MASKED_JPG.name)
    expect(card.locator(".summary")).to_have_text("1 face · 1 with a mask · 0 without")
    expect(card.locator(".faces li")).to_have_count(1)
    expect(card.locator(".badge")).to_have_text("Mask")
    expect(page.locator("#photos-status")).to_have_text("Done: 1 photo analysed.")

    truth = httpx.post(f"{server.url}/v1/detect", content=MASKED_JPG.read_bytes(), timeout=60).json()
    x1, y1, x2, y2 = truth["faces"][0]["box"]
    edge, centre = [x1, (y1 + y2) / 2], [(x1 + x2) / 2, (y1 + y2) / 2]
    probe = card.locator("canvas").evaluate(CANVAS_PROBE, [[edge, centre], truth["width"]])
    assert probe["width"] / probe["height"] == pytest.approx(truth["width"] / truth["height"], rel=0.01)
    assert 0.005 < probe["painted"] < 0.2, "a box and its label are drawn, and little else"
    red, green, blue, alpha = probe["points"][0]
    # A green box edge (drawn antialiased: a line at a fractional position is not quite opaque).
    assert alpha >= 200 and green > red + 40 and green > blue + 20, probe["points"][0]
    assert probe["points"][1][3] == 0, "the face itself stays visible through the overlay"

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_live_camera_counts_masked_faces(page: Page, server: Server) -> None:
    detect_url = f"{server.url}/v1/detect"
    flight = {"now": 0, "max": 0, "sent": 0}

    def started(request: Request) -> None:
        if request.url == detect_url:
            flight["now"] += 1
            flight["sent"] += 1
            flight["max"] = max(flight["max"], flight["now"])

    def ended(request: Request) -> None:
        if request.url == detect_url:
            flight["now"] -= 1

    page.on("request", started)
    page.on("requestfinished", ended)
    page.on("requestfailed", ended)
    page.goto(f"{server.url}/")
    page.get_by_role("tab", name="Live camera").click()
    expect(page.locator("#panel-live")).to_be_visible()
    expect(page.locator("#panel-photos")).to_be_hidden()
    page.get_by_role("button", name="Start camera").click()
    begin = time.monotonic()
    # at least three answered frames, however slow the machine
    expect(page.locator("#count-faces")).to_have_text(re.compile(r"^([3-9]|\d{2,})$"), timeout=90_000)

    # Both counters read in one script turn: a frame answered between two reads would move one of them.
    faces, masked = page.evaluate(
        "() => ['#count-faces', '#count-masked'].map(s => document.querySelector(s).textContent)")
    assert int(faces) >= 3 and masked == faces
    expect(page.locator("#compliance")).to_have_text("100%")
    expect(page.locator("#frame-summary")).to_have_text("1 of 1 masked")
    assert page.locator("#video-overlay").evaluate(CANVAS_PROBE, [[], 1])["painted"] > 0.005
    page.get_by_role("button", name="Stop camera").click()
    elapsed = time.monotonic() - begin
    expect(page.get_by_role("button", name="Start camera")).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#live-status")).to_have_text("Camera off.")
    assert flight["max"] == 1, "one frame in flight at a time"
    assert flight["sent"] <= 2 * elapsed + 3, flight  # no faster than the chosen rate

    page.get_by_role("button", name="Reset counter").click()
    expect(page.locator("#compliance")).to_have_text("–")
    expect(page.locator("#count-faces")).to_have_text("0")


def test_camera_stopped_while_starting_gives_its_stream_back(page: Page, server: Server) -> None:
    page.goto(f"{server.url}/")
    page.evaluate("""() => {
      window.__streams = [];
      const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
      navigator.mediaDevices.getUserMedia = async (constraints) => {
        const stream = await original(constraints);
        window.__streams.push(stream);
        return stream;
      };
    }""")
    page.get_by_role("tab", name="Live camera").click()
    # Start, then leave the tab before the camera answered (as while the permission prompt is open).
    page.evaluate("""() => { document.getElementById("camera-toggle").click();
                            document.getElementById("tab-photos").click(); }""")
    page.wait_for_function("""() => window.__streams.length === 1 &&
        window.__streams[0].getTracks().every((track) => track.readyState === "ended")""", timeout=30_000)
    page.get_by_role("tab", name="Live camera").click()
    page.get_by_role("button", name="Start camera").click()
    expect(page.get_by_role("button", name="Stop camera")).to_have_attribute("aria-pressed", "true")
    live = page.evaluate("""() => window.__streams.filter(
        (stream) => stream.getTracks().some((track) => track.readyState === "live")).length""")
    assert live == 1
    page.get_by_role("button", name="Stop camera").click()
    page.wait_for_function("""() => window.__streams.every(
        (stream) => stream.getTracks().every((track) => track.readyState === "ended"))""", timeout=30_000)


def test_api_docs_name_this_server(page: Page, server: Server) -> None:
    """The /docs page lists the operations of /openapi.json and its curl lines name the server they came from."""
    page.goto(f"{server.url}/docs")
    expect(page.locator("#docs-status")).to_contain_text("maskwatch")
    expect(page.locator("#operations")).to_contain_text("/v1/detect")
    quick_start = page.locator(".docs-intro pre").inner_text()
    assert f"{server.url}/v1/detect" in quick_start
    assert "127.0.0.1:8000" not in quick_start or server.url.endswith(":8000")


def test_a_two_class_server_shows_how_sure_it_is_of_its_own_label(browser: Browser, tmp_path: Path) -> None:
    """A face whose mask is below the nose is 'no mask' on a --two-class server: 80% sure (1 - P(with_mask)),
    not the 10% that P(without_mask) alone would say."""
    from fixed_classifier import write_fixed_classifier

    model = write_fixed_classifier(tmp_path / "under_nose.onnx",
                                   {"incorrect_mask": 0.7, "with_mask": 0.2, "without_mask": 0.1})
    with running_server("--two-class", "--classifier", str(model)) as two_class:
        tab = browser.new_page()
        try:
            tab.goto(f"{two_class.url}/")
            expect(tab.locator("#server-status")).to_contain_text("Server ready")
            tab.get_by_label("Choose photos").set_input_files(str(MASKED_JPG))
            card = tab.locator(".result.done")
            card.wait_for(timeout=60_000)
            first = card.locator(".faces li").first
            expect(first.locator(".badge")).to_have_text("No mask")
            expect(first.locator(".detail")).to_contain_text("Face 1: 80% sure")
        finally:
            tab.close()
