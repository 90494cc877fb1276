"""Make docs/page.png: the web page after uploading examples/astronaut.jpg (public domain, NASA).

    python docs/make_screenshot.py      # needs the web extra, playwright and /usr/bin/chromium
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from webserver import running_server  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> int:
    with running_server() as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 760})
        page.goto(f"{server.url}/")
        page.get_by_label("Choose photos").set_input_files(str(ROOT / "examples" / "astronaut.jpg"))
        page.locator(".result.done").wait_for(timeout=60_000)
        page.screenshot(path=str(ROOT / "docs" / "page.png"), full_page=True)
        browser.close()
    print("wrote docs/page.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
