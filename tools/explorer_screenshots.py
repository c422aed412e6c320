"""Screenshots of the results explorer for the documentation, taken in headless Chromium.

Run by ``make docs-figures`` after the demo has built ``results/explorer/``; the browser test
(tests/test_explorer.py) takes them the same way. Needs Debian's chromium and chromium-driver
(``sudo tools/install_browser.sh``).

    python tools/explorer_screenshots.py [--results results] [--out docs/figures] [--model tf_efficientnet_lite1]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

WIDTH, HEIGHT = 1280, 1400


def open_browser():
    """A headless Chromium WebDriver (Debian's binaries) that keeps the pages' console messages."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and driver):
        raise SystemExit("no chromium/chromedriver on PATH: run sudo tools/install_browser.sh")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(driver), options=opts)
    browser.set_page_load_timeout(60)
    return browser


def screenshots(browser, index: Path, out: Path, model: str) -> list[Path]:
    """``explorer_index.png`` (the leaderboard and scatter) and ``explorer_model.png`` (``model``'s page)."""
    from selenium.webdriver.common.by import By

    out.mkdir(parents=True, exist_ok=True)
    browser.get(Path(index).resolve().as_uri())
    shots = [out / "explorer_index.png", out / "explorer_model.png"]
    browser.save_screenshot(str(shots[0]))
    box = browser.find_element(By.ID, "search")
    box.clear()
    box.send_keys(model)
    browser.find_element(By.CSS_SELECTOR, "#leaderboard tbody tr a").click()
    browser.save_screenshot(str(shots[1]))
    return shots


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--out", default="docs/figures")
    ap.add_argument("--model", default="tf_efficientnet_lite1")
    a = ap.parse_args(argv)
    index = Path(a.results) / "explorer" / "index.html"
    if not index.exists():
        print(f"{index}: not built (make demo builds it)", file=sys.stderr)
        return 1
    browser = open_browser()
    try:
        for p in screenshots(browser, index, Path(a.out), a.model):
            print(p)
    finally:
        browser.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
