"""Debian's Chromium under Playwright, for the tests that look at pages as a person would.

One launcher for every browser test: the same executable, flags and failure message everywhere.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (Playwright's sync API), closed on exit; Debian's package is
    installed by scripts/chromium.sh when missing (the suite's runner starts it first anyway)."""
    if not Path(CHROMIUM).exists():
        subprocess.run([str(ROOT / "scripts" / "chromium.sh"), "start"], check=True)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
